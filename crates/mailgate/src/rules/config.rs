//! `[rules.NAME]` tables: what a file-transfer rule takes, where it puts it, and whom it mails.
//!
//! ```toml
//! [rules.invoices]
//! source = "/data/incoming"
//! destination = "/data/archive/{yyyy}/{mm}"
//! include = ["*.pdf", "*.xml"]
//! exclude = ["*.tmp"]
//! action = "move"            # move | copy
//! recursive = true           # recreate subfolders under the destination
//! conflict = "rename"        # overwrite | skip | rename (name (1).pdf)
//! interval = "30s"
//! min_age = "5s"
//!
//! [rules.invoices.on_success]
//! mail = { account = "work", to = ["ops@contoso.com"], attach_files = false }
//! [rules.invoices.on_error]
//! mail = { to = ["it@contoso.com"] }
//! [rules.invoices.on_no_files]
//! after = "2h"
//! mail = { to = ["ops@contoso.com"] }
//! ```
//!
//! Parsing goes through the config file's [`Section`] helpers, so a rule's errors look like every
//! other config error: the file, `[rules.NAME]`, the key as written, what is allowed, the line.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Datelike, Local, Timelike};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use toml_edit::{Item, TableLike};

use super::template::{Template, TemplateKind, Var};
use crate::config::{paths, Account, ConfigError, Section};

/// Keys allowed in a `[rules.NAME]` table.
pub const RULE_KEYS: &[&str] = &[
    "source",
    "destination",
    "include",
    "exclude",
    "action",
    "recursive",
    "conflict",
    "interval",
    "min_age",
    "on_success",
    "on_error",
    "on_no_files",
];

/// Keys allowed in an event's `mail = { ... }` table.
pub const MAIL_KEYS: &[&str] = &[
    "account",
    "from",
    "to",
    "cc",
    "subject",
    "body",
    "attach_files",
];

const ACTIONS: &[&str] = &["move", "copy"];
const CONFLICTS: &[&str] = &["overwrite", "skip", "rename"];

/// The polling interval when a rule sets none.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// How long a file must stay unchanged when a rule sets no `min_age`.
pub const DEFAULT_MIN_AGE: Duration = Duration::from_secs(5);
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// What a rule does with a file it takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The file ends up in the destination only.
    #[default]
    Move,
    /// The file stays in the source and a copy goes to the destination; a copied file is taken
    /// again only when it changes.
    Copy,
}

impl Action {
    /// `moved` or `copied`, for messages and the `{action}` placeholder.
    pub fn past(self) -> &'static str {
        match self {
            Action::Move => "moved",
            Action::Copy => "copied",
        }
    }

    /// `move` or `copy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Move => "move",
            Action::Copy => "copy",
        }
    }
}

/// What happens when the destination already has a file of the same name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Conflict {
    /// Replace it (atomically: readers see the old or the new file, never a mix).
    Overwrite,
    /// Leave both alone; with `move` the source file stays where it is.
    Skip,
    /// Keep both: the new file becomes `name (1).pdf`, `name (2).pdf`, ...
    #[default]
    Rename,
}

impl Conflict {
    /// The word used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Conflict::Overwrite => "overwrite",
            Conflict::Skip => "skip",
            Conflict::Rename => "rename",
        }
    }
}

/// An event's mail: who gets it and what it says.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct MailAction {
    /// The account it is sent through (`account`, else the config's default account).
    pub account: String,
    /// The sender address, when not the account's own `from`.
    pub from: Option<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub subject: Template,
    pub body: Template,
    /// On Success only: attach the transferred files (up to [`super::events::ATTACH_LIMIT`]).
    pub attach_files: bool,
}

/// On No Files: mail when no file has been taken for `after`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NoFilesAction {
    pub after: Duration,
    pub mail: MailAction,
}

/// One validated `[rules.NAME]` table.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RuleConfig {
    pub name: String,
    /// The folder files are taken from (absolute; relative paths are relative to the config file).
    pub source: PathBuf,
    /// The destination folder, possibly with date placeholders.
    pub destination: Template,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub action: Action,
    pub recursive: bool,
    pub conflict: Conflict,
    pub interval: Duration,
    pub min_age: Duration,
    pub on_success: Option<MailAction>,
    pub on_error: Option<MailAction>,
    pub on_no_files: Option<NoFilesAction>,
    pub(crate) filter: Filter,
    /// The config file, for messages.
    pub config_path: PathBuf,
}

impl RuleConfig {
    /// The destination folder for a scan at `at`.
    pub fn destination_dir(&self, at: &DateTime<Local>) -> PathBuf {
        let host = host_name();
        let rendered = self
            .destination
            .render(|v| path_var(v, at, &self.name, &host));
        PathBuf::from(rendered)
    }

    /// Whether a file at `rel` (relative to the source) is taken, by its include/exclude patterns.
    pub fn wants_file(&self, rel: &Path) -> bool {
        self.filter.wants_file(rel)
    }

    /// Whether a subfolder at `rel` is entered (when `recursive`), by the exclude patterns.
    pub fn wants_dir(&self, rel: &Path) -> bool {
        !self.filter.excludes(rel)
    }
}

/// This machine's host name (for `{host}`), or `localhost`.
pub fn host_name() -> String {
    let h = gethostname::gethostname().to_string_lossy().into_owned();
    if h.is_empty() {
        "localhost".into()
    } else {
        h
    }
}

fn path_var(v: Var, at: &DateTime<Local>, rule: &str, host: &str) -> String {
    match v {
        Var::Yyyy => format!("{:04}", at.year()),
        Var::Yy => format!("{:02}", at.year().rem_euclid(100)),
        Var::Mm => format!("{:02}", at.month()),
        Var::Dd => format!("{:02}", at.day()),
        Var::Hh => format!("{:02}", at.hour()),
        Var::Min => format!("{:02}", at.minute()),
        Var::Ss => format!("{:02}", at.second()),
        Var::Date => at.format("%Y-%m-%d").to_string(),
        Var::Rule => rule.to_string(),
        Var::Host => host.to_string(),
        // Not allowed in path templates (refused when parsed).
        _ => String::new(),
    }
}

/// Compiled include/exclude patterns. A pattern with a `/` matches the path relative to the source
/// (`sub/*.pdf`, `**/draft/*`); one without matches the file name alone (`*.pdf`).
#[derive(Clone, Debug, Default)]
pub(crate) struct Filter {
    include: Option<Patterns>,
    exclude: Option<Patterns>,
}

#[derive(Clone, Debug)]
struct Patterns {
    names: GlobSet,
    paths: GlobSet,
}

impl Patterns {
    fn matches(&self, rel: &Path) -> bool {
        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        if self.names.is_match(name.as_ref()) {
            return true;
        }
        self.paths.is_match(rel_slash(rel))
    }
}

/// `rel` with `/` separators on every platform, as path patterns are written.
pub(crate) fn rel_slash(rel: &Path) -> String {
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

impl Filter {
    fn wants_file(&self, rel: &Path) -> bool {
        let included = self.include.as_ref().is_none_or(|p| p.matches(rel));
        included && !self.excludes(rel)
    }

    fn excludes(&self, rel: &Path) -> bool {
        self.exclude.as_ref().is_some_and(|p| p.matches(rel))
    }
}

fn compile(patterns: &[String]) -> Result<Option<Patterns>, (String, String)> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut names = GlobSetBuilder::new();
    let mut paths = GlobSetBuilder::new();
    for p in patterns {
        let glob = GlobBuilder::new(p)
            .literal_separator(true)
            .case_insensitive(cfg!(windows))
            .backslash_escape(!cfg!(windows))
            .build()
            .map_err(|e| (p.clone(), e.kind().to_string()))?;
        if p.contains('/') {
            paths.add(glob);
        } else {
            names.add(glob);
        }
    }
    let names = names.build().map_err(|e| (String::new(), e.to_string()))?;
    let paths = paths.build().map_err(|e| (String::new(), e.to_string()))?;
    Ok(Some(Patterns { names, paths }))
}

/// A rule name: it names the rule's state folder, so letters, digits, `-`, `_` and `.` only.
fn valid_rule_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// What [`parse_rules`] needs to know about the rest of the config.
pub struct RulesContext<'a> {
    pub path: &'a Path,
    pub text: &'a str,
    /// The config file's folder: relative paths are relative to it.
    pub base: &'a Path,
    pub accounts: &'a BTreeMap<String, Account>,
    pub default_account: Option<&'a str>,
}

/// Reads the top-level `rules` table (`item`, at `line`) into validated rules by name.
pub fn parse_rules(
    cx: &RulesContext<'_>,
    item: &Item,
    line: Option<usize>,
) -> Result<BTreeMap<String, RuleConfig>, ConfigError> {
    let top = Section::new(cx.path, cx.text, "");
    let table = top.table("rules", item, line)?;
    let mut rules = BTreeMap::new();
    for (name, item) in table.iter() {
        let line = top.key_line(table, name);
        if !valid_rule_name(name) {
            return Err(ConfigError::Invalid {
                path: cx.path.to_path_buf(),
                section: String::new(),
                what: format!("[rules.{name}]"),
                problem: "a rule name may only use letters, digits, '-', '_' and '.'".into(),
                line,
            });
        }
        let rule = parse_rule(cx, name, item, line)?;
        rules.insert(name.to_string(), rule);
    }
    Ok(rules)
}

fn parse_rule(
    cx: &RulesContext<'_>,
    name: &str,
    item: &Item,
    name_line: Option<usize>,
) -> Result<RuleConfig, ConfigError> {
    let rules = Section::new(cx.path, cx.text, "rules");
    let table = rules.table(name, item, name_line)?;
    let label = format!("rules.{name}");
    let s = Section::new(cx.path, cx.text, &label);

    let mut source: Option<(PathBuf, &Item, Option<usize>)> = None;
    let mut destination: Option<(Template, &Item, Option<usize>)> = None;
    let mut include = Vec::new();
    let mut exclude = Vec::new();
    let mut filter = Filter::default();
    let mut action = Action::default();
    let mut recursive = false;
    let mut conflict = Conflict::default();
    let mut interval = DEFAULT_INTERVAL;
    let mut min_age = DEFAULT_MIN_AGE;
    let mut on_success = None;
    let mut on_error = None;
    let mut on_no_files = None;

    for (key, item) in table.iter() {
        let line = s.key_line(table, key);
        match key {
            "source" => {
                let p = paths::resolve_path(&s.string(key, item, line)?, cx.base);
                source = Some((normalize(&p), item, line));
            }
            "destination" => {
                let text = s.string(key, item, line)?;
                let t = Template::parse(&text, TemplateKind::Path)
                    .map_err(|e| s.invalid(key, item, line, e.to_string()))?;
                let resolved = paths::resolve_path(t.as_str(), cx.base);
                let t = Template::parse(&resolved.to_string_lossy(), TemplateKind::Path)
                    .map_err(|e| s.invalid(key, item, line, e.to_string()))?;
                destination = Some((t, item, line));
            }
            "include" | "exclude" => {
                let list = patterns(&s, key, item, line)?;
                let compiled = compile(&list).map_err(|(p, why)| {
                    s.invalid(key, item, line, format!("bad pattern {p:?}: {why}"))
                })?;
                if key == "include" {
                    include = list;
                    filter.include = compiled;
                } else {
                    exclude = list;
                    filter.exclude = compiled;
                }
            }
            "action" => action = s.choice(key, item, line, ACTIONS)?,
            "recursive" => recursive = boolean(&s, key, item, line)?,
            "conflict" => conflict = s.choice(key, item, line, CONFLICTS)?,
            "interval" => {
                interval = s.duration(key, item, line)?;
                if interval < MIN_INTERVAL {
                    return Err(s.invalid(key, item, line, "must be at least 100ms"));
                }
            }
            "min_age" => min_age = s.duration(key, item, line)?,
            "on_success" | "on_error" => {
                let ev = s.table(key, item, line)?;
                let mail = event_mail(
                    cx,
                    &format!("{label}.{key}"),
                    ev,
                    key == "on_success",
                    &["mail"],
                )?;
                if key == "on_success" {
                    on_success = Some(mail);
                } else {
                    on_error = Some(mail);
                }
            }
            "on_no_files" => {
                let ev = s.table(key, item, line)?;
                let es = Section::new(cx.path, cx.text, &format!("{label}.{key}"));
                let Some(after_item) = ev.get("after") else {
                    return Err(es.missing(
                        "after",
                        "how long without a file before mailing, e.g. after = \"2h\"",
                    ));
                };
                let after_line = es.key_line(ev, "after");
                let after = es.duration("after", after_item, after_line)?;
                if after.is_zero() {
                    return Err(es.invalid(
                        "after",
                        after_item,
                        after_line,
                        "must be more than 0s",
                    ));
                }
                let mail =
                    event_mail(cx, &format!("{label}.{key}"), ev, false, &["mail", "after"])?;
                on_no_files = Some(NoFilesAction { after, mail });
            }
            other => return Err(s.unknown_key(other, item, line, RULE_KEYS)),
        }
    }

    let Some((source, _, _)) = source else {
        return Err(s.missing("source", "the folder files are taken from"));
    };
    let Some((destination, dest_item, dest_line)) = destination else {
        return Err(s.missing(
            "destination",
            "the folder files go to, e.g. \"/data/archive/{yyyy}/{mm}\"",
        ));
    };
    let rule = RuleConfig {
        name: name.to_string(),
        source,
        destination,
        include,
        exclude,
        action,
        recursive,
        conflict,
        interval,
        min_age,
        on_success,
        on_error,
        on_no_files,
        filter,
        config_path: cx.path.to_path_buf(),
    };
    let dest = normalize(&rule.destination_dir(&Local::now()));
    let (real_src, real_dest) = (real_path(&rule.source), real_path(&dest));
    if real_dest == real_src {
        return Err(s.invalid(
            "destination",
            dest_item,
            dest_line,
            format!(
                "is the source folder itself ({}); files would be moved onto themselves",
                rule.source.display()
            ),
        ));
    }
    if rule.recursive && real_dest.starts_with(&real_src) {
        return Err(s.invalid(
            "destination",
            dest_item,
            dest_line,
            format!(
                "is inside source ({}) and recursive = true would take the files it has just \
                 delivered again; choose a destination outside the source, or set recursive = false",
                rule.source.display()
            ),
        ));
    }
    Ok(rule)
}

/// The `mail = { ... }` of the event table `ev`, labelled `label` (`rules.x.on_success`).
fn event_mail(
    cx: &RulesContext<'_>,
    label: &str,
    ev: &dyn TableLike,
    on_success: bool,
    allowed: &[&str],
) -> Result<MailAction, ConfigError> {
    let es = Section::new(cx.path, cx.text, label);
    let mut mail = None;
    for (key, item) in ev.iter() {
        let line = es.key_line(ev, key);
        match key {
            "mail" => mail = Some((item, line)),
            "after" if allowed.contains(&"after") => {}
            other => return Err(es.unknown_key(other, item, line, allowed)),
        }
    }
    let Some((item, line)) = mail else {
        return Err(es.missing(
            "mail",
            "whom to tell, e.g. mail = { to = [\"ops@contoso.com\"] }",
        ));
    };
    let mt = es.table("mail", item, line)?;
    let ms = Section::new(cx.path, cx.text, &format!("{label}.mail"));
    let kind = if on_success {
        "on_success"
    } else if allowed.contains(&"after") {
        "on_no_files"
    } else {
        "on_error"
    };
    let (default_subject, default_body) = super::events::default_templates(kind);
    let mut account = None;
    let mut from = None;
    let mut to = Vec::new();
    let mut cc = Vec::new();
    let mut subject = Template::parse(default_subject, TemplateKind::Mail)
        .expect("default subjects are valid templates");
    let mut body = Template::parse(default_body, TemplateKind::Mail)
        .expect("default bodies are valid templates");
    let mut attach_files = false;
    for (key, item) in mt.iter() {
        let line = ms.key_line(mt, key);
        match key {
            "account" => {
                let name = ms.string(key, item, line)?;
                if !cx.accounts.contains_key(&name) {
                    return Err(ms.invalid(
                        key,
                        item,
                        line,
                        format!("no such account (accounts: {})", account_names(cx.accounts)),
                    ));
                }
                account = Some(name);
            }
            "from" => {
                let a = ms.string(key, item, line)?;
                check_address(&ms, key, item, line, &a)?;
                from = Some(a);
            }
            "to" | "cc" => {
                let list = ms.words(key, item, line)?;
                for a in &list {
                    check_address(&ms, key, item, line, a)?;
                }
                if key == "to" {
                    to = list;
                } else {
                    cc = list;
                }
            }
            "subject" | "body" => {
                let text = item
                    .as_str()
                    .ok_or_else(|| ms.invalid(key, item, line, "expected a string (in quotes)"))?;
                if key == "subject" && text.contains(['\r', '\n']) {
                    return Err(ms.invalid(key, item, line, "a subject is one line"));
                }
                let t = Template::parse(text, TemplateKind::Mail)
                    .map_err(|e| ms.invalid(key, item, line, e.to_string()))?;
                if key == "subject" {
                    subject = t;
                } else {
                    body = t;
                }
            }
            "attach_files" => {
                attach_files = boolean(&ms, key, item, line)?;
                if attach_files && !on_success {
                    return Err(ms.invalid(
                        key,
                        item,
                        line,
                        "only on_success can attach the files it transferred",
                    ));
                }
            }
            other => return Err(ms.unknown_key(other, item, line, MAIL_KEYS)),
        }
    }
    if to.is_empty() {
        return Err(ms.missing("to", "the recipients, e.g. to = [\"ops@contoso.com\"]"));
    }
    let account = match account {
        Some(a) => a,
        None => match (cx.default_account, cx.accounts.len()) {
            (Some(d), _) => d.to_string(),
            (None, 1) => cx.accounts.keys().next().expect("one account").clone(),
            (None, _) => {
                return Err(ms.missing(
                    "account",
                    format!(
                        "which account sends this mail? set account = \"...\" here or \
                         default_account at the top (accounts: {})",
                        account_names(cx.accounts)
                    ),
                ))
            }
        },
    };
    Ok(MailAction {
        account,
        from,
        to,
        cc,
        subject,
        body,
        attach_files,
    })
}

fn account_names(accounts: &BTreeMap<String, Account>) -> String {
    if accounts.is_empty() {
        "none".into()
    } else {
        accounts.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

fn check_address(
    s: &Section<'_>,
    key: &str,
    item: &Item,
    line: Option<usize>,
    a: &str,
) -> Result<(), ConfigError> {
    let ok = a
        .split_once('@')
        .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && !d.contains('@'))
        && !a.contains(|c: char| c.is_whitespace() || c.is_control() || c == ',' || c == '<');
    if ok {
        Ok(())
    } else {
        Err(s.invalid(
            key,
            item,
            line,
            format!("{a:?} is not an address like ops@contoso.com"),
        ))
    }
}

fn patterns(
    s: &Section<'_>,
    key: &str,
    item: &Item,
    line: Option<usize>,
) -> Result<Vec<String>, ConfigError> {
    let list: Option<Vec<String>> = if let Some(one) = item.as_str() {
        Some(vec![one.to_string()])
    } else {
        item.as_array()
            .map(|a| a.iter().map(|v| v.as_str().map(String::from)).collect())
            .unwrap_or(None)
    };
    match list {
        Some(l) if l.iter().all(|p| !p.trim().is_empty()) => Ok(l),
        _ => Err(s.invalid(
            key,
            item,
            line,
            "expected a list of patterns, e.g. [\"*.pdf\", \"*.xml\"]",
        )),
    }
}

fn boolean(
    s: &Section<'_>,
    key: &str,
    item: &Item,
    line: Option<usize>,
) -> Result<bool, ConfigError> {
    item.as_bool()
        .ok_or_else(|| s.invalid(key, item, line, "expected true or false"))
}

/// Removes `.` and resolves `..` without touching the file system.
pub(crate) fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push(c);
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// The path with symbolic links resolved as far as it exists, so that `/data/in` and a link to
/// it compare equal; the part that does not exist yet is appended as written.
pub(crate) fn real_path(p: &Path) -> PathBuf {
    let mut existing = p.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(&existing) {
            let mut out = real;
            for c in rest.iter().rev() {
                out.push(c);
            }
            return out;
        }
        match (
            existing.file_name().map(|n| n.to_os_string()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return p.to_path_buf(),
        }
    }
}

impl fmt::Display for RuleConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "[rules.{}]", self.name)?;
        writeln!(f, "  source       {}", self.source.display())?;
        writeln!(f, "  destination  {}", self.destination)?;
        let list = |v: &[String]| {
            if v.is_empty() {
                "(none)".to_string()
            } else {
                v.join(" ")
            }
        };
        writeln!(
            f,
            "  include      {}",
            if self.include.is_empty() {
                "(all files)".into()
            } else {
                list(&self.include)
            }
        )?;
        writeln!(f, "  exclude      {}", list(&self.exclude))?;
        writeln!(
            f,
            "  action       {}, recursive {}, conflict {}",
            self.action.as_str(),
            self.recursive,
            self.conflict.as_str()
        )?;
        writeln!(
            f,
            "  interval     {}, min_age {}",
            humantime::format_duration(self.interval),
            humantime::format_duration(self.min_age)
        )?;
        let mail = |m: &MailAction| {
            let mut s = format!("mail to {} via account {}", m.to.join(", "), m.account);
            if !m.cc.is_empty() {
                s.push_str(&format!(", cc {}", m.cc.join(", ")));
            }
            if m.attach_files {
                s.push_str(", files attached");
            }
            s
        };
        match &self.on_success {
            Some(m) => writeln!(f, "  on_success   {}", mail(m))?,
            None => writeln!(f, "  on_success   (no mail)")?,
        }
        match &self.on_error {
            Some(m) => writeln!(f, "  on_error     {}", mail(m))?,
            None => writeln!(f, "  on_error     (no mail)")?,
        }
        match &self.on_no_files {
            Some(n) => write!(
                f,
                "  on_no_files  after {}: {}",
                humantime::format_duration(n.after),
                mail(&n.mail)
            ),
            None => write!(f, "  on_no_files  (no mail)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn parse(rules: &str) -> Result<Config, String> {
        let dir = std::env::temp_dir();
        let text = format!(
            "default_account = \"work\"\nstate_dir = \"{state}\"\n\n[accounts.work]\nprovider = \"office365\"\n\
             tenant = \"contoso.onmicrosoft.com\"\nclient_id = \"0d5c7a43-6f0e-4b8e-9c1d-7e2a3b4c5d6e\"\n\
             user = \"alice@contoso.com\"\n\n{rules}",
            state = dir.join("mailgate-rules-unit").display()
        );
        Config::parse(&text, &dir.join("config.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn a_minimal_rule_gets_the_defaults() {
        let c = parse(
            "[rules.inv]\nsource = \"/data/in\"\ndestination = \"/data/out/{yyyy}\"\n\
             [rules.inv.on_error]\nmail = { to = [\"it@contoso.com\"] }\n",
        )
        .unwrap();
        let r = &c.rules["inv"];
        assert_eq!(r.action, super::Action::Move);
        assert_eq!(r.conflict, super::Conflict::Rename);
        assert_eq!(r.interval, super::DEFAULT_INTERVAL);
        assert_eq!(r.min_age, super::DEFAULT_MIN_AGE);
        assert!(!r.recursive);
        let m = r.on_error.as_ref().unwrap();
        assert_eq!(m.account, "work", "the default account sends");
        assert_eq!(
            m.subject.as_str(),
            super::super::events::default_templates("on_error").0
        );
        assert!(r.on_success.is_none());
        assert!(
            r.wants_file(std::path::Path::new("anything.bin")),
            "no include: every file"
        );
    }

    #[test]
    fn durations_and_patterns() {
        let c = parse(
            "[rules.inv]\nsource = \"/data/in\"\ndestination = \"/data/out\"\ninterval = \"1h 30m\"\n\
             min_age = 0\ninclude = [\"*.pdf\", \"sub/**/*.xml\"]\nexclude = \"draft-*\"\n",
        )
        .unwrap();
        let r = &c.rules["inv"];
        assert_eq!(r.interval, std::time::Duration::from_secs(5400));
        assert!(r.min_age.is_zero());
        let p = std::path::Path::new;
        assert!(r.wants_file(p("x.pdf")));
        assert!(
            r.wants_file(p("deep/x.pdf")),
            "a name pattern matches at any depth"
        );
        assert!(!r.wants_file(p("x.xml")));
        assert!(r.wants_file(p("sub/a/b/x.xml")));
        assert!(!r.wants_file(p("draft-1.pdf")));
        assert!(!r.wants_dir(p("draft-folder")));
    }

    #[test]
    fn mistakes_name_the_rule_and_the_key() {
        let cases = [
            (
                "[rules.inv]\nsource = \"/data/in\"\ndestination = \"/data/in/{yyyy}\"\nrecursive = true\n",
                "[rules.inv] destination = \"/data/in/{yyyy}\": is inside source",
            ),
            (
                "[rules.inv]\nsource = \"/data/in\"\ndestination = \"/data/in/.\"\n",
                "is the source folder itself",
            ),
            (
                "[rules.inv]\nsource = \"/data/in\"\ndestination = \"/data/out\"\ninterval = \"soon\"\n",
                "[rules.inv] interval = \"soon\"",
            ),
            (
                "[rules.inv]\nsource = \"/data/in\"\ndestination = \"/data/out\"\naction = \"mvoe\"\n",
                "expected one of move, copy",
            ),
            (
                "[rules.inv]\nsource = \"/data/in\"\ndestination = \"/data/out\"\ninclude = [\"[a-\"]\n",
                "[rules.inv] include = [\"[a-\"]: bad pattern",
            ),
            (
                "[rules.inv]\nsource = \"/data/in\"\ndestination = \"/data/out\"\n[rules.inv.on_error]\nmail = { to = [\"it@contoso.com\"], attach_files = true }\n",
                "only on_success can attach",
            ),
            (
                "[rules.inv]\nsource = \"/data/in\"\ndestination = \"/data/out\"\n[rules.inv.on_no_files]\nmail = { to = [\"it@contoso.com\"] }\n",
                "[rules.inv.on_no_files] after is missing",
            ),
            (
                "[rules.inv]\nsource = \"/data/in\"\ndestination = \"/data/out\"\n[rules.inv.on_success]\nmail = { to = [\"not an address\"] }\n",
                "is not an address",
            ),
            ("[rules.inv]\ndestination = \"/data/out\"\n", "[rules.inv] source is missing"),
            (
                "[rules.\"a b\"]\nsource = \"/data/in\"\ndestination = \"/data/out\"\n",
                "a rule name may only use",
            ),
        ];
        for (toml, needle) in cases {
            let err = parse(toml).expect_err(toml);
            assert!(err.contains(needle), "{toml}\n=> {err}");
            assert!(err.contains("config.toml"), "{err}");
        }
    }
}
