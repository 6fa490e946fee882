//! `mailgate sim`: the embedded Microsoft 365 simulator in the foreground, for trying mailgate (or
//! any other client) without a tenant.

use std::path::PathBuf;

use anyhow::Context;
use m365_sim::{contoso, Mode, SimConfig, Simulator};
use mailgate::Sysexit;

use crate::exit::fail;
use crate::Globals;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Simulator settings (directory, faults, limits) from a TOML file.
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Imitate Gmail instead of Microsoft 365.
    #[arg(long)]
    pub gmail: bool,
    /// Port of the identity platform (HTTP); 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    pub http_port: u16,
    /// Port of SMTP submission (STARTTLS); 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    pub smtp_port: u16,
    /// Also listen for implicit-TLS SMTP on this port.
    #[arg(long)]
    pub smtps_port: Option<u16>,
    /// Show the sign-in page (approve/deny) instead of approving every sign-in at once.
    #[arg(long)]
    pub interactive: bool,
    /// Keep delivered messages here (default: a temp dir removed on exit).
    #[arg(long, value_name = "DIR")]
    pub mail_dir: Option<PathBuf>,
    /// Write the CA certificate clients must trust here (default: in the state dir).
    #[arg(long, value_name = "FILE")]
    pub ca_out: Option<PathBuf>,
}

pub fn run(args: Args, _globals: &Globals) -> anyhow::Result<()> {
    let mut config = match &args.file {
        Some(f) => SimConfig::from_file(f).map_err(|e| fail(Sysexit::Config, e))?,
        None if args.gmail => SimConfig::gmail(),
        None => SimConfig::default(),
    };
    if args.file.is_none() || args.http_port != 0 {
        config.http_listen = format!("127.0.0.1:{}", args.http_port);
    }
    if args.file.is_none() || args.smtp_port != 0 {
        config.smtp_listen = format!("127.0.0.1:{}", args.smtp_port);
    }
    if let Some(p) = args.smtps_port {
        config.smtps_listen = Some(format!("127.0.0.1:{p}"));
    }
    if args.interactive {
        config.auto_approve = false;
    }
    if let Some(d) = &args.mail_dir {
        config.mail_dir = Some(d.clone());
    }
    let ca_out = match args.ca_out {
        Some(p) => p,
        None => std::env::temp_dir().join(format!("m365-sim-ca-{}.pem", std::process::id())),
    };

    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async move {
        let sim = Simulator::start(config)
            .await
            .map_err(|e| fail(Sysexit::Unavailable, e))?;
        sim.write_ca_file(&ca_out)
            .with_context(|| format!("writing the CA file {}", ca_out.display()))?;
        println!("{}", banner(&sim, &ca_out));
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
        eprintln!("stopping the simulator");
        sim.shutdown().await;
        let _ = std::fs::remove_file(&ca_out);
        Ok(())
    })
}

/// What `mailgate sim` prints: endpoints, the CA file, and accounts ready to paste.
pub fn banner(sim: &Simulator, ca_file: &std::path::Path) -> String {
    let t = contoso::TENANT_DOMAIN;
    let provider = match sim.mode() {
        Mode::Microsoft => "office365",
        Mode::Gmail => "gmail",
    };
    let account = |name: &str, flow: &str| {
        format!(
            "[accounts.{name}]\n\
             provider = \"{provider}\"\n\
             tenant = \"{t}\"\n\
             flow = \"{flow}\"\n\
             client_id = \"{id}\"\n\
             client_secret = \"{secret}\"\n\
             user = \"{user}\"\n\
             authorize_url = \"{authorize}\"\n\
             token_url = \"{token}\"\n\
             device_authorization_url = \"{device}\"\n\
             redirect_port = 0\n\
             smtp_host = \"127.0.0.1\"\n\
             smtp_port = {smtp}\n\
             smtp_security = \"starttls\"\n\
             ca_file = \"{ca}\"\n",
            id = contoso::WEB_APP_ID,
            secret = contoso::WEB_APP_SECRET,
            user = contoso::ALICE,
            authorize = sim.authorize_url(t),
            token = sim.token_url(t),
            device = sim.devicecode_url(t),
            smtp = sim.smtp_addr().port(),
            ca = ca_file.display(),
        )
    };
    let mut s = format!(
        "Microsoft 365 simulator running ({mode:?} mode). Ctrl-C stops it.\n\n\
         Identity platform  {http}\n  authorize        {authorize}\n  token            {token}\n  \
         device code      {device}\n  device login     {devicelogin}\n\
         SMTP (STARTTLS)    127.0.0.1:{smtp}  (stands for {host}:587)\n",
        mode = sim.mode(),
        http = sim.http_base(),
        authorize = sim.authorize_url(t),
        token = sim.token_url(t),
        device = sim.devicecode_url(t),
        devicelogin = sim.device_login_url(),
        smtp = sim.smtp_addr().port(),
        host = sim.hostname(),
    );
    if let Some(a) = sim.smtps_addr() {
        s.push_str(&format!("SMTP (TLS)         {a}\n"));
    }
    s.push_str(&format!(
        "CA file            {}\nMail stored in     {}\n\n\
         Users: {alice} (Send As on {sales}; member of {support} without Send As), {bob}\n\
         Apps:  {web} (confidential, secret below), {public} (public client, device code)\n\n\
         # Accounts for mailgate's config.toml:\n{}\n{}",
        ca_file.display(),
        sim.mail_dir().display(),
        account("sim", "authorization_code"),
        account("sim-app", "client_credentials"),
        alice = contoso::ALICE,
        sales = contoso::SALES,
        support = contoso::SUPPORT,
        bob = contoso::BOB,
        web = contoso::WEB_APP_ID,
        public = contoso::PUBLIC_APP_ID,
    ));
    s
}
