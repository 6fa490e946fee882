//! Exit codes from BSD's `sysexits.h`, which sendmail-compatible tools (and the scripts and cron
//! jobs that call them) understand: 75 means "try again later", anything else is final.

/// A `sysexits.h` exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Sysexit {
    /// 0: success.
    Ok,
    /// 64: the command was used wrongly.
    Usage,
    /// 65: the input data was wrong (a malformed message, an invalid address).
    DataErr,
    /// 66: an input file does not exist or cannot be read.
    NoInput,
    /// 69: a service is unavailable (a permanent refusal by the server).
    Unavailable,
    /// 70: an internal software error.
    Software,
    /// 73: an output file cannot be created.
    CantCreat,
    /// 74: an I/O error.
    IoErr,
    /// 75: a temporary failure; the caller should retry later.
    TempFail,
    /// 76: the remote system said something impossible in the protocol.
    Protocol,
    /// 77: not permitted: authentication or authorization was refused.
    NoPerm,
    /// 78: the configuration is wrong.
    Config,
}

impl Sysexit {
    /// The numeric exit status.
    pub fn code(self) -> i32 {
        match self {
            Sysexit::Ok => 0,
            Sysexit::Usage => 64,
            Sysexit::DataErr => 65,
            Sysexit::NoInput => 66,
            Sysexit::Unavailable => 69,
            Sysexit::Software => 70,
            Sysexit::CantCreat => 73,
            Sysexit::IoErr => 74,
            Sysexit::TempFail => 75,
            Sysexit::Protocol => 76,
            Sysexit::NoPerm => 77,
            Sysexit::Config => 78,
        }
    }
}

/// An error that knows which exit status it deserves.
pub trait HasSysexit {
    fn sysexit(&self) -> Sysexit;
}

/// The status a library error in an error chain deserves, when it is one of this crate's error
/// types. The CLI walks a chain with this; each module's error type implements [`HasSysexit`].
pub fn status_of_error(err: &(dyn std::error::Error + 'static)) -> Option<Sysexit> {
    // Each module's error type is added here as the module lands.
    if let Some(e) = err.downcast_ref::<crate::oauth::OAuthError>() {
        return Some(e.sysexit());
    }
    if let Some(e) = err.downcast_ref::<crate::config::ConfigError>() {
        return Some(e.sysexit());
    }
    if let Some(e) = err.downcast_ref::<crate::tokens::TokenError>() {
        return Some(e.sysexit());
    }
    if let Some(e) = err.downcast_ref::<crate::smtp::SmtpError>() {
        return Some(e.sysexit());
    }
    if let Some(e) = err.downcast_ref::<crate::send::SendError>() {
        return Some(e.sysexit());
    }
    if let Some(e) = err.downcast_ref::<crate::message::MessageError>() {
        return Some(e.sysexit());
    }
    if let Some(e) = err.downcast_ref::<crate::spool::SpoolError>() {
        return Some(e.sysexit());
    }
    if let Some(e) = err.downcast_ref::<crate::relay::RelayError>() {
        return Some(e.sysexit());
    }
    if let Some(e) = err.downcast_ref::<crate::rules::StateError>() {
        return Some(e.sysexit());
    }
    if let Some(e) = err.downcast_ref::<crate::rules::NotifyError>() {
        return Some(e.sysexit());
    }
    None
}
