//! Diagnoses of SMTP replies.
