//! Turning a command's outcome into a sysexits status and a message on stderr.

use std::process::ExitCode;

use mailgate::Sysexit;

/// An error with the exit status it deserves. Commands attach one with [`fail`]; any other error
/// exits 70 (software error) unless a library error in its chain says otherwise.
#[derive(Debug)]
pub struct Exit {
    pub status: Sysexit,
    pub error: anyhow::Error,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl std::error::Error for Exit {}

/// Wraps an error with an explicit exit status.
pub fn fail(status: Sysexit, error: impl Into<anyhow::Error>) -> anyhow::Error {
    anyhow::Error::new(Exit {
        status,
        error: error.into(),
    })
}

/// The status for an error: an explicit [`Exit`], else the first library error in the chain
/// that knows its status, else 70.
pub fn status_of(err: &anyhow::Error) -> Sysexit {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<Exit>() {
            return e.status;
        }
        if let Some(s) = mailgate::sysexits::status_of_error(cause) {
            return s;
        }
    }
    Sysexit::Software
}

/// Prints the error (with its diagnosis, when the library has one) and returns the exit code.
pub fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let status = status_of(&err);
            eprintln!("mailgate: {err:#}");
            if let Some(d) = err.chain().find_map(mailgate::diagnose::of_error) {
                eprintln!("\n{d}");
            }
            ExitCode::from(status.code() as u8)
        }
    }
}
