//! mailgate: send mail through Microsoft 365, Gmail and any OAuth2 SMTP server.
//!
//! The library does the work; the `mailgate` binary is a thin layer over it. The modules follow
//! the path of a token and of a message:
//!
//! - [`config`]: accounts, provider presets, where files live;
//! - [`oauth`]: the authorization code (PKCE + loopback redirect), device code and client
//!   credentials flows, and refresh;
//! - [`tokens`]: storing tokens (OS keyring or a 0600 file) and handing out a valid access token;
//! - [`smtp`]: the SMTP client (STARTTLS/TLS, XOAUTH2/OAUTHBEARER, per-recipient results);
//! - [`message`]: building and checking messages;
//! - [`diagnose`]: plain-language explanations of provider errors;
//! - [`sysexits`]: exit codes as sendmail tools use them.

pub mod config;
pub mod diagnose;
pub mod message;
pub mod oauth;
pub mod relay;
pub mod rules;
pub mod secret;
pub mod send;
pub mod smtp;
pub mod spool;
pub mod sysexits;
pub mod tokens;

pub use diagnose::Diagnosis;
pub use secret::Secret;
pub use sysexits::Sysexit;
