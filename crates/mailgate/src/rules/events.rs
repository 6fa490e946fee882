//! A scan's results turned into mail: On Success lists the files with sizes and destinations, On
//! Error lists each failure with the OS error, On No Files says since when nothing arrived.
//!
//! Every subject and body is a [`Template`] with `{rule} {count} {files} {bytes} {errors}
//! {source} {destination} {time} {host} {action} {since} {after}`; the defaults below are good
//! enough that `mail = { to = ["ops@contoso.com"] }` is a complete event.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Local};

use super::config::{MailAction, NoFilesAction, RuleConfig};
use super::template::{Template, Var};

/// At most this many bytes of files are attached to one On Success mail: Microsoft 365 refuses
/// messages over 35 MB by default, and base64 makes attachments a third bigger.
pub const ATTACH_LIMIT: u64 = 20_000_000;

/// The default subject and body for `on_success`, `on_error` or `on_no_files`.
pub fn default_templates(event: &str) -> (&'static str, &'static str) {
    match event {
        "on_success" => (
            "mailgate {rule}: {count} file(s) {action}",
            "Rule {rule} on {host} {action} {count} file(s), {bytes}, at {time}.\n\
             \n\
             From: {source}\n\
             To:   {destination}\n\
             \n\
             {files}\n",
        ),
        "on_error" => (
            "mailgate {rule}: {count} file(s) failed",
            "Rule {rule} on {host} could not transfer {count} file(s) at {time}.\n\
             \n\
             {errors}\n\
             \n\
             Source:      {source}\n\
             Destination: {destination}\n\
             \n\
             A file that failed stays where it is and is tried again at the next scan; the other \
             files were transferred as usual.\n",
        ),
        _ => (
            "mailgate {rule}: no files for {after}",
            "Rule {rule} on {host} has taken no file from {source} since {since} ({after}).\n\
             \n\
             Check that whatever delivers files to {source} is still running.\n",
        ),
    }
}

/// Which event a mail is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Success,
    Error,
    NoFiles,
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EventKind::Success => "On Success",
            EventKind::Error => "On Error",
            EventKind::NoFiles => "On No Files",
        })
    }
}

/// A file a scan transferred.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Transferred {
    /// Where it was taken from.
    pub source: PathBuf,
    /// Where it is now (its final name, after a conflict rename).
    pub destination: PathBuf,
    pub size: u64,
}

/// A file (or folder) a scan could not transfer.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Failure {
    pub path: PathBuf,
    /// What was being done and what the OS said, e.g. `cannot read it: Permission denied (os
    /// error 13)`.
    pub error: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.error)
    }
}

/// An event mail, ready to be built into a message and sent through `account`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventMail {
    pub rule: String,
    pub kind: EventKind,
    pub account: String,
    pub from: Option<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub subject: String,
    pub body: String,
    /// Files to attach (On Success with `attach_files`), within [`ATTACH_LIMIT`].
    pub attachments: Vec<PathBuf>,
}

/// What every template of one scan can say.
pub struct EventContext<'a> {
    pub rule: &'a RuleConfig,
    /// When the scan ran.
    pub time: DateTime<Local>,
    pub host: String,
    /// The destination folder of this scan.
    pub destination: PathBuf,
}

impl EventContext<'_> {
    fn value(
        &self,
        v: Var,
        count: usize,
        files: &str,
        bytes: u64,
        errors: &str,
        extra: &NoFilesInfo,
    ) -> String {
        match v {
            Var::Rule => self.rule.name.clone(),
            Var::Count => count.to_string(),
            Var::Files => files.to_string(),
            Var::Bytes => human_bytes(bytes),
            Var::Errors => errors.to_string(),
            Var::Source => self.rule.source.display().to_string(),
            Var::Destination => self.destination.display().to_string(),
            Var::Time => format_time(&self.time),
            Var::Host => self.host.clone(),
            Var::Action => self.rule.action.past().to_string(),
            Var::Since => extra.since.map(|s| format_time(&s)).unwrap_or_default(),
            Var::After => extra.after.map(format_duration).unwrap_or_default(),
            _ => String::new(),
        }
    }

    fn mail(
        &self,
        kind: EventKind,
        action: &MailAction,
        subject: String,
        body: String,
    ) -> EventMail {
        EventMail {
            rule: self.rule.name.clone(),
            kind,
            account: action.account.clone(),
            from: action.from.clone(),
            to: action.to.clone(),
            cc: action.cc.clone(),
            subject,
            body,
            attachments: Vec::new(),
        }
    }
}

#[derive(Default)]
struct NoFilesInfo {
    since: Option<DateTime<Local>>,
    after: Option<Duration>,
}

fn render(t: &Template, f: impl FnMut(Var) -> String) -> String {
    t.render(f)
}

/// The On Success mail for `files`. With `attach_files`, the files are attached while they fit in
/// [`ATTACH_LIMIT`]; the body names the ones left out.
pub fn success_mail(
    cx: &EventContext<'_>,
    action: &MailAction,
    files: &[Transferred],
) -> EventMail {
    let bytes: u64 = files.iter().map(|f| f.size).sum();
    let list = file_list(files);
    let none = NoFilesInfo::default();
    let subject = render(&action.subject, |v| {
        cx.value(v, files.len(), &list, bytes, "", &none)
    });
    let mut body = render(&action.body, |v| {
        cx.value(v, files.len(), &list, bytes, "", &none)
    });
    let mut mail = cx.mail(
        EventKind::Success,
        action,
        one_line(&subject),
        String::new(),
    );
    if action.attach_files {
        let mut total = 0u64;
        let mut left_out = Vec::new();
        for f in files {
            if total + f.size <= ATTACH_LIMIT {
                total += f.size;
                mail.attachments.push(f.destination.clone());
            } else {
                left_out.push(file_name(&f.destination));
            }
        }
        if !left_out.is_empty() {
            body.push_str(&format!(
                "\nNot attached (attachments are limited to {} per mail): {}\n",
                human_bytes(ATTACH_LIMIT),
                left_out.join(", ")
            ));
        }
    }
    mail.body = body;
    mail
}

/// The On Error mail for `failures`.
pub fn error_mail(cx: &EventContext<'_>, action: &MailAction, failures: &[Failure]) -> EventMail {
    let errors = failures
        .iter()
        .map(|f| format!("  {f}"))
        .collect::<Vec<_>>()
        .join("\n");
    let none = NoFilesInfo::default();
    let subject = render(&action.subject, |v| {
        cx.value(v, failures.len(), "", 0, &errors, &none)
    });
    let body = render(&action.body, |v| {
        cx.value(v, failures.len(), "", 0, &errors, &none)
    });
    cx.mail(EventKind::Error, action, one_line(&subject), body)
}

/// The On No Files mail: nothing taken since `since`.
pub fn no_files_mail(
    cx: &EventContext<'_>,
    nf: &NoFilesAction,
    since: DateTime<Local>,
) -> EventMail {
    let info = NoFilesInfo {
        since: Some(since),
        after: Some(nf.after),
    };
    let subject = render(&nf.mail.subject, |v| cx.value(v, 0, "", 0, "", &info));
    let body = render(&nf.mail.body, |v| cx.value(v, 0, "", 0, "", &info));
    cx.mail(EventKind::NoFiles, &nf.mail, one_line(&subject), body)
}

/// One line per file: name, size and where it went.
pub fn file_list(files: &[Transferred]) -> String {
    files
        .iter()
        .map(|f| {
            format!(
                "  {}  ({})  -> {}",
                f.source.display(),
                human_bytes(f.size),
                f.destination.display()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// A subject is one line, whatever a placeholder held.
fn one_line(s: &str) -> String {
    s.split(['\r', '\n'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `512 bytes`, `12.3 kB`, `4.5 MB`, `1.2 GB` (SI units, as file managers show them).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if n < 1000 {
        return if n == 1 {
            "1 byte".into()
        } else {
            format!("{n} bytes")
        };
    }
    let mut v = n as f64;
    let mut unit = "";
    for u in UNITS {
        v /= 1000.0;
        unit = u;
        if v < 1000.0 {
            break;
        }
    }
    if v < 10.0 {
        format!("{v:.1} {unit}")
    } else {
        format!("{v:.0} {unit}")
    }
}

/// Local time as `2026-01-05 14:03:22 +01:00`.
pub fn format_time(t: &DateTime<Local>) -> String {
    t.format("%Y-%m-%d %H:%M:%S %:z").to_string()
}

/// A duration as written in the config: `2h`, `1h 30m`, `45s`.
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_a_file_manager() {
        assert_eq!(human_bytes(0), "0 bytes");
        assert_eq!(human_bytes(1), "1 byte");
        assert_eq!(human_bytes(999), "999 bytes");
        assert_eq!(human_bytes(12_345), "12 kB");
        assert_eq!(human_bytes(1_500), "1.5 kB");
        assert_eq!(human_bytes(4_500_000), "4.5 MB");
        assert_eq!(human_bytes(3_000_000_000), "3.0 GB");
    }

    #[test]
    fn subjects_stay_on_one_line() {
        assert_eq!(one_line("a\r\n b\nc"), "a b c");
    }

    #[test]
    fn default_templates_parse() {
        use super::super::template::TemplateKind;
        for e in ["on_success", "on_error", "on_no_files"] {
            let (s, b) = default_templates(e);
            Template::parse(s, TemplateKind::Mail).unwrap();
            Template::parse(b, TemplateKind::Mail).unwrap();
        }
    }
}
