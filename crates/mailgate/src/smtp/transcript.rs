//! The record of an SMTP session, for `--debug` and `mailgate demo`: every line each side sent,
//! with the token in `AUTH` replaced by `[redacted]` and message data summarised.

use std::fmt;
use std::sync::{Arc, Mutex};

/// Who sent a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The client (mailgate).
    Client,
    /// The server.
    Server,
    /// A note from mailgate about the session (TLS established, message data sent...).
    Note,
}

/// One line of the transcript.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TranscriptLine {
    pub direction: Direction,
    pub text: String,
}

impl fmt::Display for TranscriptLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.direction {
            Direction::Client => "C:",
            Direction::Server => "S:",
            Direction::Note => "  ",
        };
        write!(f, "{tag} {}", self.text)
    }
}

/// A session transcript. Cloning shares it: the client appends while the caller keeps a handle.
/// Every line is also logged with `tracing::debug!` (target `mailgate::smtp`).
#[derive(Clone, Debug, Default)]
pub struct Transcript {
    lines: Arc<Mutex<Vec<TranscriptLine>>>,
}

/// Lines kept at most; a batch of thousands of messages would otherwise grow without end.
const MAX_LINES: usize = 20_000;

impl Transcript {
    /// An empty transcript.
    pub fn new() -> Transcript {
        Transcript::default()
    }

    /// Records a line the client sent. `AUTH` commands are redacted here, whatever the caller
    /// passed, so that no token can reach the transcript or the log.
    pub fn client(&self, line: &str) {
        self.push(Direction::Client, redact_client_line(line));
    }

    /// Records a line the server sent.
    pub fn server(&self, line: &str) {
        self.push(
            Direction::Server,
            line.trim_end_matches(['\r', '\n']).to_owned(),
        );
    }

    /// Records a note.
    pub fn note(&self, text: impl Into<String>) {
        self.push(Direction::Note, text.into());
    }

    fn push(&self, direction: Direction, text: String) {
        let line = TranscriptLine { direction, text };
        tracing::debug!(target: "mailgate::smtp", "{line}");
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        if lines.len() < MAX_LINES {
            lines.push(line);
        }
    }

    /// A copy of the lines so far.
    pub fn lines(&self) -> Vec<TranscriptLine> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Forgets the lines so far (between messages of a long batch).
    pub fn clear(&self) {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

impl fmt::Display for Transcript {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in self.lines() {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

/// `AUTH XOAUTH2 <base64>` becomes `AUTH XOAUTH2 [redacted]`; other lines pass unchanged.
pub fn redact_client_line(line: &str) -> String {
    let line = line.trim_end_matches(['\r', '\n']);
    let mut words = line.splitn(3, ' ');
    match (words.next(), words.next(), words.next()) {
        (Some(verb), Some(mech), Some(_)) if verb.eq_ignore_ascii_case("AUTH") => {
            format!("{verb} {mech} [redacted]")
        }
        _ => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_payloads_never_appear() {
        let t = Transcript::new();
        t.client("AUTH XOAUTH2 dXNlcj1hbGljZQFhdXRoPUJlYXJlciBzZWNyZXQBAQ==\r\n");
        t.client("auth oauthbearer bixhPWFsaWNlLA==");
        t.client("MAIL FROM:<a@b>");
        t.server("250 2.1.0 Sender OK\r\n");
        let text = t.to_string();
        assert!(text.contains("C: AUTH XOAUTH2 [redacted]"));
        assert!(text.contains("C: auth oauthbearer [redacted]"));
        assert!(!text.contains("dXNlcj1"));
        assert!(!text.contains("bixhPW"));
        assert!(text.contains("S: 250 2.1.0 Sender OK\n"));
        assert_eq!(t.lines().len(), 4);
    }
}
