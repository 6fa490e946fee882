//! An embedded Microsoft 365 simulator: the Entra ID identity platform (authorize, token and device
//! code endpoints) and SMTP submission (smtp.office365.com), on 127.0.0.1.
//!
//! It imitates the real services closely enough — endpoints, JSON shapes, AADSTS codes, reply
//! lines — that a diagnosis learned against it holds against Microsoft. Every mailgate test and
//! `mailgate demo` run against it; no tenant is needed.
//!
//! ```no_run
//! # async fn example() -> Result<(), m365_sim::SimError> {
//! use m365_sim::{contoso, SimConfig, Simulator};
//! let sim = Simulator::start(SimConfig::default()).await?;
//! println!("token endpoint: {}", sim.token_url(contoso::TENANT_DOMAIN));
//! println!("smtp: {}", sim.smtp_addr());
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

pub mod config;
pub mod contoso;
pub mod directory;
pub mod events;
pub mod faults;
mod identity;
mod mailbox;
mod smtp;
pub mod tls;
pub mod tokens;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{Mode, SimConfig};
pub use directory::{App, Directory, SharedMailbox, User};
pub use events::{Event, Logged};
pub use faults::{EndpointFault, Faults, ForcedReply, SmtpStep};
pub use mailbox::DeliveredMessage;

/// Why the simulator could not start or do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot create the simulator's certificates: {0}")]
    Tls(String),
    #[error("simulator config {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("simulator mail directory {path}: {source}")]
    MailDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the simulator's runtime: {0}")]
    Runtime(std::io::Error),
}

/// State shared by the HTTP and SMTP sides.
pub(crate) struct State {
    pub config: SimConfig,
    pub directory: RwLock<Directory>,
    pub faults: RwLock<Faults>,
    pub tokens: Mutex<tokens::TokenRegistry>,
    pub events: Mutex<Vec<Logged>>,
    pub mailbox: mailbox::Mailbox,
    /// Open authenticated SMTP connections per mailbox (lower-case address).
    pub smtp_connections: Mutex<HashMap<String, usize>>,
    /// Recipients submitted today per mailbox (lower-case address).
    pub recipients_today: Mutex<HashMap<String, usize>>,
    pub tls: tls::SimTls,
    /// `http://127.0.0.1:PORT`, the identity platform's base URL.
    pub http_base: String,
}

impl State {
    pub fn log(&self, event: Event) {
        tracing::debug!(?event, "sim event");
        self.events.lock().unwrap().push(Logged {
            at: OffsetDateTime::now_utc(),
            event,
        });
    }

    pub fn faults(&self) -> Faults {
        self.faults.read().unwrap().clone()
    }
}

/// A running simulator. Stop it with [`Simulator::shutdown`] (or drop it).
pub struct Simulator {
    state: Arc<State>,
    http_addr: SocketAddr,
    smtp_addr: SocketAddr,
    smtps_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Set when started with [`Simulator::start_blocking`]: the runtime the servers run on.
    runtime: Option<tokio::runtime::Runtime>,
}

async fn bind(addr: &str) -> Result<TcpListener, SimError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| SimError::Listen {
            addr: addr.to_string(),
            source,
        })
}

impl Simulator {
    /// Starts the identity platform and SMTP listeners on the current Tokio runtime.
    pub async fn start(config: SimConfig) -> Result<Simulator, SimError> {
        let http = bind(&config.http_listen).await?;
        let smtp = bind(&config.smtp_listen).await?;
        let smtps = match &config.smtps_listen {
            Some(a) => Some(bind(a).await?),
            None => None,
        };
        let local = |l: &TcpListener, addr: &str| {
            l.local_addr().map_err(|source| SimError::Listen {
                addr: addr.to_string(),
                source,
            })
        };
        let http_addr = local(&http, &config.http_listen)?;
        let smtp_addr = local(&smtp, &config.smtp_listen)?;
        let smtps_addr = match &smtps {
            Some(l) => Some(local(l, "smtps")?),
            None => None,
        };
        let tls = tls::SimTls::generate(&[config.hostname.as_str()])?;
        let mailbox = mailbox::Mailbox::open(config.mail_dir.as_deref())?;
        let state = Arc::new(State {
            directory: RwLock::new(config.directory.clone()),
            faults: RwLock::new(config.faults.clone()),
            tokens: Mutex::default(),
            events: Mutex::default(),
            mailbox,
            smtp_connections: Mutex::default(),
            recipients_today: Mutex::default(),
            tls,
            http_base: format!("http://{http_addr}"),
            config,
        });
        let (stop, stopped) = watch::channel(false);
        let mut tasks = vec![
            tokio::spawn(identity::serve(http, state.clone(), stopped.clone())),
            tokio::spawn(smtp::serve(smtp, state.clone(), false, stopped.clone())),
        ];
        if let Some(l) = smtps {
            tasks.push(tokio::spawn(smtp::serve(l, state.clone(), true, stopped)));
        }
        Ok(Simulator {
            state,
            http_addr,
            smtp_addr,
            smtps_addr,
            stop,
            tasks,
            runtime: None,
        })
    }

    /// Starts the simulator on a runtime of its own, for synchronous tests and callers.
    pub fn start_blocking(config: SimConfig) -> Result<Simulator, SimError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("m365-sim")
            .enable_all()
            .build()
            .map_err(SimError::Runtime)?;
        let mut sim = runtime.block_on(Simulator::start(config))?;
        sim.runtime = Some(runtime);
        Ok(sim)
    }

    /// Stops every listener and waits for the servers to end.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
    }

    /// `http://127.0.0.1:PORT`: the identity platform (stands for `https://login.microsoftonline.com`).
    pub fn http_base(&self) -> &str {
        &self.state.http_base
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The authorize endpoint for `tenant` (`common`, `organizations`, a domain or the tenant id).
    pub fn authorize_url(&self, tenant: &str) -> String {
        match self.state.config.mode {
            Mode::Microsoft => format!("{}/{tenant}/oauth2/v2.0/authorize", self.http_base()),
            Mode::Gmail => format!("{}/o/oauth2/v2/auth", self.http_base()),
        }
    }

    /// The token endpoint for `tenant`.
    pub fn token_url(&self, tenant: &str) -> String {
        match self.state.config.mode {
            Mode::Microsoft => format!("{}/{tenant}/oauth2/v2.0/token", self.http_base()),
            Mode::Gmail => format!("{}/token", self.http_base()),
        }
    }

    /// The device authorization endpoint for `tenant`.
    pub fn devicecode_url(&self, tenant: &str) -> String {
        match self.state.config.mode {
            Mode::Microsoft => format!("{}/{tenant}/oauth2/v2.0/devicecode", self.http_base()),
            Mode::Gmail => format!("{}/device/code", self.http_base()),
        }
    }

    /// The page where a user enters a device code (stands for `https://microsoft.com/devicelogin`).
    pub fn device_login_url(&self) -> String {
        format!("{}/devicelogin", self.http_base())
    }

    /// SMTP submission with STARTTLS (stands for `smtp.office365.com:587`).
    pub fn smtp_addr(&self) -> SocketAddr {
        self.smtp_addr
    }

    /// The implicit-TLS SMTP port, when configured.
    pub fn smtps_addr(&self) -> Option<SocketAddr> {
        self.smtps_addr
    }

    /// The host name the SMTP side presents.
    pub fn hostname(&self) -> &str {
        &self.state.config.hostname
    }

    pub fn mode(&self) -> Mode {
        self.state.config.mode
    }

    /// The CA certificate (PEM) that signed the SMTP server's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.state.tls.ca_pem
    }

    /// Writes the CA certificate to `path`, for clients' `ca_file`.
    pub fn write_ca_file(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.ca_pem())
    }

    /// Where delivered messages are stored.
    pub fn mail_dir(&self) -> &Path {
        self.state.mailbox.dir()
    }

    /// Everything logged so far, oldest first.
    pub fn events(&self) -> Vec<Logged> {
        self.state.events.lock().unwrap().clone()
    }

    /// Messages accepted with 250, oldest first.
    pub fn messages(&self) -> Vec<DeliveredMessage> {
        self.state.mailbox.list()
    }

    pub fn faults(&self) -> Faults {
        self.state.faults()
    }

    /// Changes the faults while running.
    pub fn set_faults(&self, change: impl FnOnce(&mut Faults)) {
        change(&mut self.state.faults.write().unwrap());
    }

    /// Changes the directory while running (toggle Authenticated SMTP, grant Send As...).
    pub fn with_directory<R>(&self, change: impl FnOnce(&mut Directory) -> R) -> R {
        change(&mut self.state.directory.write().unwrap())
    }

    /// Approves a pending device code as `user`, as if they had entered it on the device login
    /// page. Returns false when no pending code has that user code.
    pub fn approve_device_code(&self, user_code: &str, user: &str) -> bool {
        self.set_device_state(
            user_code,
            tokens::DeviceState::Approved { user: user.into() },
        )
    }

    /// Declines a pending device code.
    pub fn decline_device_code(&self, user_code: &str) -> bool {
        self.set_device_state(user_code, tokens::DeviceState::Declined)
    }

    fn set_device_state(&self, user_code: &str, new: tokens::DeviceState) -> bool {
        let mut reg = self.state.tokens.lock().unwrap();
        match reg.devices.values_mut().find(|d| {
            d.user_code.eq_ignore_ascii_case(user_code) && d.state == tokens::DeviceState::Pending
        }) {
            Some(d) => {
                d.state = new;
                true
            }
            None => false,
        }
    }

    /// Issues an access token as the token endpoint would, without an HTTP round trip (test
    /// support). `scopes` are the requested scopes (`https://outlook.office.com/SMTP.Send`,
    /// `https://outlook.office365.com/.default`, `https://mail.google.com/`...); the audience
    /// and the short `scp` names follow from them ([`tokens::scope_target`]). With `user` `None`
    /// and a `.default` scope the token is app-only and carries the app's `app_permissions` as
    /// roles. A zero `lifetime` gives a token that is already expired.
    ///
    /// # Panics
    /// When `scopes` is empty or names more than one resource: the token endpoint would refuse.
    pub fn mint_access_token(
        &self,
        client_id: &str,
        user: Option<&str>,
        scopes: &[&str],
        lifetime: std::time::Duration,
    ) -> String {
        let target = tokens::scope_target(scopes)
            .unwrap_or_else(|e| panic!("mint_access_token({scopes:?}): {e}"));
        let (delegated, roles, tenant_id) = {
            let dir = self.state.directory.read().unwrap();
            let app = dir.app(client_id);
            let roles = match (user, target.default_scope, app) {
                (None, true, Some(app)) => app.app_permissions.clone(),
                _ => Vec::new(),
            };
            let mut delegated = target.scopes.clone();
            if let (Some(_), true, Some(app)) = (user, target.default_scope, app) {
                for consented in &app.consented_scopes {
                    if let Some((aud, name)) = tokens::split_scope(consented) {
                        if aud == target.audience && !delegated.contains(&name) {
                            delegated.push(name);
                        }
                    }
                }
            }
            if user.is_none() {
                delegated.clear();
            }
            (delegated, roles, dir.tenant_id.clone())
        };
        let token = tokens::AccessToken {
            client_id: client_id.into(),
            user: user.map(str::to_string),
            audience: target.audience,
            scopes: delegated,
            roles,
            expires_at: OffsetDateTime::now_utc() + lifetime,
        };
        self.state
            .tokens
            .lock()
            .unwrap()
            .issue_access(token, &tenant_id)
    }

    /// Makes every access token issued so far expire now.
    pub fn expire_access_tokens(&self) {
        self.state.tokens.lock().unwrap().expire_access_tokens();
    }

    /// Ages every authorization code past its ten-minute lifetime.
    pub fn expire_authorization_codes(&self) {
        self.state.tokens.lock().unwrap().expire_codes();
    }

    /// Makes every device code expire now.
    pub fn expire_device_codes(&self) {
        self.state.tokens.lock().unwrap().expire_device_codes();
    }

    /// Revokes every refresh token (as a password change does).
    pub fn revoke_refresh_tokens(&self) {
        for rt in self.state.tokens.lock().unwrap().refresh.values_mut() {
            rt.revoked = true;
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
