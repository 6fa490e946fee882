//! Building and checking messages.
//!
//! Two ways in: a [`Draft`] (what `mailgate send` and library callers fill in: addresses,
//! subject, text and HTML bodies, attachments) built with `mail-builder`; or a raw message as
//! `sendmail` receives it on stdin, prepared by [`prepare_raw`] (headers read with
//! `mail-parser`, recipients taken from To/Cc/Bcc with `-t`, Bcc removed, Date, Message-ID and
//! From added when missing). Both give an [`OutgoingMessage`]: the bytes to send and the
//! envelope.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::smtp::Envelope;
use crate::sysexits::HasSysexit;
use crate::Sysexit;

/// Why a message could not be built or prepared.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// A header value contains a line break: it could add headers of its own.
    #[error("the {field} value contains a line break (CR or LF); refusing it, as it could inject headers")]
    HeaderInjection { field: String },
    /// An address could not be read.
    #[error("invalid address in {field}: {value:?} ({reason})")]
    InvalidAddress {
        field: String,
        value: String,
        reason: String,
    },
    /// There is nobody to send to.
    #[error("no recipients: give at least one address (with -t, in To, Cc or Bcc)")]
    NoRecipients,
    /// An attachment or body file could not be read.
    #[error("cannot read {}: {error}", path.display())]
    ReadFile {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The input is not a message.
    #[error("the message cannot be read: {reason}")]
    Malformed { reason: String },
    /// Writing the MIME structure failed.
    #[error("cannot build the message: {0}")]
    Build(std::io::Error),
}

impl HasSysexit for MessageError {
    fn sysexit(&self) -> Sysexit {
        match self {
            MessageError::HeaderInjection { .. }
            | MessageError::InvalidAddress { .. }
            | MessageError::Malformed { .. } => Sysexit::DataErr,
            MessageError::NoRecipients => Sysexit::Usage,
            MessageError::ReadFile { .. } => Sysexit::NoInput,
            MessageError::Build(_) => Sysexit::Software,
        }
    }
}

/// An address with an optional display name: `Alice Larsen <alice@contoso.com>`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mailbox {
    pub name: Option<String>,
    pub email: String,
}

impl Mailbox {
    /// An address without a display name.
    pub fn new(email: impl Into<String>) -> Mailbox {
        Mailbox {
            name: None,
            email: email.into(),
        }
    }

    /// An address with a display name (an empty name is none).
    pub fn with_name(name: impl Into<String>, email: impl Into<String>) -> Mailbox {
        Mailbox {
            name: Some(name.into()).filter(|n: &String| !n.is_empty()),
            email: email.into(),
        }
    }

    /// Reads one address (`a@b`, `Name <a@b>`, `"Last, First" <a@b>`). `field` names the
    /// header or option in errors.
    pub fn parse(value: &str, field: &str) -> Result<Mailbox, MessageError> {
        let mut list = Mailbox::parse_list(value, field)?;
        match list.len() {
            1 => Ok(list.remove(0)),
            _ => Err(MessageError::InvalidAddress {
                field: field.into(),
                value: value.into(),
                reason: "expected exactly one address".into(),
            }),
        }
    }

    /// Reads a comma-separated list of addresses. Line breaks are refused (header injection).
    pub fn parse_list(value: &str, field: &str) -> Result<Vec<Mailbox>, MessageError> {
        if value.contains(['\r', '\n']) {
            return Err(MessageError::HeaderInjection {
                field: field.into(),
            });
        }
        let list = parse_address_header(value);
        let invalid = |reason: &str| MessageError::InvalidAddress {
            field: field.into(),
            value: value.into(),
            reason: reason.into(),
        };
        if list.is_empty() {
            return Err(invalid("no address found"));
        }
        for m in &list {
            check_email(&m.email).map_err(invalid)?;
        }
        Ok(list)
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "{n} <{}>", self.email),
            None => f.write_str(&self.email),
        }
    }
}

fn check_email(email: &str) -> Result<(), &'static str> {
    let Some((local, domain)) = email.rsplit_once('@') else {
        return Err("an address needs a local part and a domain (user@example.com)");
    };
    if local.is_empty()
        || domain.is_empty()
        || !domain.contains('.') && !domain.eq_ignore_ascii_case("localhost")
    {
        return Err("an address needs a local part and a domain (user@example.com)");
    }
    if email
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '<' || c == '>')
    {
        return Err("it contains spaces, control characters or angle brackets");
    }
    Ok(())
}

/// Reads the addresses of an address header value with `mail-parser` (groups flattened,
/// encoded words decoded). Entries without an address are skipped.
fn parse_address_header(value: &str) -> Vec<Mailbox> {
    let raw = format!("To: {value}\r\n\r\n");
    let Some(msg) = mail_parser::MessageParser::default().parse(raw.as_bytes()) else {
        return Vec::new();
    };
    let Some(addr) = msg.to() else {
        return Vec::new();
    };
    addr.iter()
        .filter_map(|a| {
            let email = a.address.as_ref()?.trim().to_string();
            if email.is_empty() {
                return None;
            }
            Some(Mailbox {
                name: a
                    .name
                    .as_ref()
                    .map(|n| n.trim().to_string())
                    .filter(|n| !n.is_empty()),
                email,
            })
        })
        .collect()
}

/// A file attached to a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub filename: String,
    /// The MIME type, e.g. `application/pdf`.
    pub content_type: String,
    pub data: Vec<u8>,
}

impl Attachment {
    /// An attachment from memory.
    pub fn new(
        filename: impl Into<String>,
        content_type: impl Into<String>,
        data: Vec<u8>,
    ) -> Attachment {
        Attachment {
            filename: filename.into(),
            content_type: content_type.into(),
            data,
        }
    }

    /// Reads a file; its MIME type is guessed from the extension.
    pub fn from_path(path: &Path) -> Result<Attachment, MessageError> {
        let data = std::fs::read(path).map_err(|error| MessageError::ReadFile {
            path: path.to_owned(),
            error,
        })?;
        let filename = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "attachment".into());
        Ok(Attachment {
            content_type: guess_content_type(&filename),
            filename,
            data,
        })
    }
}

/// The MIME type for a file name, from its extension (`application/octet-stream` if unknown).
pub fn guess_content_type(filename: &str) -> String {
    mime_guess::from_path(filename)
        .first()
        .map(|m| m.essence_str().to_string())
        .unwrap_or_else(|| "application/octet-stream".into())
}

/// A message to build: what `mailgate send` fills in from its options.
#[derive(Clone, Debug, Default)]
pub struct Draft {
    pub from: Option<Mailbox>,
    pub to: Vec<Mailbox>,
    pub cc: Vec<Mailbox>,
    /// Bcc recipients get the message but never appear in it.
    pub bcc: Vec<Mailbox>,
    pub reply_to: Vec<Mailbox>,
    pub subject: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
    pub attachments: Vec<Attachment>,
    /// Extra headers (name, value), e.g. `X-Mailer`.
    pub headers: Vec<(String, String)>,
}

/// A message ready to send: its bytes and its envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingMessage {
    pub envelope: Envelope,
    /// The message as it goes on the wire (before dot-stuffing), CRLF line endings.
    pub data: Vec<u8>,
    /// The Message-ID, without angle brackets.
    pub message_id: String,
}

/// A fresh Message-ID (without angle brackets) in the sender's domain.
pub fn new_message_id(from: &str) -> String {
    let domain = from
        .rsplit_once('@')
        .map(|(_, d)| d)
        .filter(|d| !d.is_empty() && d.is_ascii())
        .unwrap_or("mailgate.invalid");
    format!("{}@{domain}", uuid::Uuid::new_v4().simple())
}

impl Draft {
    /// Builds the message. `from` must be set; the envelope sender is its address and the
    /// recipients are To, Cc and Bcc (Bcc is left out of the headers).
    pub fn build(&self) -> Result<OutgoingMessage, MessageError> {
        let from = self
            .from
            .as_ref()
            .ok_or_else(|| MessageError::InvalidAddress {
                field: "From".into(),
                value: String::new(),
                reason: "no sender: give --from or set `from` in the account".into(),
            })?;
        let check = |field: &str, value: &str| -> Result<(), MessageError> {
            if value.contains(['\r', '\n']) {
                Err(MessageError::HeaderInjection {
                    field: field.into(),
                })
            } else {
                Ok(())
            }
        };
        for (field, list) in [
            ("From", std::slice::from_ref(from)),
            ("To", &self.to),
            ("Cc", &self.cc),
            ("Bcc", &self.bcc),
            ("Reply-To", &self.reply_to),
        ] {
            for m in list {
                check(field, &m.email)?;
                check(field, m.name.as_deref().unwrap_or(""))?;
                check_email(&m.email).map_err(|reason| MessageError::InvalidAddress {
                    field: field.into(),
                    value: m.email.clone(),
                    reason: reason.into(),
                })?;
            }
        }
        if let Some(s) = &self.subject {
            check("Subject", s)?;
        }
        for (name, value) in &self.headers {
            check("header name", name)?;
            check(name, value)?;
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                return Err(MessageError::Malformed {
                    reason: format!("{name:?} is not a valid header name"),
                });
            }
        }
        for a in &self.attachments {
            check("attachment file name", &a.filename)?;
            check("attachment content type", &a.content_type)?;
        }
        let rcpt: Vec<String> = self
            .to
            .iter()
            .chain(&self.cc)
            .chain(&self.bcc)
            .map(|m| m.email.clone())
            .collect();
        if rcpt.is_empty() {
            return Err(MessageError::NoRecipients);
        }

        use mail_builder::headers::address::Address;
        let addr = |m: &Mailbox| -> Address<'static> {
            Address::new_address(m.name.clone(), m.email.clone())
        };
        let list =
            |v: &[Mailbox]| -> Address<'static> { Address::new_list(v.iter().map(addr).collect()) };
        let message_id = new_message_id(&from.email);
        let mut b = mail_builder::MessageBuilder::new()
            .from(addr(from))
            .message_id(message_id.as_str())
            .date(mail_builder::headers::date::Date::now());
        if !self.to.is_empty() {
            b = b.to(list(&self.to));
        }
        if !self.cc.is_empty() {
            b = b.cc(list(&self.cc));
        }
        if !self.reply_to.is_empty() {
            b = b.reply_to(list(&self.reply_to));
        }
        if let Some(s) = &self.subject {
            b = b.subject(s.as_str());
        }
        for (name, value) in &self.headers {
            b = b.header(
                name.as_str(),
                mail_builder::headers::text::Text::new(value.as_str()),
            );
        }
        match (&self.text, &self.html) {
            (None, None) => b = b.text_body(""),
            (text, html) => {
                if let Some(t) = text {
                    b = b.text_body(t.as_str());
                }
                if let Some(h) = html {
                    b = b.html_body(h.as_str());
                }
            }
        }
        for a in &self.attachments {
            b = b.attachment(
                a.content_type.as_str(),
                a.filename.as_str(),
                a.data.as_slice(),
            );
        }
        let data = b.write_to_vec().map_err(MessageError::Build)?;
        Ok(OutgoingMessage {
            envelope: Envelope {
                mail_from: from.email.clone(),
                rcpt_to: dedup(rcpt),
            },
            data,
            message_id,
        })
    }
}

fn dedup(list: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for a in list {
        if !out.iter().any(|o| o.eq_ignore_ascii_case(&a)) {
            out.push(a);
        }
    }
    out
}

/// How `sendmail` was asked to treat its input.
#[derive(Clone, Debug, Default)]
pub struct RawOptions {
    /// `-t`: take recipients from To, Cc and Bcc (added to those given as arguments).
    pub extract_recipients: bool,
    /// Recipients given as arguments.
    pub recipients: Vec<String>,
    /// `-i` / `-oi`: a line with a single `.` does not end the message.
    pub ignore_dots: bool,
    /// `-f`: the envelope sender. A bare local name (`root`) has no meaning at a provider and is
    /// replaced by `default_from`.
    pub envelope_from: Option<String>,
    /// `-F`: the sender's full name, used when a From header is added.
    pub full_name: Option<String>,
    /// The account's address: the envelope sender, and the From when the message has none.
    pub default_from: Mailbox,
}

/// One header field as it appeared: its name and the raw lines (continuations included).
#[derive(Clone, Debug)]
struct Field {
    name: String,
    raw: Vec<u8>,
}

impl Field {
    /// The unfolded value.
    fn value(&self) -> String {
        let text = String::from_utf8_lossy(&self.raw);
        let value = text.split_once(':').map(|(_, v)| v).unwrap_or("");
        value
            .replace("\r\n", "")
            .replace('\n', "")
            .trim()
            .to_string()
    }
}

/// Splits a message into header fields and body. A first line that is not a header means the
/// input has no headers at all (it is all body), as sendmail treats it.
fn split_message(input: &[u8]) -> (Vec<Field>, &[u8]) {
    let mut fields: Vec<Field> = Vec::new();
    let mut pos = 0;
    // An mbox "From " line at the top is not a header.
    if input.starts_with(b"From ") {
        pos = input
            .iter()
            .position(|b| *b == b'\n')
            .map(|p| p + 1)
            .unwrap_or(input.len());
    }
    while pos < input.len() {
        let end = input[pos..]
            .iter()
            .position(|b| *b == b'\n')
            .map(|p| pos + p + 1)
            .unwrap_or(input.len());
        let line = &input[pos..end];
        if line == b"\n" || line == b"\r\n" {
            return (fields, &input[end..]);
        }
        if matches!(line.first(), Some(b' ') | Some(b'\t')) {
            match fields.last_mut() {
                Some(f) => f.raw.extend_from_slice(line),
                None => return (Vec::new(), input),
            }
        } else {
            let colon = line.iter().position(|b| *b == b':');
            let name = colon.map(|c| &line[..c]);
            match name {
                Some(n) if !n.is_empty() && n.iter().all(|b| b.is_ascii_graphic()) => {
                    fields.push(Field {
                        name: String::from_utf8_lossy(n).into_owned(),
                        raw: line.to_vec(),
                    })
                }
                _ if fields.is_empty() => return (Vec::new(), input),
                // A line that is neither a header nor a continuation ends the headers.
                _ => return (fields, &input[pos..]),
            }
        }
        pos = end;
    }
    (fields, &input[input.len()..])
}

/// The address in a message's From header, if it has one.
pub fn header_from(data: &[u8]) -> Option<String> {
    let (fields, _) = split_message(data);
    let from = fields
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case("From"))?;
    parse_address_header(&from.value())
        .into_iter()
        .map(|m| m.email)
        .find(|e| e.contains('@'))
}

/// Cuts the input at a line holding a single `.` (sendmail's end of input without `-i`).
fn cut_at_dot_line(input: &[u8]) -> &[u8] {
    let mut pos = 0;
    while pos < input.len() {
        let end = input[pos..]
            .iter()
            .position(|b| *b == b'\n')
            .map(|p| pos + p + 1)
            .unwrap_or(input.len());
        let line = &input[pos..end];
        if line == b".\n" || line == b".\r\n" || line == b"." {
            return &input[..pos];
        }
        pos = end;
    }
    input
}

/// Prepares a message received by `sendmail`: reads its headers, works out the recipients,
/// removes Bcc, adds From, Date and Message-ID when missing.
pub fn prepare_raw(input: &[u8], opts: &RawOptions) -> Result<OutgoingMessage, MessageError> {
    let input = if opts.ignore_dots {
        input
    } else {
        cut_at_dot_line(input)
    };
    let (mut fields, body) = split_message(input);
    let is = |f: &Field, n: &str| f.name.eq_ignore_ascii_case(n);

    let mut rcpt: Vec<String> = Vec::new();
    for r in &opts.recipients {
        for m in Mailbox::parse_list(r, "recipient")? {
            rcpt.push(m.email);
        }
    }
    if opts.extract_recipients {
        for f in fields
            .iter()
            .filter(|f| is(f, "To") || is(f, "Cc") || is(f, "Bcc"))
        {
            let value = f.value();
            if value.is_empty() {
                continue;
            }
            let list = parse_address_header(&value);
            if list.is_empty() && value.contains('@') {
                return Err(MessageError::InvalidAddress {
                    field: f.name.clone(),
                    value,
                    reason: "no address could be read".into(),
                });
            }
            for m in list {
                check_email(&m.email).map_err(|reason| MessageError::InvalidAddress {
                    field: f.name.clone(),
                    value: m.email.clone(),
                    reason: reason.into(),
                })?;
                rcpt.push(m.email);
            }
        }
    }
    let rcpt = dedup(rcpt);
    if rcpt.is_empty() {
        return Err(MessageError::NoRecipients);
    }
    // Bcc must never reach the recipients.
    fields.retain(|f| !is(f, "Bcc"));

    let envelope_from = opts
        .envelope_from
        .as_deref()
        .map(str::trim)
        .map(|f| f.trim_start_matches('<').trim_end_matches('>'))
        .filter(|f| f.contains('@'))
        .map(str::to_owned)
        .unwrap_or_else(|| opts.default_from.email.clone());

    let mut added: Vec<String> = Vec::new();
    let from_index = fields.iter().position(|f| is(f, "From"));
    let name = opts
        .full_name
        .clone()
        .or_else(|| opts.default_from.name.clone());
    match from_index {
        None => {
            let m = Mailbox {
                name,
                email: envelope_from.clone(),
            };
            added.push(format!("From: {}", header_mailbox(&m)));
        }
        Some(i) => {
            // `From: root (Cron Daemon)`: a local name the provider cannot accept. Keep the
            // display name, use the account's address.
            let value = fields[i].value();
            let list = parse_address_header(&value);
            if !list.iter().any(|m| m.email.contains('@')) {
                let display = list
                    .first()
                    .and_then(|m| m.name.clone())
                    .or(name)
                    .or_else(|| comment_of(&value));
                let m = Mailbox {
                    name: display,
                    email: envelope_from.clone(),
                };
                fields[i] = Field {
                    name: "From".into(),
                    raw: format!("From: {}\r\n", header_mailbox(&m)).into_bytes(),
                };
            }
        }
    }
    let message_id = match fields.iter().find(|f| is(f, "Message-ID")) {
        Some(f) => f
            .value()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_string(),
        None => {
            let id = new_message_id(&envelope_from);
            added.push(format!("Message-ID: <{id}>"));
            id
        }
    };
    if !fields.iter().any(|f| is(f, "Date")) {
        added.push(format!(
            "Date: {}",
            mail_builder::headers::date::Date::now().to_rfc822()
        ));
    }

    let mut data = Vec::with_capacity(input.len() + 256);
    for f in &fields {
        data.extend_from_slice(&f.raw);
        if !f.raw.ends_with(b"\n") {
            data.extend_from_slice(b"\r\n");
        }
    }
    for h in &added {
        data.extend_from_slice(h.as_bytes());
        data.extend_from_slice(b"\r\n");
    }
    data.extend_from_slice(b"\r\n");
    data.extend_from_slice(body);
    Ok(OutgoingMessage {
        envelope: Envelope {
            mail_from: envelope_from,
            rcpt_to: rcpt,
        },
        data,
        message_id,
    })
}

/// `Name <email>` with the name quoted or RFC 2047-encoded as needed.
fn header_mailbox(m: &Mailbox) -> String {
    let Some(name) = m.name.as_deref().filter(|n| !n.is_empty()) else {
        return m.email.clone();
    };
    let name = if !name.is_ascii() {
        use base64::Engine;
        format!(
            "=?utf-8?b?{}?=",
            base64::engine::general_purpose::STANDARD.encode(name)
        )
    } else if name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || " !#$%&'*+-/=?^_`{|}~".contains(c))
    {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
    };
    format!("{name} <{}>", m.email)
}

/// `root (Cron Daemon)` → `Cron Daemon`.
fn comment_of(value: &str) -> Option<String> {
    let start = value.find('(')?;
    let end = value.rfind(')')?;
    (end > start + 1).then(|| value[start + 1..end].trim().to_string())
}

/// A message as read back (for tests, `mailgate demo` and checks): the headers and bodies
/// decoded by `mail-parser`.
#[derive(Clone, Debug, Default)]
pub struct ParsedMessage {
    pub from: Vec<Mailbox>,
    pub to: Vec<Mailbox>,
    pub cc: Vec<Mailbox>,
    pub bcc: Vec<Mailbox>,
    pub reply_to: Vec<Mailbox>,
    pub subject: Option<String>,
    pub message_id: Option<String>,
    pub date: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
    pub attachments: Vec<Attachment>,
}

/// Reads a message.
pub fn parse(data: &[u8]) -> Option<ParsedMessage> {
    let msg = mail_parser::MessageParser::default().parse(data)?;
    let list = |a: Option<&mail_parser::Address<'_>>| -> Vec<Mailbox> {
        a.map(|a| {
            a.iter()
                .filter_map(|x| {
                    Some(Mailbox {
                        name: x.name.as_ref().map(|n| n.to_string()),
                        email: x.address.as_ref()?.to_string(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
    };
    use mail_parser::MimeHeaders;
    Some(ParsedMessage {
        from: list(msg.from()),
        to: list(msg.to()),
        cc: list(msg.cc()),
        bcc: list(msg.bcc()),
        reply_to: list(msg.reply_to()),
        subject: msg.subject().map(str::to_owned),
        message_id: msg.message_id().map(str::to_owned),
        date: msg.date().map(|d| d.to_rfc822()),
        text: msg.body_text(0).map(|t| t.into_owned()),
        html: msg.body_html(0).map(|t| t.into_owned()),
        attachments: msg
            .attachments()
            .map(|p| Attachment {
                filename: p.attachment_name().unwrap_or("").to_string(),
                content_type: p
                    .content_type()
                    .map(|c| match &c.c_subtype {
                        Some(s) => format!("{}/{}", c.c_type, s),
                        None => c.c_type.to_string(),
                    })
                    .unwrap_or_default(),
                data: p.contents().to_vec(),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Mailbox {
        Mailbox::with_name("Alice Larsen", "alice@contoso.com")
    }

    #[test]
    fn addresses_are_read_and_injection_refused() {
        let l = Mailbox::parse_list(
            "\"Larsen, Alice\" <alice@contoso.com>, bob@contoso.com",
            "To",
        )
        .unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].name.as_deref(), Some("Larsen, Alice"));
        assert_eq!(l[1].email, "bob@contoso.com");
        assert!(matches!(
            Mailbox::parse_list("bob@contoso.com\r\nBcc: eve@evil.example", "To"),
            Err(MessageError::HeaderInjection { .. })
        ));
        assert!(matches!(
            Mailbox::parse("not an address", "To"),
            Err(MessageError::InvalidAddress { .. })
        ));
    }

    #[test]
    fn draft_builds_with_bcc_only_in_the_envelope() {
        let d = Draft {
            from: Some(alice()),
            to: vec![Mailbox::new("bob@contoso.com")],
            bcc: vec![Mailbox::new("carol@fabrikam.com")],
            subject: Some("Grüße aus Köln".into()),
            text: Some("Hälló\n.a dot line\n".into()),
            html: Some("<p>Hälló</p>".into()),
            attachments: vec![Attachment::new(
                "report.pdf",
                guess_content_type("report.pdf"),
                b"%PDF-1.4".to_vec(),
            )],
            ..Draft::default()
        };
        let m = d.build().unwrap();
        assert_eq!(
            m.envelope.rcpt_to,
            vec!["bob@contoso.com", "carol@fabrikam.com"]
        );
        assert_eq!(m.envelope.mail_from, "alice@contoso.com");
        let text = String::from_utf8(m.data.clone()).unwrap();
        assert!(text.is_ascii(), "headers and bodies are encoded");
        assert!(!text.to_ascii_lowercase().contains("bcc"));
        assert!(!text.contains("carol@"));
        assert!(text.contains(&format!("<{}>", m.message_id)));
        assert!(m.message_id.ends_with("@contoso.com"));
        let p = parse(&m.data).unwrap();
        assert_eq!(p.subject.as_deref(), Some("Grüße aus Köln"));
        assert!(p.text.unwrap().contains("Hälló"));
        assert!(p.html.unwrap().contains("<p>Hälló</p>"));
        assert_eq!(p.attachments.len(), 1);
        assert_eq!(p.attachments[0].filename, "report.pdf");
        assert_eq!(p.attachments[0].content_type, "application/pdf");
        assert_eq!(p.attachments[0].data, b"%PDF-1.4");
        assert!(p.date.is_some());
    }

    #[test]
    fn draft_refuses_line_breaks_in_headers() {
        let d = Draft {
            from: Some(alice()),
            to: vec![Mailbox::new("bob@contoso.com")],
            subject: Some("hi\r\nBcc: eve@evil.example".into()),
            ..Draft::default()
        };
        assert!(
            matches!(d.build(), Err(MessageError::HeaderInjection { field }) if field == "Subject")
        );
        let d = Draft {
            from: Some(alice()),
            ..Draft::default()
        };
        assert!(matches!(d.build(), Err(MessageError::NoRecipients)));
    }

    #[test]
    fn raw_with_t_takes_recipients_and_drops_bcc() {
        let input = b"From: root (Cron Daemon)\nTo: bob@contoso.com\nCc: \"Carol\" <carol@fabrikam.com>\nBcc: dave@fabrikam.com,\n  erin@fabrikam.com\nSubject: test\n\nbody\n.\nafter the dot\n";
        let opts = RawOptions {
            extract_recipients: true,
            default_from: alice(),
            ..RawOptions::default()
        };
        let m = prepare_raw(input, &opts).unwrap();
        assert_eq!(
            m.envelope.rcpt_to,
            vec![
                "bob@contoso.com",
                "carol@fabrikam.com",
                "dave@fabrikam.com",
                "erin@fabrikam.com"
            ]
        );
        let text = String::from_utf8(m.data.clone()).unwrap();
        assert!(!text.contains("Bcc") && !text.contains("dave@") && !text.contains("erin@"));
        assert!(
            text.contains("From: Cron Daemon <alice@contoso.com>\r\n"),
            "{text}"
        );
        assert!(text.contains("Message-ID: <"));
        assert!(text.contains("Date: "));
        // Without -i the lone dot ends the message.
        assert!(!text.contains("after the dot"));
        let m = prepare_raw(
            input,
            &RawOptions {
                ignore_dots: true,
                ..opts
            },
        )
        .unwrap();
        assert!(String::from_utf8(m.data).unwrap().contains("after the dot"));
    }

    #[test]
    fn raw_without_headers_or_recipients() {
        let opts = RawOptions {
            recipients: vec!["bob@contoso.com".into()],
            full_name: Some("Backup Job".into()),
            envelope_from: Some("root".into()),
            default_from: Mailbox::new("alice@contoso.com"),
            ..RawOptions::default()
        };
        let m = prepare_raw(b"just a body line\n", &opts).unwrap();
        assert_eq!(m.envelope.mail_from, "alice@contoso.com");
        let text = String::from_utf8(m.data).unwrap();
        assert!(
            text.starts_with("From: Backup Job <alice@contoso.com>\r\n"),
            "{text}"
        );
        assert!(text.ends_with("\r\njust a body line\n"));
        assert!(matches!(
            prepare_raw(b"Subject: x\n\nbody\n", &RawOptions::default()),
            Err(MessageError::NoRecipients)
        ));
    }
}
