//! Tokens in the OS keyring (macOS Keychain, Windows Credential Manager, the Linux kernel
//! keyring) through the `keyring` crate.
//!
//! The keyring is only used when it really works: [`probe`] checks that the platform store keeps
//! entries beyond the process (never the crate's in-memory mock) and that an entry can be
//! written, read back and deleted.

use std::sync::OnceLock;

use keyring::credential::CredentialPersistence;

use super::store::{StoreKind, TokenStore};
use super::{TokenError, TokenSet};

/// The keyring "service" every mailgate entry is filed under.
pub const SERVICE: &str = "mailgate";

/// Tokens as keyring entries, one per account. Entries are named `ACCOUNT@NAMESPACE` (the
/// namespace is the state directory) so that two configs with an account of the same name do
/// not share tokens.
#[derive(Clone, Debug)]
pub struct KeyringStore {
    namespace: String,
}

impl KeyringStore {
    /// A store whose entries are named after `namespace` (usually the state directory).
    pub fn new(namespace: impl Into<String>) -> KeyringStore {
        KeyringStore {
            namespace: namespace.into(),
        }
    }

    /// The keyring user name of `account`'s entry.
    pub fn entry_name(&self, account: &str) -> String {
        format!("{account}@{}", self.namespace)
    }

    fn entry(&self, account: &str) -> Result<keyring::Entry, TokenError> {
        keyring::Entry::new(SERVICE, &self.entry_name(account))
            .map_err(|e| self.error(account, "open", e))
    }

    fn error(&self, account: &str, action: &'static str, e: keyring::Error) -> TokenError {
        TokenError::Keyring {
            account: account.to_string(),
            action,
            locked: matches!(e, keyring::Error::NoStorageAccess(_)),
            message: e.to_string(),
        }
    }
}

impl TokenStore for KeyringStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Keyring
    }

    fn location(&self, account: &str) -> String {
        format!(
            "{} (service {SERVICE}, entry {})",
            platform_name(),
            self.entry_name(account)
        )
    }

    fn load(&self, account: &str) -> Result<Option<TokenSet>, TokenError> {
        let json = match self.entry(account)?.get_password() {
            Ok(j) => j,
            Err(keyring::Error::NoEntry) => return Ok(None),
            Err(e) => return Err(self.error(account, "read", e)),
        };
        TokenSet::from_json(json.as_bytes())
            .map(Some)
            .map_err(|problem| TokenError::Corrupt {
                account: account.to_string(),
                location: self.location(account),
                problem,
            })
    }

    fn save(&self, account: &str, tokens: &TokenSet) -> Result<(), TokenError> {
        let json = String::from_utf8(tokens.to_json()).expect("JSON is UTF-8");
        self.entry(account)?
            .set_password(&json)
            .map_err(|e| self.error(account, "write", e))
    }

    fn delete(&self, account: &str) -> Result<bool, TokenError> {
        match self.entry(account)?.delete_credential() {
            Ok(()) => Ok(true),
            Err(keyring::Error::NoEntry) => Ok(false),
            Err(e) => Err(self.error(account, "delete", e)),
        }
    }
}

/// The name of this platform's keyring, for messages.
pub fn platform_name() -> &'static str {
    if cfg!(target_os = "macos") {
        "macOS Keychain"
    } else if cfg!(windows) {
        "Windows Credential Manager"
    } else if cfg!(target_os = "linux") {
        "Linux kernel keyring"
    } else {
        "OS keyring"
    }
}

/// How long entries of the platform's default store live.
fn persistence() -> CredentialPersistence {
    #[cfg(any(
        target_os = "linux",
        target_os = "freebsd",
        target_os = "openbsd",
        target_os = "macos",
        target_os = "ios",
        windows
    ))]
    {
        keyring::default::default_credential_builder().persistence()
    }
    #[cfg(not(any(
        target_os = "linux",
        target_os = "freebsd",
        target_os = "openbsd",
        target_os = "macos",
        target_os = "ios",
        windows
    )))]
    {
        CredentialPersistence::EntryOnly
    }
}

/// Whether the keyring can hold tokens, and if not why. `require_persistent`: refuse a store
/// that loses entries on reboot (the Linux kernel keyring), as `token_store = "auto"` must,
/// since a lost refresh token means signing in again.
///
/// The result of the write/read/delete round trip is cached for the process.
pub fn probe(require_persistent: bool) -> Result<(), String> {
    match persistence() {
        CredentialPersistence::EntryOnly | CredentialPersistence::ProcessOnly => {
            return Err(
                "this build has no OS keyring for this platform (only an in-memory \
                        mock, which would lose the tokens)"
                    .into(),
            )
        }
        CredentialPersistence::UntilReboot if require_persistent => {
            return Err(format!(
                "the {} loses its entries on reboot (and is per login session)",
                platform_name()
            ))
        }
        _ => {}
    }
    static ROUND_TRIP: OnceLock<Result<(), String>> = OnceLock::new();
    ROUND_TRIP.get_or_init(round_trip).clone()
}

fn round_trip() -> Result<(), String> {
    let user = format!(
        "probe-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    );
    let value = uuid::Uuid::new_v4().to_string();
    let entry =
        keyring::Entry::new(SERVICE, &user).map_err(|e| format!("cannot open an entry: {e}"))?;
    entry
        .set_password(&value)
        .map_err(|e| format!("cannot write a test entry: {e}"))?;
    let read = entry.get_password();
    let deleted = entry.delete_credential();
    match read {
        Ok(v) if v == value => {}
        Ok(_) => return Err("a test entry read back differently".into()),
        Err(e) => return Err(format!("cannot read back a test entry: {e}")),
    }
    deleted.map_err(|e| format!("cannot delete a test entry: {e}"))?;
    match entry.get_password() {
        Err(keyring::Error::NoEntry) => Ok(()),
        _ => Err("a deleted test entry is still there".into()),
    }
}
