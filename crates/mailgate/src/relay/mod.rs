//! `mailgate relay`: a local SMTP server for devices and programs that cannot do OAuth2
//! (printers, scanners, old scripts), with a durable spool and delivery upstream through
//! mailgate's SMTP client.
//!
//! - [`server`]: the SMTP server side (who may send, limits, pipelining, STARTTLS, AUTH);
//! - [`crate::spool`]: the durable queue (a message is on disk before the client gets 250);
//! - `delivery`: per-account workers (connection limits, pacing, retries, bounces), on a thread
//!   of their own at a lower CPU priority (see [`Relay::run`]);
//! - `keepalive`: refreshes tokens ahead of expiry and uses refresh tokens weekly;
//! - [`routing`]: which account sends which sender's mail, and the `From:` rewrite;
//! - [`auth`]: relay users (argon2 hashes) for AUTH PLAIN/LOGIN;
//! - [`config`]: the `[relay]` table.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let config = mailgate::config::Config::load(None)?;
//! let relay = mailgate::relay::Relay::start(&config).await?;
//! for (addr, tls) in relay.addresses() {
//!     println!("listening on {addr}{}", if tls { " (TLS)" } else { "" });
//! }
//! relay.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

pub mod auth;
pub mod config;
mod delivery;
mod keepalive;
mod notice;
pub mod routing;
pub mod server;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_rustls::TlsAcceptor;

pub use config::{NoticeCommand, RelayConfig, Route};

use crate::config::{Config, ConfigError};
use crate::spool::{Recovery, Spool, SpoolError, SpoolLock};
use crate::sysexits::HasSysexit;
use crate::tokens::{TokenError, TokenManager};
use crate::Sysexit;

/// How long a shutdown waits for client sessions to finish their transaction.
const SESSION_GRACE: Duration = Duration::from_secs(60);
/// How long a shutdown waits for upstream deliveries in flight.
const DELIVERY_GRACE: Duration = Duration::from_secs(120);

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The config is wrong.
    #[error(transparent)]
    Config(Box<ConfigError>),
    /// The config has no account to send through.
    #[error(
        "config {path}: the relay needs at least one account to send through; run `mailgate init`"
    )]
    NoAccounts { path: PathBuf },
    /// An account's token store cannot be opened.
    #[error("account {account}: {source}")]
    Account {
        account: String,
        #[source]
        source: Box<TokenError>,
    },
    /// A listen address cannot be bound.
    #[error("relay: cannot listen on {addr}: {source}{hint}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
        hint: String,
    },
    /// The TLS certificate or key cannot be used.
    #[error("relay: cannot use {path} for TLS: {message}")]
    Tls { path: PathBuf, message: String },
    /// The spool cannot be opened or is in use.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The delivery thread cannot be started.
    #[error("relay: cannot start the delivery thread: {0}")]
    Thread(std::io::Error),
}

impl From<ConfigError> for RelayError {
    fn from(e: ConfigError) -> RelayError {
        RelayError::Config(Box::new(e))
    }
}

impl HasSysexit for RelayError {
    fn sysexit(&self) -> Sysexit {
        match self {
            RelayError::Config(e) => e.sysexit(),
            RelayError::NoAccounts { .. } | RelayError::Tls { .. } => Sysexit::Config,
            RelayError::Account { source, .. } => source.sysexit(),
            RelayError::Listen { .. } => Sysexit::Unavailable,
            RelayError::Spool(e) => e.sysexit(),
            RelayError::Thread(_) => Sysexit::Unavailable,
        }
    }
}

/// A relay ready to run: listeners bound, spool recovered, accounts set up.
pub struct Relay {
    listeners: Vec<(TcpListener, bool)>,
    addresses: Vec<(SocketAddr, bool)>,
    ctx: Arc<server::ServerCtx>,
    shared: Arc<delivery::Shared>,
    queued: mpsc::UnboundedReceiver<server::Queued>,
    stop: watch::Sender<bool>,
    recovery: Recovery,
    _lock: SpoolLock,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("addresses", &self.addresses)
            .finish_non_exhaustive()
    }
}

fn load_tls(cfg: &RelayConfig) -> Result<Option<TlsAcceptor>, RelayError> {
    let (Some(cert), Some(key)) = (&cfg.tls_cert, &cfg.tls_key) else {
        return Ok(None);
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| RelayError::Tls {
            path: cert.clone(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(RelayError::Tls {
            path: cert.clone(),
            message: "it holds no PEM certificate".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| RelayError::Tls {
        path: key.clone(),
        message: format!("{e} (expected a PEM private key: PKCS#8, PKCS#1 or SEC1)"),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| RelayError::Tls {
            path: cert.clone(),
            message: e.to_string(),
        })?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| RelayError::Tls {
            path: cert.clone(),
            message: e.to_string(),
        })?;
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, RelayError> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    };
    let listen_err = |source: std::io::Error| {
        let hint = match source.kind() {
            std::io::ErrorKind::AddrInUse => {
                " (another program, or another mailgate relay, uses this port)".to_string()
            }
            std::io::ErrorKind::PermissionDenied if addr.port() < 1024 => format!(
                " (ports below 1024 need privileges: use e.g. {}:2525, or grant \
                 CAP_NET_BIND_SERVICE)",
                addr.ip()
            ),
            _ => String::new(),
        };
        RelayError::Listen { addr, source, hint }
    };
    let socket = socket.map_err(listen_err)?;
    #[cfg(unix)]
    socket.set_reuseaddr(true).map_err(listen_err)?;
    socket.bind(addr).map_err(listen_err)?;
    socket.listen(1024).map_err(listen_err)
}

impl Relay {
    /// Sets the relay up from `config` (its `[relay]` table, or the defaults when it has none):
    /// opens and recovers the spool (taking its lock), prepares every account and binds the
    /// listeners. Nothing is accepted or sent until [`Relay::run`].
    pub async fn start(config: &Config) -> Result<Relay, RelayError> {
        let cfg = Arc::new(config.relay.clone().unwrap_or_default());
        if config.accounts.is_empty() {
            return Err(RelayError::NoAccounts {
                path: config.path.clone(),
            });
        }
        let default = cfg
            .default_account
            .clone()
            .or_else(|| config.default_account.clone())
            .or_else(|| {
                (config.accounts.len() == 1)
                    .then(|| config.accounts.keys().next().cloned())
                    .flatten()
            });
        let router = routing::Router::new(cfg.routes.clone(), default);
        let mut accounts = BTreeMap::new();
        for (name, account) in &config.accounts {
            let tokens =
                TokenManager::new(config, account).map_err(|source| RelayError::Account {
                    account: name.clone(),
                    source: Box::new(source),
                })?;
            accounts.insert(
                name.clone(),
                Arc::new(delivery::AccountState::new(
                    account.clone(),
                    Arc::new(tokens),
                    &cfg.hostname,
                )),
            );
        }
        let spool_dir = cfg.spool_dir(&config.state_dir);
        let (spool, lock, recovery) = tokio::task::spawn_blocking(move || {
            let spool = Spool::open(spool_dir)?;
            let lock = spool.lock()?;
            let recovery = spool.recover(&lock)?;
            Ok::<_, SpoolError>((spool, lock, recovery))
        })
        .await
        .map_err(|e| SpoolError::Io {
            action: "open",
            path: PathBuf::from("spool"),
            source: std::io::Error::other(e.to_string()),
        })??;
        if !recovery.requeued.is_empty() {
            tracing::warn!(
                "relay: {} message(s) were being sent when the relay last stopped; they are sent \
                 again (their recipients may get them twice): {}",
                recovery.requeued.len(),
                recovery.requeued.join(", ")
            );
        }
        if !recovery.restored.is_empty() {
            tracing::info!(
                "relay: {} message(s) accepted just before the relay stopped were queued again \
                 from their message files: {}",
                recovery.restored.len(),
                recovery.restored.join(", ")
            );
        }
        for d in &recovery.damaged {
            tracing::error!("relay: damaged spool entry: {d}");
        }
        let spool = Arc::new(spool);
        let tls = load_tls(&cfg)?;
        let mut listeners = Vec::new();
        let mut addresses = Vec::new();
        for (addrs, implicit) in [(&cfg.listen, false), (&cfg.listen_tls, true)] {
            for addr in addrs {
                let l = bind(*addr).await?;
                let local = l.local_addr().map_err(|source| RelayError::Listen {
                    addr: *addr,
                    source,
                    hint: String::new(),
                })?;
                if !implicit && local.ip().is_unspecified() && cfg.users.is_empty() {
                    tracing::info!(
                        "relay: listening on {local}: only clients in allow_networks can send \
                         (no [relay.users])"
                    );
                }
                addresses.push((local, implicit));
                listeners.push((l, implicit));
            }
        }
        let (stop, stopped) = watch::channel(false);
        let (queued_tx, queued) = mpsc::unbounded_channel();
        let ctx = Arc::new(server::ServerCtx {
            cfg: cfg.clone(),
            users: auth::Users::new(cfg.users.clone()),
            router: router.clone(),
            spool: spool.clone(),
            queued: queued_tx,
            tls,
            shutdown: stopped.clone(),
        });
        let shared = Arc::new(delivery::Shared::new(spool, cfg, router, accounts, stopped));
        Ok(Relay {
            listeners,
            addresses,
            ctx,
            shared,
            queued,
            stop,
            recovery,
            _lock: lock,
        })
    }

    /// The bound addresses, each with whether it is an implicit-TLS listener.
    pub fn addresses(&self) -> Vec<(SocketAddr, bool)> {
        self.addresses.clone()
    }

    /// Whether STARTTLS is offered on the plain listeners.
    pub fn starttls(&self) -> bool {
        self.ctx.tls.is_some()
    }

    /// The spool.
    pub fn spool(&self) -> &Arc<Spool> {
        &self.ctx.spool
    }

    /// What recovery found at start.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// Accepts clients and delivers mail until `shutdown` completes; then stops accepting,
    /// lets sessions finish the transaction they are in (idle ones are told 421), lets
    /// deliveries in flight finish, and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), RelayError> {
        let Relay {
            listeners,
            ctx,
            shared,
            queued,
            stop,
            _lock,
            ..
        } = self;
        let max_clients = ctx.cfg.max_clients;
        let sessions = Arc::new(Semaphore::new(max_clients));
        let mut accept_tasks = Vec::new();
        for (listener, implicit) in listeners {
            let ctx = ctx.clone();
            let sessions = sessions.clone();
            let mut stopped = ctx.shutdown.clone();
            accept_tasks.push(tokio::spawn(async move {
                loop {
                    let permit = tokio::select! {
                        p = sessions.clone().acquire_owned() => match p {
                            Ok(p) => p,
                            Err(_) => return,
                        },
                        _ = stopped.wait_for(|s| *s) => return,
                    };
                    let accepted = tokio::select! {
                        a = listener.accept() => a,
                        _ = stopped.wait_for(|s| *s) => return,
                    };
                    match accepted {
                        Ok((tcp, peer)) => {
                            let ctx = ctx.clone();
                            tokio::spawn(async move {
                                server::handle_connection(ctx, tcp, peer, implicit).await;
                                drop(permit);
                            });
                        }
                        Err(e) => {
                            tracing::warn!("relay: accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }));
        }
        let delivery = spawn_delivery({
            let shared = shared.clone();
            async move {
                delivery::dispatch(shared.clone(), queued).await;
                if tokio::time::timeout(DELIVERY_GRACE, shared.join_workers())
                    .await
                    .is_err()
                {
                    tracing::warn!(
                        "relay: some deliveries did not finish in time; they are sent again at \
                         the next start"
                    );
                }
            }
        })?;
        let keepalive = tokio::spawn(keepalive::run(shared.clone()));

        shutdown.await;
        tracing::info!("relay: shutting down: finishing the transactions in progress");
        let _ = stop.send(true);
        for t in accept_tasks {
            let _ = t.await;
        }
        let all = u32::try_from(max_clients).unwrap_or(u32::MAX);
        if tokio::time::timeout(SESSION_GRACE, sessions.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!("relay: some client sessions did not finish in time; closing them");
        }
        let _ = delivery.await;
        let _ = keepalive.await;
        tracing::info!("relay: stopped");
        Ok(())
    }
}

/// Runs the delivery side (`fut`) on a runtime of its own, in a thread at a lower CPU priority,
/// as sendmail's `NiceQueueRun` does for its queue runners: a device waiting for its `250`
/// never waits behind upstream deliveries for the CPU, and deliveries use what the sessions
/// leave. The receiver completes when `fut` has finished.
fn spawn_delivery(
    fut: impl Future<Output = ()> + Send + 'static,
) -> Result<tokio::sync::oneshot::Receiver<()>, RelayError> {
    let (done, finished) = tokio::sync::oneshot::channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("mailgate-delivery")
        .build()
        .map_err(RelayError::Thread)?;
    std::thread::Builder::new()
        .name("mailgate-delivery".into())
        .spawn(move || {
            lower_thread_priority();
            runtime.block_on(fut);
            let _ = done.send(());
        })
        .map_err(RelayError::Thread)?;
    Ok(finished)
}

/// How much nicer than the sessions the delivery thread (and its blocking helpers) runs.
#[cfg(target_os = "linux")]
const DELIVERY_NICENESS: libc::c_int = 10;

/// Lowers the calling thread's CPU priority (Linux keeps a nice value per thread; threads it
/// starts inherit it). Elsewhere the delivery thread keeps the process's priority.
fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: getpriority/setpriority only read and change the calling thread's nice value.
    unsafe {
        let current = libc::getpriority(libc::PRIO_PROCESS, 0);
        libc::setpriority(libc::PRIO_PROCESS, 0, (current + DELIVERY_NICENESS).min(19));
    }
}
