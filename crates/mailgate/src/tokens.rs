//! Token storage (OS keyring or a 0600 file) and handing out valid access tokens.
