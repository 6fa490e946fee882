//! `{placeholder}` templates: destination paths (`/data/archive/{yyyy}/{mm}`) and event mail
//! subjects and bodies (`{count} file(s) moved by {rule}`).
//!
//! A template is parsed once, when the config is loaded, so that an unknown placeholder is a
//! config error and never a surprise at 3 a.m. `{{` and `}}` stand for literal braces.

use std::fmt;

/// A placeholder a template may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Var {
    /// The rule's name.
    Rule,
    /// The number of files (transferred for On Success, failed for On Error).
    Count,
    /// The list of transferred files, one per line, with size and destination.
    Files,
    /// The total size transferred, e.g. `3.4 MB`.
    Bytes,
    /// The list of failures, one per line, with the OS error.
    Errors,
    /// The source folder.
    Source,
    /// The destination folder (placeholders expanded for this scan).
    Destination,
    /// When the scan ran, local time.
    Time,
    /// This machine's host name.
    Host,
    /// `moved` or `copied`.
    Action,
    /// On No Files: when the last file was taken (or when watching began).
    Since,
    /// On No Files: the configured `after` duration, e.g. `2h`.
    After,
    /// Four-digit year.
    Yyyy,
    /// Two-digit year.
    Yy,
    /// Two-digit month.
    Mm,
    /// Two-digit day of the month.
    Dd,
    /// Two-digit hour (24 h).
    Hh,
    /// Two-digit minute.
    Min,
    /// Two-digit second.
    Ss,
    /// `yyyy-mm-dd`.
    Date,
}

/// Where a template is used, which decides the placeholders it may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TemplateKind {
    /// A destination folder.
    Path,
    /// An event mail's subject or body.
    Mail,
}

const PATH_VARS: &[Var] = &[
    Var::Yyyy,
    Var::Yy,
    Var::Mm,
    Var::Dd,
    Var::Hh,
    Var::Min,
    Var::Ss,
    Var::Date,
    Var::Rule,
    Var::Host,
];

const MAIL_VARS: &[Var] = &[
    Var::Rule,
    Var::Count,
    Var::Files,
    Var::Bytes,
    Var::Errors,
    Var::Source,
    Var::Destination,
    Var::Time,
    Var::Host,
    Var::Action,
    Var::Since,
    Var::After,
];

impl Var {
    /// The name written between braces.
    pub fn name(self) -> &'static str {
        match self {
            Var::Rule => "rule",
            Var::Count => "count",
            Var::Files => "files",
            Var::Bytes => "bytes",
            Var::Errors => "errors",
            Var::Source => "source",
            Var::Destination => "destination",
            Var::Time => "time",
            Var::Host => "host",
            Var::Action => "action",
            Var::Since => "since",
            Var::After => "after",
            Var::Yyyy => "yyyy",
            Var::Yy => "yy",
            Var::Mm => "mm",
            Var::Dd => "dd",
            Var::Hh => "hh",
            Var::Min => "min",
            Var::Ss => "ss",
            Var::Date => "date",
        }
    }
}

impl TemplateKind {
    /// The placeholders allowed here.
    pub fn vars(self) -> &'static [Var] {
        match self {
            TemplateKind::Path => PATH_VARS,
            TemplateKind::Mail => MAIL_VARS,
        }
    }

    /// The allowed placeholders as the user writes them: `{rule} {count} ...`.
    pub fn allowed(self) -> String {
        self.vars()
            .iter()
            .map(|v| format!("{{{}}}", v.name()))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Why a template cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    #[error("unknown placeholder `{{{name}}}`; allowed: {allowed}")]
    UnknownPlaceholder { name: String, allowed: String },
    #[error("`{{` at byte {at} is not closed by `}}` (write `{{{{` for a literal brace)")]
    Unclosed { at: usize },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Var),
}

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    text: String,
    parts: Vec<Part>,
}

impl Template {
    /// Parses `text`, refusing placeholders `kind` does not allow.
    pub fn parse(text: &str, kind: TemplateKind) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        let mut offset = 0;
        while let Some(i) = rest.find(['{', '}']) {
            literal.push_str(&rest[..i]);
            let brace = rest.as_bytes()[i];
            let after = &rest[i + 1..];
            if brace == b'}' {
                // `}}` is a literal brace, and so is a lone `}`.
                literal.push('}');
                let skip = if after.starts_with('}') { 2 } else { 1 };
                rest = &rest[i + skip..];
                offset += i + skip;
                continue;
            }
            if after.starts_with('{') {
                literal.push('{');
                rest = &rest[i + 2..];
                offset += i + 2;
                continue;
            }
            let Some(close) = after.find('}') else {
                return Err(TemplateError::Unclosed { at: offset + i });
            };
            let name = after[..close].trim();
            let var = kind
                .vars()
                .iter()
                .copied()
                .find(|v| v.name().eq_ignore_ascii_case(name))
                .ok_or_else(|| TemplateError::UnknownPlaceholder {
                    name: name.to_string(),
                    allowed: kind.allowed(),
                })?;
            if !literal.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut literal)));
            }
            parts.push(Part::Var(var));
            rest = &after[close + 1..];
            offset += i + 1 + close + 1;
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template {
            text: text.to_string(),
            parts,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the template names `var`.
    pub fn uses(&self, var: Var) -> bool {
        self.parts.contains(&Part::Var(var))
    }

    /// The text with each placeholder replaced by `value(var)`.
    pub fn render(&self, mut value: impl FnMut(Var) -> String) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Var(v) => out.push_str(&value(*v)),
            }
        }
        out
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_placeholders_and_literal_braces() {
        let t =
            Template::parse("{count} file(s) {{moved}} by {rule} }", TemplateKind::Mail).unwrap();
        let s = t.render(|v| match v {
            Var::Count => "3".into(),
            Var::Rule => "invoices".into(),
            _ => "?".into(),
        });
        assert_eq!(s, "3 file(s) {moved} by invoices }");
        assert!(t.uses(Var::Count));
        assert!(!t.uses(Var::Files));
    }

    #[test]
    fn unknown_placeholder_lists_the_allowed_ones() {
        let err = Template::parse("/data/{yyyy}/{month}", TemplateKind::Path).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`{month}`"), "{msg}");
        assert!(msg.contains("{yyyy} {yy} {mm} {dd}"), "{msg}");
        // Mail placeholders are not path placeholders and the other way round.
        assert!(Template::parse("{count}", TemplateKind::Path).is_err());
        assert!(Template::parse("{yyyy}", TemplateKind::Mail).is_err());
    }

    #[test]
    fn unclosed_brace_is_an_error() {
        assert_eq!(
            Template::parse("abc {rule", TemplateKind::Mail).unwrap_err(),
            TemplateError::Unclosed { at: 4 }
        );
    }

    #[test]
    fn plain_text_has_no_placeholders() {
        let t = Template::parse("/data/archive", TemplateKind::Path).unwrap();
        assert_eq!(t.render(|_| unreachable!()), "/data/archive");
    }
}
