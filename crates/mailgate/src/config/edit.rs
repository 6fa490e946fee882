//! Changing the config file while keeping its comments and layout (`mailgate init`, and later
//! `mailgate relay add-user`).

use std::path::{Path, PathBuf};

use toml_edit::{DocumentMut, Item, Table, Value};

use super::{Config, ConfigError};

/// The config file as an editable document. Nothing is written until [`ConfigEditor::save`],
/// which refuses to write a config that would not load.
#[derive(Debug)]
pub struct ConfigEditor {
    path: PathBuf,
    doc: DocumentMut,
    existed: bool,
}

impl ConfigEditor {
    /// Opens `path` for editing; a file that does not exist yet starts empty.
    pub fn open(path: &Path) -> Result<ConfigEditor, ConfigError> {
        let (text, existed) = match std::fs::read_to_string(path) {
            Ok(t) => (t, true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), false),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let doc = text
            .parse::<DocumentMut>()
            .map_err(|e| ConfigError::Syntax {
                path: path.to_path_buf(),
                message: super::syntax_message(&e, &text),
            })?;
        Ok(ConfigEditor {
            path: path.to_path_buf(),
            doc,
            existed,
        })
    }

    /// The file being edited.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file existed when opened.
    pub fn existed(&self) -> bool {
        self.existed
    }

    /// The names of the accounts in the document.
    pub fn account_names(&self) -> Vec<String> {
        self.doc
            .get("accounts")
            .and_then(Item::as_table_like)
            .map(|t| t.iter().map(|(k, _)| k.to_string()).collect())
            .unwrap_or_default()
    }

    /// Whether an `[accounts.NAME]` table exists.
    pub fn has_account(&self, name: &str) -> bool {
        self.account_names().iter().any(|n| n == name)
    }

    /// Sets a top-level key (`default_account`, `token_store`, ...).
    pub fn set_top(&mut self, key: &str, value: impl Into<Value>) {
        set_keep_decor(self.doc.as_table_mut(), key, value.into());
    }

    /// Whether a top-level key is set.
    pub fn has_top(&self, key: &str) -> bool {
        self.doc.contains_key(key)
    }

    /// The table at `path` (`["accounts", "work"]`, `["relay"]`), created (as `[a.b]`, with no
    /// empty `[a]` header) when missing.
    pub fn table_mut(&mut self, path: &[&str]) -> &mut Table {
        let mut table = self.doc.as_table_mut();
        for (i, name) in path.iter().enumerate() {
            let last = i + 1 == path.len();
            let entry = table.entry(name).or_insert_with(|| {
                let mut t = Table::new();
                t.set_implicit(!last);
                Item::Table(t)
            });
            if !entry.is_table() {
                // An inline table (`accounts = { work = {...} }`) or a stray value: make it a
                // normal table so it can be extended.
                let replacement = match entry.as_inline_table() {
                    Some(inline) => inline.clone().into_table(),
                    None => Table::new(),
                };
                *entry = Item::Table(replacement);
            }
            table = entry.as_table_mut().expect("made a table above");
        }
        table
    }

    /// Sets `key` in `[accounts.NAME]` (creating the table).
    pub fn set_account_value(&mut self, account: &str, key: &str, value: impl Into<Value>) {
        let table = self.table_mut(&["accounts", account]);
        set_keep_decor(table, key, value.into());
    }

    /// Removes `key` from `[accounts.NAME]`; true when it was there.
    pub fn remove_account_value(&mut self, account: &str, key: &str) -> bool {
        self.doc
            .get_mut("accounts")
            .and_then(Item::as_table_like_mut)
            .and_then(|a| a.get_mut(account))
            .and_then(Item::as_table_like_mut)
            .map(|t| t.remove(key).is_some())
            .unwrap_or(false)
    }

    /// Puts a comment line above the `[accounts.NAME]` header (for a newly written account).
    pub fn comment_account(&mut self, account: &str, comment: &str) {
        let table = self.table_mut(&["accounts", account]);
        let lines: String = comment.lines().map(|l| format!("# {l}\n")).collect();
        table.decor_mut().set_prefix(format!("\n{lines}"));
    }

    /// The document as it would be written.
    pub fn render(&self) -> String {
        self.doc.to_string()
    }

    /// Loads the edited document as a config, to check it before writing.
    pub fn validate(&self) -> Result<Config, ConfigError> {
        Config::parse(&self.render(), &self.path)
    }

    /// Checks the result and writes it atomically, readable by its owner only (it may hold a
    /// client secret). Returns the config as it now loads.
    pub fn save(&self) -> Result<Config, ConfigError> {
        let config = self.validate()?;
        let write_err = |source| ConfigError::Write {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                crate::tokens::file::create_private_dir(dir).map_err(write_err)?;
            }
        }
        crate::tokens::file::write_private_atomic(&self.path, self.render().as_bytes())
            .map_err(write_err)?;
        Ok(config)
    }
}

/// Sets a value, keeping the comment that sat before or after the old one.
fn set_keep_decor(table: &mut Table, key: &str, mut value: Value) {
    match table.get_mut(key).and_then(Item::as_value_mut) {
        Some(old) => {
            let decor = old.decor().clone();
            *value.decor_mut() = decor;
            *old = value;
        }
        None => {
            table.insert(key, Item::Value(value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_comments_and_adds_an_account() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "# my mail setup\nstate_dir = \"state\" # next to the config\n\n\
             [accounts.home]\n# the family mailbox\nprovider = \"gmail\"\nclient_id = \"x\"\n\
             user = \"me@gmail.com\"\n",
        )
        .unwrap();
        let mut ed = ConfigEditor::open(&path).unwrap();
        assert!(ed.has_account("home"));
        ed.set_account_value("work", "tenant", "contoso.onmicrosoft.com");
        ed.set_account_value("work", "client_id", "abc");
        ed.set_account_value("work", "user", "alice@contoso.com");
        ed.comment_account("work", "written by mailgate init");
        ed.set_top("default_account", "work");
        let config = ed.save().unwrap();
        assert_eq!(config.account(None).unwrap().name, "work");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("# my mail setup"), "{text}");
        assert!(text.contains("# next to the config"), "{text}");
        assert!(text.contains("# the family mailbox"), "{text}");
        assert!(text.contains("[accounts.work]"), "{text}");
        assert!(!text.contains("[accounts]\n"), "{text}");
        assert!(
            text.contains("# written by mailgate init\n[accounts.work]"),
            "{text}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }

    #[test]
    fn refuses_to_write_a_config_that_would_not_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let mut ed = ConfigEditor::open(&path).unwrap();
        ed.set_account_value("work", "client_id", "abc");
        ed.set_account_value("work", "user", "alice@contoso.com");
        ed.set_account_value("work", "smtp_security", "ssl");
        let err = ed.save().unwrap_err().to_string();
        assert!(err.contains("smtp_security = \"ssl\""), "{err}");
        assert!(!path.exists(), "nothing written");
    }
}
