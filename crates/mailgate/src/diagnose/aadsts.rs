//! Diagnoses of identity platform (Entra ID / Google) errors.
