//! [`TokenManager`]: a valid access token on demand, refreshed safely across processes.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crate::config::{Account, Config};
use crate::oauth::{Flow, OAuthClient};
use crate::Secret;

use super::file::TokenLock;
use super::store::{open_store, TokenStore};
use super::{TokenError, TokenSet};

/// The lock file that serialises changes to `account`'s tokens (whatever store holds them).
pub fn lock_path(config: &Config, account: &str) -> PathBuf {
    config.tokens_dir().join(format!("{account}.lock"))
}

/// Hands out access tokens for one account.
///
/// [`TokenManager::access_token`] returns the stored token while it stays valid long enough;
/// otherwise it takes the account's exclusive lock (a lock file next to the token file, shared
/// by every mailgate process), reads the store again (another process may have refreshed in the
/// meantime), refreshes (or, for client credentials, gets a new app token), saves the result —
/// the rotated refresh token first of all — and only then returns the new access token. Within a
/// process, calls are serialised too, and a valid token is served from memory.
#[derive(Debug)]
pub struct TokenManager {
    account: Account,
    store: Box<dyn TokenStore>,
    lock_path: PathBuf,
    client: Mutex<Option<OAuthClient>>,
    cache: Mutex<Option<TokenSet>>,
    serial: tokio::sync::Mutex<()>,
}

impl TokenManager {
    /// The manager of `account`, with the store `token_store` selects (see [`open_store`]).
    pub fn new(config: &Config, account: &Account) -> Result<TokenManager, TokenError> {
        let store = open_store(config, &account.name)?;
        Ok(TokenManager::with_store(
            account.clone(),
            store,
            lock_path(config, &account.name),
        ))
    }

    /// A manager over a store of your choosing, locking `lock_path`.
    pub fn with_store(
        account: Account,
        store: Box<dyn TokenStore>,
        lock_path: PathBuf,
    ) -> TokenManager {
        TokenManager {
            account,
            store,
            lock_path,
            client: Mutex::new(None),
            cache: Mutex::new(None),
            serial: tokio::sync::Mutex::new(()),
        }
    }

    /// The account managed.
    pub fn account(&self) -> &Account {
        &self.account
    }

    /// The store holding the tokens.
    pub fn store(&self) -> &dyn TokenStore {
        self.store.as_ref()
    }

    /// Where the tokens are, for people.
    pub fn location(&self) -> String {
        self.store.location(&self.account.name)
    }

    /// The lock file.
    pub fn lock_path(&self) -> &Path {
        &self.lock_path
    }

    /// What is stored now, as stored (no refresh, no checks).
    pub fn load(&self) -> Result<Option<TokenSet>, TokenError> {
        self.store.load(&self.account.name)
    }

    /// An access token valid for at least `min_valid`, refreshing first when needed.
    pub async fn access_token(&self, min_valid: Duration) -> Result<Secret, TokenError> {
        if let Some(at) = self.cached(min_valid) {
            return Ok(at);
        }
        let _serial = self.serial.lock().await;
        if let Some(at) = self.cached(min_valid) {
            return Ok(at);
        }
        // Fast path without the lock: a valid token in the store.
        if let Some(at) = self.usable(self.read_checked()?, min_valid) {
            return Ok(at);
        }
        let _lock = TokenLock::acquire(&self.lock_path).await?;
        // Re-read under the lock: another process may have refreshed while we waited, and its
        // refresh token is the only valid one now.
        let current = self.read_checked()?;
        if let Some(at) = self.usable(current.clone(), min_valid) {
            tracing::debug!(
                "account {}: another process refreshed the token",
                self.account.name
            );
            return Ok(at);
        }
        self.renew_and_save(current).await
    }

    /// Gets a new access token even though the stored one looks valid: the server rejected it
    /// (SMTP 535). When another process has meanwhile stored a different valid token, that one is
    /// returned instead of refreshing again.
    pub async fn force_refresh(&self) -> Result<Secret, TokenError> {
        let rejected = self
            .cache
            .lock()
            .expect("cache lock")
            .take()
            .and_then(|t| t.access_token);
        let _serial = self.serial.lock().await;
        let _lock = TokenLock::acquire(&self.lock_path).await?;
        let current = self.read_checked()?;
        if let (Some(set), Some(rejected)) = (&current, &rejected) {
            if let Some(at) = set.access_token_valid_for(Duration::from_secs(60)) {
                if at != rejected {
                    let at = at.clone();
                    *self.cache.lock().expect("cache lock") = current;
                    return Ok(at);
                }
            }
        }
        self.renew_and_save(current).await
    }

    /// Stores the tokens a login obtained, under the account's lock.
    pub async fn save(&self, tokens: &TokenSet) -> Result<(), TokenError> {
        let _serial = self.serial.lock().await;
        let _lock = TokenLock::acquire(&self.lock_path).await?;
        self.store.save(&self.account.name, tokens)?;
        *self.cache.lock().expect("cache lock") = Some(tokens.clone());
        Ok(())
    }

    /// [`TokenManager::save`] for callers outside an async runtime.
    pub fn save_blocking(&self, tokens: &TokenSet) -> Result<(), TokenError> {
        let _lock = TokenLock::acquire_blocking(&self.lock_path)?;
        self.store.save(&self.account.name, tokens)?;
        *self.cache.lock().expect("cache lock") = Some(tokens.clone());
        Ok(())
    }

    /// Forgets the tokens in this manager's store (under the lock); true when there were some.
    pub fn delete_blocking(&self) -> Result<bool, TokenError> {
        let _lock = TokenLock::acquire_blocking(&self.lock_path)?;
        *self.cache.lock().expect("cache lock") = None;
        self.store.delete(&self.account.name)
    }

    fn cached(&self, min_valid: Duration) -> Option<Secret> {
        let cache = self.cache.lock().expect("cache lock");
        cache.as_ref()?.access_token_valid_for(min_valid).cloned()
    }

    /// The access token of `set` when valid long enough (remembering the set).
    fn usable(&self, set: Option<TokenSet>, min_valid: Duration) -> Option<Secret> {
        let set = set?;
        let at = set.access_token_valid_for(min_valid)?.clone();
        *self.cache.lock().expect("cache lock") = Some(set);
        Some(at)
    }

    /// The stored tokens, refused when they belong to another app than the configured one.
    /// App-only tokens of another client are simply replaced, so they are ignored instead.
    fn read_checked(&self) -> Result<Option<TokenSet>, TokenError> {
        let Some(set) = self.store.load(&self.account.name)? else {
            return Ok(None);
        };
        if set.client_id != self.account.client_id {
            if self.account.flow == Flow::ClientCredentials {
                return Ok(None);
            }
            return Err(TokenError::ClientChanged {
                account: self.account.name.clone(),
                stored: set.client_id,
                configured: self.account.client_id.clone(),
            });
        }
        if self.account.flow == Flow::ClientCredentials && set.flow != Flow::ClientCredentials {
            // The account moved to app-only tokens: the delegated ones no longer apply.
            return Ok(None);
        }
        Ok(Some(set))
    }

    fn client(&self) -> Result<OAuthClient, TokenError> {
        let mut slot = self.client.lock().expect("client lock");
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let endpoints = self.account.oauth_endpoints()?;
        let client = OAuthClient::new(endpoints)
            .map_err(|source| TokenError::Client {
                account: self.account.name.clone(),
                source,
            })?
            .with_account(self.account.name.clone());
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Refreshes (or gets an app token), saves, then hands out. Called with the lock held.
    async fn renew_and_save(&self, current: Option<TokenSet>) -> Result<Secret, TokenError> {
        let name = &self.account.name;
        let fresh = if self.account.flow == Flow::ClientCredentials {
            let resp = self
                .client()?
                .client_credentials()
                .await
                .map_err(|source| TokenError::AppToken {
                    account: name.clone(),
                    source,
                })?;
            let mut set = current
                .unwrap_or_else(|| TokenSet::new(Flow::ClientCredentials, &self.account.client_id));
            set.apply(&resp);
            tracing::info!("account {name}: new app token");
            set
        } else {
            let mut set = current.ok_or_else(|| TokenError::NotLoggedIn {
                account: name.clone(),
            })?;
            let refresh_token =
                set.refresh_token
                    .clone()
                    .ok_or_else(|| TokenError::NoRefreshToken {
                        account: name.clone(),
                    })?;
            let resp = self
                .client()?
                .refresh(&refresh_token)
                .await
                .map_err(|source| TokenError::Refresh {
                    account: name.clone(),
                    source,
                })?;
            set.apply(&resp);
            tracing::info!(
                "account {name}: access token refreshed{}",
                if resp.refresh_token.is_some() {
                    ", refresh token rotated"
                } else {
                    ""
                }
            );
            set
        };
        // The old refresh token is spent now: the new one must be stored before anything uses
        // the access token, or the next refresh fails.
        if let Err(e) = self.store.save(name, &fresh) {
            tracing::error!(
                "account {name}: the refreshed tokens could not be saved; the previous refresh \
                 token may no longer be valid"
            );
            return Err(e);
        }
        let at = fresh
            .access_token
            .clone()
            .expect("a token response always carries an access token");
        *self.cache.lock().expect("cache lock") = Some(fresh);
        Ok(at)
    }
}

/// Forgets `account`'s tokens in every store that may hold them (see [`super::all_stores`]),
/// under the account's lock. Returns where tokens were found and removed.
pub fn forget(config: &Config, account: &str) -> Result<Vec<String>, TokenError> {
    let _lock = TokenLock::acquire_blocking(&lock_path(config, account))?;
    let mut removed = Vec::new();
    for store in super::all_stores(config, account) {
        if store.delete(account)? {
            removed.push(store.location(account));
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use m365_sim::{contoso, Event, SimConfig, Simulator};

    use super::*;
    use crate::tokens::{FileStore, DEFAULT_MIN_VALID};

    fn refreshes(sim: &Simulator) -> usize {
        sim.events()
            .iter()
            .filter(|l| {
                matches!(&l.event, Event::TokenRequest { grant_type, outcome, .. }
                    if grant_type == "refresh_token" && outcome == "ok")
            })
            .count()
    }

    /// A device-code account on the simulator, signed in, with its tokens in a file store.
    async fn signed_in(sim: &Simulator, dir: &Path) -> TokenManager {
        let t = contoso::TENANT_DOMAIN;
        let text = format!(
            "token_store = \"file\"\nstate_dir = \"{state}\"\n[accounts.dev]\n\
             tenant = \"{t}\"\nclient_id = \"{id}\"\nflow = \"device_code\"\nuser = \"{user}\"\n\
             authorize_url = \"{a}\"\ntoken_url = \"{tok}\"\ndevice_authorization_url = \"{d}\"\n",
            state = dir.display(),
            id = contoso::PUBLIC_APP_ID,
            user = contoso::ALICE,
            a = sim.authorize_url(t),
            tok = sim.token_url(t),
            d = sim.devicecode_url(t),
        );
        let config = Config::parse(&text, &dir.join("config.toml")).unwrap();
        let account = config.account(None).unwrap();
        let client = OAuthClient::new(account.oauth_endpoints().unwrap()).unwrap();
        let device = client.start_device().await.unwrap();
        let resp = client.poll_device(&device).await.unwrap();
        let manager = TokenManager::with_store(
            account.clone(),
            Box::new(FileStore::new(config.tokens_dir())),
            lock_path(&config, "dev"),
        );
        manager
            .save(&TokenSet::from_response(
                Flow::DeviceCode,
                &account.client_id,
                &resp,
            ))
            .await
            .unwrap();
        manager
    }

    /// A manager over the same store and lock but with nothing in memory, as another process
    /// would have.
    fn another_process(manager: &TokenManager, dir: &Path) -> TokenManager {
        TokenManager::with_store(
            manager.account().clone(),
            Box::new(FileStore::new(dir.join("tokens"))),
            manager.lock_path().to_path_buf(),
        )
    }

    fn expire_stored(manager: &TokenManager) {
        let mut set = manager.load().unwrap().unwrap();
        set.expires_at = Some(time::OffsetDateTime::now_utc() - time::Duration::minutes(1));
        manager.store().save("dev", &set).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_one_refresh_and_the_rotation_is_stored() {
        let sim = Simulator::start(SimConfig::default().device_poll_interval_secs(1))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let manager = Arc::new(signed_in(&sim, dir.path()).await);
        let first = manager.load().unwrap().unwrap();

        // Valid: served as stored, no refresh.
        let at = manager.access_token(Duration::from_secs(60)).await.unwrap();
        assert_eq!(Some(&at), first.access_token.as_ref());
        assert_eq!(refreshes(&sim), 0);

        // A fresh manager (as another process would be) with an expired stored token: eight
        // concurrent callers, one refresh.
        expire_stored(&manager);
        let other = Arc::new(another_process(&manager, dir.path()));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let m = other.clone();
                tokio::spawn(async move { m.access_token(DEFAULT_MIN_VALID).await })
            })
            .collect();
        let mut tokens = Vec::new();
        for t in tasks {
            tokens.push(t.await.unwrap().unwrap());
        }
        assert_eq!(refreshes(&sim), 1);
        let stored = other.load().unwrap().unwrap();
        assert!(tokens
            .iter()
            .all(|t| Some(t) == stored.access_token.as_ref()));
        assert_ne!(stored.refresh_token, first.refresh_token, "rotation stored");

        // The first manager's memory holds the old token, still "valid" by its clock: a server
        // rejection makes it force a refresh, which finds the other manager's newer token
        // instead of burning another refresh token.
        let forced = manager.force_refresh().await.unwrap();
        assert_eq!(Some(&forced), stored.access_token.as_ref());
        assert_eq!(refreshes(&sim), 1);
        // Forced again with that token rejected: a real refresh with the stored (rotated)
        // refresh token, which the simulator accepts.
        let again = manager.force_refresh().await.unwrap();
        assert_ne!(again, forced);
        assert_eq!(refreshes(&sim), 2);
        sim.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_revoked_refresh_token_is_an_error_naming_login() {
        let sim = Simulator::start(SimConfig::default().device_poll_interval_secs(1))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let manager = signed_in(&sim, dir.path()).await;
        expire_stored(&manager);
        sim.revoke_refresh_tokens();
        let err = another_process(&manager, dir.path())
            .access_token(DEFAULT_MIN_VALID)
            .await
            .unwrap_err();
        assert!(matches!(err, TokenError::Refresh { .. }), "{err:?}");
        use crate::sysexits::HasSysexit;
        assert_eq!(err.sysexit(), crate::Sysexit::NoPerm);
        let chain = format!("{:#}", DisplayChain(&err));
        assert!(chain.contains("mailgate login dev"), "{chain}");
        // Nothing was overwritten: the stored set is as it was.
        assert!(manager.load().unwrap().unwrap().refresh_token.is_some());
        sim.shutdown().await;
    }

    /// Formats an error with its sources, as the CLI does.
    struct DisplayChain<'a>(&'a (dyn std::error::Error + 'static));

    impl std::fmt::Display for DisplayChain<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{}", self.0)?;
            let mut cur = self.0.source();
            while let Some(e) = cur {
                write!(f, ": {e}")?;
                cur = e.source();
            }
            if let Some(d) = crate::diagnose::of_error(self.0.source().unwrap_or(self.0)) {
                write!(f, "\n{d}")?;
            }
            Ok(())
        }
    }
}
