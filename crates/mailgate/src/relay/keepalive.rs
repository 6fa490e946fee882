//! Keeps every account's tokens alive while the relay runs.
//!
//! Access tokens are refreshed ahead of expiry (`refresh_ahead`), so that a message never waits
//! for a token; a refresh token unused for `refresh_every` (a week by default) is used anyway,
//! so that a sender that rarely sends never reaches the provider's 90-day inactivity lapse. An
//! account that needs a new login is held (see [`super::delivery`]); the keepalive looks at it
//! again on every round and releases it as soon as a token can be had (after `mailgate login`).

use std::sync::Arc;
use std::time::Duration;

use super::delivery::{self, classify_account_error, AccountState, Shared};
use crate::oauth::Flow;
use crate::send::SendError;
use crate::sysexits::HasSysexit;
use crate::Sysexit;

/// How often the keepalive looks at each account: often enough to refresh ahead of expiry and
/// to notice a login soon, at most once a minute.
pub(crate) fn interval(shared: &Shared) -> Duration {
    (shared.cfg.refresh_ahead / 3)
        .min(shared.cfg.retry_initial.max(Duration::from_secs(1)))
        .clamp(Duration::from_millis(200), Duration::from_secs(60))
}

/// Runs until shutdown.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.clone();
    let every = interval(&shared);
    loop {
        for acct in shared.accounts.values() {
            if *shutdown.borrow() {
                return;
            }
            check(&shared, acct).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One look at one account.
async fn check(shared: &Arc<Shared>, acct: &Arc<AccountState>) {
    let stored = match acct.tokens.load() {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(account = %acct.name, "relay keepalive: cannot read tokens: {e}");
            None
        }
    };
    let held = acct.hold().is_some();
    // Nothing stored and not held: a delegated account that was never logged in is found out
    // by the first message (which holds it); do not hold an idle account here.
    if stored.is_none() && !held && acct.account.flow != Flow::ClientCredentials {
        return;
    }
    let weekly_due = stored.as_ref().is_some_and(|s| {
        s.refresh_token.is_some()
            && s.refresh_token_age()
                .and_then(|age| Duration::try_from(age).ok())
                .is_some_and(|age| age >= shared.cfg.refresh_every)
    });
    let expiring = stored
        .as_ref()
        .is_none_or(|s| s.access_token_valid_for(shared.cfg.refresh_ahead).is_none());
    if !(held || weekly_due || expiring) {
        return;
    }
    let result = if weekly_due && !held {
        tracing::info!(
            account = %acct.name,
            "relay keepalive: using the refresh token of account {} (unused for {}) so that it \
             does not lapse",
            acct.name,
            humantime::format_duration(shared.cfg.refresh_every)
        );
        acct.tokens.force_refresh().await
    } else {
        acct.tokens.access_token(shared.cfg.refresh_ahead).await
    };
    match result {
        Ok(_) => {
            if held {
                delivery::release(shared, acct).await;
            } else {
                delivery::clear_backoff(acct);
            }
        }
        Err(e) if e.sysexit() == Sysexit::TempFail => {
            tracing::warn!(
                account = %acct.name,
                "relay keepalive: cannot refresh the token of account {} now (will retry): {e}",
                acct.name
            );
        }
        Err(e) => {
            if held {
                return;
            }
            // Hold the account now rather than when the next message fails.
            let err = SendError::from(e);
            let (text, hold) = classify_account_error(acct, &err);
            if let Some(h) = hold {
                tracing::error!(account = %acct.name, "relay keepalive: {} {}", h.reason, h.fix);
                delivery::hold(shared, acct, h, &text).await;
            }
        }
    }
}
