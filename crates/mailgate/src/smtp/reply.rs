//! SMTP replies: the three-digit code, the RFC 3463 enhanced status code (`5.7.139`) and every
//! line of text, parsed from a multi-line reply.

use std::fmt;

/// An RFC 3463 enhanced status code: `class.subject.detail`, e.g. `5.7.139`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EnhancedCode {
    /// 2 (success), 4 (persistent transient failure) or 5 (permanent failure).
    pub class: u8,
    /// 0..=999: the category (7 = security or policy, 2 = mailbox, 4 = network...).
    pub subject: u16,
    /// 0..=999: the detail within the category.
    pub detail: u16,
}

impl EnhancedCode {
    /// A code from its three parts.
    pub const fn new(class: u8, subject: u16, detail: u16) -> EnhancedCode {
        EnhancedCode {
            class,
            subject,
            detail,
        }
    }

    /// Parses `5.7.139` at the start of `text`; returns the code and the length it took.
    pub fn parse_prefix(text: &str) -> Option<(EnhancedCode, usize)> {
        let bytes = text.as_bytes();
        let class = *bytes.first()?;
        if !matches!(class, b'2' | b'4' | b'5') || bytes.get(1) != Some(&b'.') {
            return None;
        }
        fn digits(bytes: &[u8], start: usize) -> Option<(u16, usize)> {
            let mut end = start;
            while end < bytes.len() && bytes[end].is_ascii_digit() && end - start < 3 {
                end += 1;
            }
            if end == start {
                return None;
            }
            let n = bytes[start..end]
                .iter()
                .fold(0u16, |acc, d| acc * 10 + (d - b'0') as u16);
            Some((n, end))
        }
        let (subject, pos) = digits(bytes, 2)?;
        if bytes.get(pos) != Some(&b'.') {
            return None;
        }
        let (detail, pos) = digits(bytes, pos + 1)?;
        // The code must end at a space or the end of the line, not run into a word or a number.
        if pos < bytes.len() && !bytes[pos].is_ascii_whitespace() {
            return None;
        }
        Some((EnhancedCode::new(class - b'0', subject, detail), pos))
    }
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

impl std::str::FromStr for EnhancedCode {
    type Err = ();

    fn from_str(s: &str) -> Result<EnhancedCode, ()> {
        match EnhancedCode::parse_prefix(s.trim()) {
            Some((code, len)) if len == s.trim().len() => Ok(code),
            _ => Err(()),
        }
    }
}

/// A complete SMTP reply, possibly of several lines (`250-...` then `250 ...`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code.
    pub code: u16,
    /// The enhanced status code of the first line, when the server sent one.
    pub enhanced: Option<EnhancedCode>,
    /// The text of each line, without the code, the separator or the enhanced code.
    pub lines: Vec<String>,
}

impl Reply {
    /// A reply built from its parts (for tests and synthetic replies).
    pub fn new(code: u16, enhanced: Option<EnhancedCode>, text: &str) -> Reply {
        Reply {
            code,
            enhanced,
            lines: text.lines().map(str::to_owned).collect(),
        }
    }

    /// Parses a complete reply from its raw lines (with or without line endings). Returns `None`
    /// when a line does not start with the same three-digit code or the last line is not final.
    pub fn parse(raw: &str) -> Option<Reply> {
        let mut parser = ReplyParser::default();
        let mut reply = None;
        for line in raw.split_inclusive('\n') {
            if reply.is_some() {
                return None;
            }
            reply = parser.push_line(line).ok()?;
        }
        reply
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 3xx: the server waits for more (334 challenge, 354 go ahead).
    pub fn is_intermediate(&self) -> bool {
        (300..400).contains(&self.code)
    }

    /// 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx: do not retry as is.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// All lines of text joined with a space.
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }

    /// The reply as the server sent it (without line endings), e.g.
    /// `535 5.7.3 Authentication unsuccessful [...]`; several lines are joined with `\n`.
    pub fn verbatim(&self) -> String {
        let n = self.lines.len().max(1);
        let mut out = String::new();
        for i in 0..n {
            let sep = if i + 1 == n { ' ' } else { '-' };
            let text = self.lines.get(i).map(String::as_str).unwrap_or("");
            if i > 0 {
                out.push('\n');
            }
            out.push_str(&self.code.to_string());
            out.push(sep);
            if let Some(e) = self.enhanced {
                out.push_str(&e.to_string());
                if !text.is_empty() {
                    out.push(' ');
                }
            }
            out.push_str(text);
        }
        out
    }

    /// The enhanced code, or one made from the reply code's class when the server sent none
    /// (`5.0.0` for a bare `550`).
    pub fn enhanced_or_default(&self) -> EnhancedCode {
        self.enhanced
            .unwrap_or(EnhancedCode::new((self.code / 100) as u8, 0, 0))
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.verbatim().replace('\n', " / "))
    }
}

/// Why a reply could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// The line does not start with three digits and a space or hyphen.
    #[error("the server sent a line that is not an SMTP reply: {line:?}")]
    Malformed { line: String },
    /// A continuation line carried a different code from the first line.
    #[error("the server changed the reply code within a multi-line reply: {line:?}")]
    CodeChanged { line: String },
    /// The reply had more lines or bytes than any real server sends.
    #[error("the server's reply is too long ({lines} lines)")]
    TooLong { lines: usize },
}

/// Collects the lines of one reply. Feed it lines (each ending with `\n`); it returns the reply
/// when the final line (`NNN text`) arrives.
#[derive(Debug, Default)]
pub struct ReplyParser {
    code: Option<u16>,
    enhanced: Option<EnhancedCode>,
    lines: Vec<String>,
}

/// Replies longer than this are refused (EHLO lists have about a dozen lines).
const MAX_REPLY_LINES: usize = 512;

impl ReplyParser {
    /// Adds one line. `Ok(Some(reply))` when it was the last one; the parser is then reset.
    pub fn push_line(&mut self, line: &str) -> Result<Option<Reply>, ReplyError> {
        let line = line.trim_end_matches(['\r', '\n']);
        let bytes = line.as_bytes();
        let malformed = || ReplyError::Malformed {
            line: truncate(line, 200),
        };
        if bytes.len() < 3 || !bytes[..3].iter().all(u8::is_ascii_digit) {
            return Err(malformed());
        }
        let code: u16 = line[..3].parse().map_err(|_| malformed())?;
        let (last, rest) = match bytes.get(3) {
            None => (true, ""),
            Some(b' ') => (true, &line[4..]),
            Some(b'-') => (false, &line[4..]),
            Some(_) => return Err(malformed()),
        };
        match self.code {
            None => self.code = Some(code),
            Some(c) if c != code => {
                let err = ReplyError::CodeChanged {
                    line: truncate(line, 200),
                };
                *self = ReplyParser::default();
                return Err(err);
            }
            Some(_) => {}
        }
        if self.lines.len() >= MAX_REPLY_LINES {
            *self = ReplyParser::default();
            return Err(ReplyError::TooLong {
                lines: MAX_REPLY_LINES,
            });
        }
        // Every line of a reply with enhanced codes repeats the code; keep the first line's and
        // strip it from the text of each line.
        let text = match EnhancedCode::parse_prefix(rest) {
            Some((e, len)) if e.class as u16 == code / 100 => {
                if self.lines.is_empty() {
                    self.enhanced = Some(e);
                }
                rest[len..].trim_start()
            }
            _ => rest,
        };
        self.lines.push(text.to_owned());
        if last {
            let reply = Reply {
                code,
                enhanced: self.enhanced.take(),
                lines: std::mem::take(&mut self.lines),
            };
            self.code = None;
            Ok(Some(reply))
        } else {
            Ok(None)
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_enhanced_codes_with_three_digit_details() {
        let r = Reply::parse(
            "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information.\r\n",
        )
        .unwrap();
        assert_eq!(r.code, 535);
        assert_eq!(r.enhanced, Some(EnhancedCode::new(5, 7, 139)));
        assert_eq!(r.enhanced.unwrap().to_string(), "5.7.139");
        assert!(r
            .text()
            .starts_with("Authentication unsuccessful, SmtpClientAuthentication"));
        assert!(r.is_permanent());

        let r =
            Reply::parse("554 5.2.252 SendAsDenied; a@x not allowed to send as b@y\r\n").unwrap();
        assert_eq!(r.enhanced, Some(EnhancedCode::new(5, 2, 252)));
    }

    #[test]
    fn parses_multiline_replies() {
        let raw = "250-AM0PR02CA0134.outlook.office365.com Hello [212.52.200.46]\r\n250-SIZE 157286400\r\n250-PIPELINING\r\n250 SMTPUTF8\r\n";
        let r = Reply::parse(raw).unwrap();
        assert_eq!(r.code, 250);
        assert_eq!(r.enhanced, None);
        assert_eq!(r.lines.len(), 4);
        assert_eq!(r.lines[1], "SIZE 157286400");
        assert_eq!(r.verbatim().lines().last(), Some("250 SMTPUTF8"));

        let gmail = "535-5.7.8 Username and Password not accepted. For more information, go to\r\n535 5.7.8  https://support.google.com/mail/?p=BadCredentials\r\n";
        let r = Reply::parse(gmail).unwrap();
        assert_eq!(r.enhanced, Some(EnhancedCode::new(5, 7, 8)));
        assert_eq!(
            r.lines[1],
            "https://support.google.com/mail/?p=BadCredentials"
        );
    }

    #[test]
    fn text_that_looks_like_a_version_is_not_an_enhanced_code() {
        let r = Reply::parse("220 2.0.0 SMTP server ready\r\n").unwrap();
        assert_eq!(r.enhanced, Some(EnhancedCode::new(2, 0, 0)));
        // A class that disagrees with the reply code is text, not a code.
        let r = Reply::parse("250 5.0.1 is the version\r\n").unwrap();
        assert_eq!(r.enhanced, None);
        let r = Reply::parse("220 4.2.1a ready\r\n").unwrap();
        assert_eq!(r.enhanced, None);
        let r = Reply::parse("354 Start mail input; end with <CRLF>.<CRLF>\r\n").unwrap();
        assert_eq!(r.enhanced, None);
        assert_eq!(r.text(), "Start mail input; end with <CRLF>.<CRLF>");
        assert_eq!(r.enhanced_or_default().to_string(), "3.0.0");
    }

    #[test]
    fn refuses_garbage_and_changed_codes() {
        let mut p = ReplyParser::default();
        assert!(matches!(
            p.push_line("hello\r\n"),
            Err(ReplyError::Malformed { .. })
        ));
        assert!(p.push_line("250-a\r\n").unwrap().is_none());
        assert!(matches!(
            p.push_line("251 b\r\n"),
            Err(ReplyError::CodeChanged { .. })
        ));
        assert!(p.push_line("250\r\n").unwrap().is_some());
        assert_eq!(
            "5.7.60".parse::<EnhancedCode>(),
            Ok(EnhancedCode::new(5, 7, 60))
        );
        assert!("5.7".parse::<EnhancedCode>().is_err());
    }

    #[test]
    fn verbatim_round_trips() {
        let raw = "535 5.7.3 Authentication unsuccessful [AM0PR02CA0134.eurprd02.prod.outlook.com]";
        assert_eq!(Reply::parse(raw).unwrap().verbatim(), raw);
    }
}
