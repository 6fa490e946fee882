//! The [`TokenStore`] interface and the choice of store from `token_store`.

use std::fmt;

use crate::config::{Config, TokenStoreKind};

use super::file::FileStore;
use super::keyring::{self as keyring_store, KeyringStore};
use super::{TokenError, TokenSet};

/// Which kind of store holds an account's tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StoreKind {
    /// The OS keyring.
    Keyring,
    /// A 0600 file under the state directory.
    File,
}

impl fmt::Display for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StoreKind::Keyring => "keyring",
            StoreKind::File => "file",
        })
    }
}

/// Somewhere tokens are kept, one [`TokenSet`] per account. Implementations do no locking of
/// their own: [`super::TokenManager`] holds the account's lock around every read-modify-write.
pub trait TokenStore: Send + Sync + fmt::Debug {
    /// The kind of store.
    fn kind(&self) -> StoreKind;
    /// Where `account`'s tokens are, for people (`file /home/a/.local/state/mailgate/tokens/work.json`).
    fn location(&self, account: &str) -> String;
    /// The stored tokens, `None` when there are none.
    fn load(&self, account: &str) -> Result<Option<TokenSet>, TokenError>;
    /// Replaces the stored tokens.
    fn save(&self, account: &str, tokens: &TokenSet) -> Result<(), TokenError>;
    /// Forgets the tokens; true when there were some.
    fn delete(&self, account: &str) -> Result<bool, TokenError>;
}

/// The store for `account` as `token_store` says:
///
/// - `file`: the file store;
/// - `keyring`: the OS keyring, an error when it does not work;
/// - `auto`: the file store when the account's token file exists (its tokens are there), else
///   the OS keyring when it works and keeps entries across reboots, else the file store. The
///   choice is logged.
pub fn open_store(config: &Config, account: &str) -> Result<Box<dyn TokenStore>, TokenError> {
    let file = FileStore::new(config.tokens_dir());
    let keyring = KeyringStore::new(config.state_dir.display().to_string());
    let store: Box<dyn TokenStore> = match config.token_store {
        TokenStoreKind::File => Box::new(file),
        TokenStoreKind::Keyring => {
            keyring_store::probe(false).map_err(|reason| TokenError::KeyringUnavailable {
                config_path: config.path.clone(),
                reason,
            })?;
            if keyring_store::probe(true).is_err() {
                tracing::warn!(
                    "the {} does not survive a reboot: after one, run `mailgate login {account}` \
                     again (or set token_store = \"file\")",
                    keyring_store::platform_name()
                );
            }
            Box::new(keyring)
        }
        TokenStoreKind::Auto => {
            if file.path_for(account).exists() {
                Box::new(file)
            } else {
                match keyring_store::probe(true) {
                    Ok(()) => Box::new(keyring),
                    Err(reason) => {
                        tracing::info!("not using the OS keyring: {reason}");
                        Box::new(file)
                    }
                }
            }
        }
    };
    tracing::info!(
        "tokens of account {account}: {} (token_store = {})",
        store.location(account),
        config.token_store.as_str()
    );
    Ok(store)
}

/// Every store that may hold `account`'s tokens (the configured one first), for forgetting them
/// everywhere after a change of `token_store`.
pub fn all_stores(config: &Config, account: &str) -> Vec<Box<dyn TokenStore>> {
    let mut stores: Vec<Box<dyn TokenStore>> = Vec::new();
    if let Ok(s) = open_store(config, account) {
        stores.push(s);
    }
    if !stores.iter().any(|s| s.kind() == StoreKind::File) {
        stores.push(Box::new(FileStore::new(config.tokens_dir())));
    }
    if !stores.iter().any(|s| s.kind() == StoreKind::Keyring)
        && config.token_store != TokenStoreKind::File
        && keyring_store::probe(false).is_ok()
    {
        stores.push(Box::new(KeyringStore::new(
            config.state_dir.display().to_string(),
        )));
    }
    stores
}
