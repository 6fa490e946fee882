//! The reply lines of each provider, word for word where they are known (see
//! `shared/reference/microsoft365-smtp-oauth2.md`). Multi-line replies contain inner CRLFs; the
//! final CRLF is added when sending.

use std::net::IpAddr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::Rng;
use time::format_description::well_known::Rfc2822;
use time::macros::format_description;
use time::OffsetDateTime;

use crate::Mode;

/// Exchange Online advertises 150 MiB, then enforces the per-mailbox limit after DATA.
const MICROSOFT_SIZE: u64 = 157_286_400;
const GMAIL_SIZE: u64 = 35_882_577;

/// Builds the replies of one connection.
pub(super) struct Replies {
    mode: Mode,
    hostname: String,
    /// Gmail's per-session id (`a640c23a62f3a-...sm123.45`), repeated at the end of its replies.
    gmail_id: String,
}

impl Replies {
    pub fn new(mode: Mode, hostname: &str) -> Replies {
        Replies {
            mode,
            hostname: hostname.to_string(),
            gmail_id: gmail_id(),
        }
    }

    fn gmail(&self) -> bool {
        self.mode == Mode::Gmail
    }

    /// A Microsoft line, or the Gmail line with the session id and ` - gsmtp` appended.
    fn pick(&self, microsoft: String, gmail: &str) -> String {
        if self.gmail() {
            format!("{gmail} {} - gsmtp", self.gmail_id)
        } else {
            microsoft
        }
    }

    pub fn banner(&self) -> String {
        if self.gmail() {
            format!("220 {} ESMTP {} - gsmtp", self.hostname, self.gmail_id)
        } else {
            let now = OffsetDateTime::now_utc()
                .format(&Rfc2822)
                .expect("the current time formats as RFC 2822");
            format!(
                "220 {} Microsoft ESMTP MAIL Service ready at {now}",
                self.hostname
            )
        }
    }

    pub fn ehlo(&self, peer: IpAddr, tls: bool) -> String {
        let lines: Vec<String> = if self.gmail() {
            let mut l = vec![
                format!("{} at your service, [{peer}]", self.hostname),
                format!("SIZE {GMAIL_SIZE}"),
                "8BITMIME".into(),
            ];
            if tls {
                l.push("AUTH LOGIN PLAIN XOAUTH2 PLAIN-CLIENTTOKEN OAUTHBEARER XOAUTH".into());
            } else {
                l.push("STARTTLS".into());
            }
            l.extend(
                ["ENHANCEDSTATUSCODES", "PIPELINING", "CHUNKING", "SMTPUTF8"].map(String::from),
            );
            l
        } else {
            let mut l = vec![
                format!("{} Hello [{peer}]", self.hostname),
                format!("SIZE {MICROSOFT_SIZE}"),
                "PIPELINING".into(),
                "DSN".into(),
                "ENHANCEDSTATUSCODES".into(),
            ];
            if tls {
                l.push("AUTH LOGIN XOAUTH2".into());
            } else {
                l.push("STARTTLS".into());
            }
            l.extend(["8BITMIME", "BINARYMIME", "CHUNKING", "SMTPUTF8"].map(String::from));
            l
        };
        let last = lines.len() - 1;
        lines
            .iter()
            .enumerate()
            .map(|(i, l)| format!("250{}{l}", if i == last { ' ' } else { '-' }))
            .collect::<Vec<_>>()
            .join("\r\n")
    }

    pub fn helo(&self, peer: IpAddr) -> String {
        if self.gmail() {
            format!("250 {} at your service", self.hostname)
        } else {
            format!("250 {} Hello [{peer}]", self.hostname)
        }
    }

    pub fn starttls_ready(&self) -> String {
        if self.gmail() {
            "220 2.0.0 Ready to start TLS".into()
        } else {
            "220 2.0.0 SMTP server ready".into()
        }
    }

    pub fn tls_already_active(&self) -> String {
        self.pick(
            "503 5.5.2 TLS already active".into(),
            "503 5.5.1 TLS already active.",
        )
    }

    pub fn send_hello_first(&self) -> String {
        self.pick(
            "503 5.5.2 Send hello first".into(),
            "503 5.5.1 EHLO/HELO first.",
        )
    }

    pub fn auth_success(&self) -> String {
        if self.gmail() {
            "235 2.7.0 Accepted".into()
        } else {
            "235 2.7.0 Authentication successful".into()
        }
    }

    /// Exchange's 535 5.7.3, with the server, time and a diagnostic id in brackets.
    pub fn auth_rejected(&self) -> String {
        let ts = OffsetDateTime::now_utc()
            .format(format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
            ))
            .expect("the current time formats");
        let diag: u64 = rand::rng().random();
        format!(
            "535 5.7.3 Authentication unsuccessful [{} {ts} {diag:016X}]",
            self.hostname
        )
    }

    pub fn smtp_auth_disabled(&self, for_tenant: bool) -> String {
        format!(
            "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the \
             {}. Visit https://aka.ms/smtp_auth_disabled for more information.",
            if for_tenant { "Tenant" } else { "Mailbox" }
        )
    }

    /// Microsoft lists two replies for basic auth; `535 5.7.139 ... basic authentication is
    /// disabled.` is the one tenants get since basic auth was switched off by default (the
    /// `550 5.7.30` variant came from the earlier client-submission pilot), so it is used here.
    pub fn basic_auth_disabled(&self) -> String {
        "535 5.7.139 Authentication unsuccessful, basic authentication is disabled.".into()
    }

    pub fn mechanism_unsupported(&self) -> String {
        self.pick(
            "504 5.7.4 Unrecognized authentication type".into(),
            "504 5.7.4 Unrecognized authentication type.",
        )
    }

    /// AUTH before STARTTLS: Exchange does not offer AUTH at all; Gmail says why.
    pub fn auth_needs_tls(&self) -> String {
        self.pick(
            "504 5.7.4 Unrecognized authentication type".into(),
            "530 5.7.0 Must issue a STARTTLS command first.",
        )
    }

    pub fn auth_cancelled(&self) -> String {
        self.pick(
            "501 5.0.0 Authentication cancelled".into(),
            "501 5.0.0 Authentication cancelled.",
        )
    }

    pub fn cannot_decode(&self) -> String {
        self.pick(
            "501 5.5.2 Cannot Decode response".into(),
            "501 5.5.2 Cannot Decode response.",
        )
    }

    pub fn already_authenticated(&self) -> String {
        self.pick(
            "503 5.5.2 Already authenticated".into(),
            "503 5.5.1 Already authenticated.",
        )
    }

    /// Gmail's error challenge for a rejected OAuth token.
    pub fn gmail_challenge(&self) -> String {
        let json = r#"{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}"#;
        format!("334 {}", STANDARD.encode(json))
    }

    pub fn gmail_bad_credentials(&self) -> String {
        format!(
            "535-5.7.8 Username and Password not accepted. For more information, go to\r\n\
             535 5.7.8  https://support.google.com/mail/?p=BadCredentials {} - gsmtp",
            self.gmail_id
        )
    }

    pub fn not_authenticated(&self) -> String {
        if self.gmail() {
            format!(
                "530-5.7.0 Authentication Required. For more information, go to\r\n\
                 530 5.7.0  https://support.google.com/mail/?p=WantAuthError {} - gsmtp",
                self.gmail_id
            )
        } else {
            format!(
                "530 5.7.57 Client not authenticated to send mail. [{}]",
                self.hostname
            )
        }
    }

    pub fn sender_ok(&self) -> String {
        self.pick("250 2.1.0 Sender OK".into(), "250 2.1.0 OK")
    }

    pub fn recipient_ok(&self) -> String {
        self.pick("250 2.1.5 Recipient OK".into(), "250 2.1.5 OK")
    }

    pub fn sender_already_specified(&self) -> String {
        self.pick(
            "503 5.5.2 Sender already specified".into(),
            "503 5.5.1 Nested MAIL command.",
        )
    }

    pub fn need_mail(&self) -> String {
        self.pick(
            "503 5.5.2 Need mail command".into(),
            "503 5.5.1 MAIL first.",
        )
    }

    pub fn need_rcpt(&self) -> String {
        self.pick(
            "503 5.5.2 Need rcpt command".into(),
            "503 5.5.1 RCPT first.",
        )
    }

    pub fn too_many_recipients(&self) -> String {
        if self.gmail() {
            format!(
                "452-4.5.3 Your message has too many recipients. For more information regarding\r\n\
                 452-4.5.3 Google's sending limits, go to\r\n\
                 452 4.5.3  https://support.google.com/mail/?p=TooManyRecipientsError {} - gsmtp",
                self.gmail_id
            )
        } else {
            "452 4.5.3 Too many recipients".into()
        }
    }

    pub fn size_exceeded(&self) -> String {
        if self.gmail() {
            format!(
                "552-5.3.4 Your message exceeded Google's message size limits. For more information, go to\r\n\
                 552 5.3.4  https://support.google.com/mail/?p=MaxSizeError {} - gsmtp",
                self.gmail_id
            )
        } else {
            "552 5.3.4 Message size exceeds fixed maximum message size".into()
        }
    }

    pub fn thread_limit(&self) -> String {
        self.pick(
            format!(
                "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded [Hostname={}]",
                self.hostname
            ),
            "454 4.7.0 Too many concurrent SMTP connections; please try again later.",
        )
    }

    pub fn start_data(&self) -> String {
        self.pick(
            "354 Start mail input; end with <CRLF>.<CRLF>".into(),
            "354  Go ahead",
        )
    }

    pub fn chunk_received(&self, bytes: usize) -> String {
        self.pick(
            format!("250 2.0.0 {bytes} bytes received"),
            &format!("250 2.0.0 {bytes} bytes received"),
        )
    }

    pub fn send_as_denied(&self, auth_user: &str, from: &str) -> String {
        format!(
            "554 5.2.252 SendAsDenied; {auth_user} not allowed to send as {from}; \
             STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; \
             Failed to process message due to a permanent exception with message \
             [BeginDiagnosticData]Cannot submit message. 0.35250:0E003D84, 1.36674:0A000000, \
             1.61250:00000000, 1.45378:02000000, 1.44866:CA000000, 1.36674:0A000000, \
             1.61250:00000000, 1.45378:B9000000, 1.44866:F2010000, 16.55847:8F0A0000...\
             [EndDiagnosticData] [Hostname={}]",
            self.hostname
        )
    }

    pub fn quota_exceeded(&self) -> String {
        if self.gmail() {
            format!(
                "550-5.4.5 Daily user sending limit exceeded. For more information on Gmail\r\n\
                 550-5.4.5 sending limits go to\r\n\
                 550 5.4.5  https://support.google.com/a/answer/166852 {} - gsmtp",
                self.gmail_id
            )
        } else {
            format!(
                "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; \
                 Failed to process message due to a permanent exception with message \
                 [BeginDiagnosticData]Cannot submit message.[EndDiagnosticData] [Hostname={}]",
                self.hostname
            )
        }
    }

    /// The final 250 for an accepted message with id `id`.
    pub fn queued(&self, id: &str) -> String {
        if self.gmail() {
            let ts = OffsetDateTime::now_utc().unix_timestamp();
            format!("250 2.0.0 OK  {ts} {id} - gsmtp")
        } else {
            format!("250 2.0.0 OK <{id}> [Hostname={}]", self.hostname)
        }
    }

    /// The storage failed (a full disk under the mail directory).
    pub fn local_error(&self) -> String {
        self.pick(
            "451 4.3.0 Mail server temporarily rejected message".into(),
            "451 4.3.0 Mail server temporarily rejected message.",
        )
    }

    pub fn reset(&self) -> String {
        self.pick("250 2.0.0 Resetting".into(), "250 2.1.5 Flushed")
    }

    pub fn noop(&self) -> String {
        self.pick("250 2.0.0 OK".into(), "250 2.0.0 OK")
    }

    pub fn quit(&self) -> String {
        self.pick(
            "221 2.0.0 Service closing transmission channel".into(),
            "221 2.0.0 closing connection",
        )
    }

    pub fn unrecognized(&self) -> String {
        self.pick(
            "500 5.3.3 Unrecognized command".into(),
            "502 5.5.1 Unrecognized command.",
        )
    }

    pub fn syntax_error(&self) -> String {
        self.pick(
            "501 5.5.4 Invalid arguments".into(),
            "555 5.5.2 Syntax error.",
        )
    }

    pub fn unsupported_parameter(&self) -> String {
        self.pick(
            "555 5.5.4 Unsupported parameter".into(),
            "555 5.5.2 Syntax error.",
        )
    }

    pub fn invalid_address(&self, recipient: bool) -> String {
        if recipient {
            self.pick(
                "501 5.1.3 Invalid address".into(),
                "553 5.1.3 Invalid address.",
            )
        } else {
            self.pick(
                "501 5.1.7 Invalid address".into(),
                "553 5.1.7 Invalid address.",
            )
        }
    }

    pub fn line_too_long(&self) -> String {
        self.pick("500 5.5.6 Line too long".into(), "500 5.5.2 Line too long.")
    }

    pub fn timeout(&self) -> String {
        if self.gmail() {
            format!("421 4.4.2 {} Error: timeout exceeded", self.hostname)
        } else {
            "421 4.4.1 Connection timed out".into()
        }
    }

    pub fn shutting_down(&self) -> String {
        self.pick(
            "421 4.3.2 Service not available, closing transmission channel".into(),
            "421 4.7.0 Try again later, closing connection.",
        )
    }

    /// A fresh Gmail-style id for an accepted message.
    pub fn new_gmail_message_id(&self) -> String {
        gmail_id()
    }
}

/// An id shaped like Gmail's (`5b1f17b1804b1-42f7b1a3d9bsm12345678f8f.3`).
fn gmail_id() -> String {
    let mut rng = rand::rng();
    let hex = |rng: &mut rand::rngs::ThreadRng, n: usize| -> String {
        (0..n)
            .map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap_or('0'))
            .collect()
    };
    let a = hex(&mut rng, 13);
    let b = hex(&mut rng, 11);
    let c: u32 = rng.random_range(1_000_000..100_000_000);
    let d = hex(&mut rng, 3);
    let n: u8 = rng.random_range(1..100);
    format!("{a}-{b}sm{c}{d}.{n}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gmail_replies_end_with_the_session_id() {
        let r = Replies::new(Mode::Gmail, "smtp.gmail.com");
        assert!(r.banner().starts_with("220 smtp.gmail.com ESMTP "));
        assert!(r.banner().ends_with(" - gsmtp"));
        let id = r.banner().split(' ').nth(3).unwrap().to_string();
        assert!(r.need_mail().ends_with(&format!("{id} - gsmtp")));
        assert!(id.contains("sm"), "{id}");
    }

    #[test]
    fn auth_rejected_carries_host_time_and_id() {
        let r = Replies::new(Mode::Microsoft, "HOST.example");
        let line = r.auth_rejected();
        let inner = line.split('[').nth(1).unwrap().trim_end_matches(']');
        let parts: Vec<&str> = inner.split(' ').collect();
        assert_eq!(parts[0], "HOST.example");
        assert!(
            parts[1].ends_with('Z') && parts[1].len() == 24,
            "{}",
            parts[1]
        );
        assert_eq!(parts[2].len(), 16);
        assert!(parts[2]
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase()));
    }
}
