//! `mailgate demo`: the whole job on the embedded simulator, with no configuration, network or
//! tenant: sign in, send a message with an attachment, show what the mailbox received and the SMTP
//! transcript, then provoke two common failures and show their diagnoses.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use m365_sim::{contoso, SimConfig, Simulator};
use mailgate::config::Config;
use mailgate::message::{Attachment, Draft, Mailbox};
use mailgate::oauth::{open_in_browser, AuthorizationOptions, Flow, OAuthClient};
use mailgate::send::{AccountSender, SendError};
use mailgate::tokens::file::write_private_atomic;
use mailgate::tokens::{TokenManager, TokenSet};
use mailgate::Sysexit;

use crate::exit::fail;
use crate::Globals;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Sign in with your real browser on the simulator's sign-in page instead of letting the
    /// simulator approve at once.
    #[arg(long)]
    pub browser: bool,
    /// Keep the demo's config, tokens and delivered mail in this directory (default: a temp dir
    /// removed at the end).
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
}

const ACCOUNT: &str = "demo";

pub fn run(args: Args, _globals: &Globals) -> anyhow::Result<()> {
    let temp = tempfile::Builder::new()
        .prefix("mailgate-demo-")
        .tempdir()?;
    let dir = match &args.keep {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.clone()
        }
        None => temp.path().to_owned(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(demo(&dir, args.browser))
}

fn step(n: u32, title: &str) {
    println!("\n== {n}. {title}");
}

async fn demo(dir: &Path, browser: bool) -> anyhow::Result<()> {
    let sim = Simulator::start(
        SimConfig::default()
            .auto_approve(!browser)
            .mail_dir(dir.join("mailbox")),
    )
    .await
    .map_err(|e| fail(Sysexit::Unavailable, e))?;
    println!(
        "mailgate demo: an embedded Microsoft 365 simulator is running on {} (identity) and {} (SMTP).",
        sim.http_base(),
        sim.smtp_addr()
    );
    println!("Nothing here talks to Microsoft; the tenant is the simulator's Contoso.");

    let config = write_demo_config(&sim, dir)?;
    let account = config.account(Some(ACCOUNT))?;

    step(
        1,
        "Sign in (authorization code + PKCE, redirect to a loopback listener)",
    );
    let client = OAuthClient::new(account.oauth_endpoints()?)?.with_account(ACCOUNT);
    let pending = client
        .start_authorization(&AuthorizationOptions::default().with_login_hint(Some(contoso::ALICE)))
        .await?;
    println!("Authorization URL:\n{}", pending.url());
    if browser {
        println!("Opening your browser; approve the sign-in there.");
        if let Err(e) = open_in_browser(pending.url()) {
            println!("Could not open a browser ({e}); open the URL above yourself.");
        }
    } else {
        // The simulator approves at once; a small HTTP client plays the browser and follows the
        // redirect to mailgate's loopback listener.
        let url = pending.url().to_owned();
        tokio::spawn(async move {
            if let Ok(http) = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
            {
                let _ = http.get(&url).send().await;
            }
        });
    }
    let response = pending.finish(Duration::from_secs(300)).await?;
    let tokens = TokenManager::new(&config, account)?;
    tokens
        .save(&TokenSet::from_response(
            Flow::AuthorizationCode,
            &account.client_id,
            &response,
        ))
        .await?;
    println!(
        "Signed in as {} with scopes: {}",
        response.identity.as_deref().unwrap_or("(unknown)"),
        response.scopes.join(" ")
    );
    let minutes = (response.expires_at - time::OffsetDateTime::now_utc()).whole_minutes();
    println!(
        "Access token valid for {minutes} more minutes; the refresh token is stored in {}.",
        tokens.location()
    );

    step(
        2,
        "Send a message with an attachment (SMTP, STARTTLS, XOAUTH2)",
    );
    let sender = AccountSender::new(&config, account)?;
    let report_csv = "date,files,bytes\n2026-11-29,42,1048576\n";
    let message = Draft {
        from: Some(Mailbox::with_name("Alice Larsen", contoso::ALICE)),
        to: vec![Mailbox::new(contoso::BOB)],
        subject: Some("Nightly transfer report — 42 files".into()),
        text: Some("Hello Bob,\n\nlast night's transfer moved 42 files (1 MiB). The report is attached.\n\nAlice\n".into()),
        attachments: vec![Attachment::new("report.csv", "text/csv", report_csv.as_bytes().to_vec())],
        ..Draft::default()
    }
    .build()?;
    let report = sender.send(&message).await?;
    println!(
        "Delivered to {} — server reply: {}",
        report.outcome.accepted.join(", "),
        report.outcome.reply
    );

    step(3, "The message as the simulator's mailbox received it");
    let stored = sim
        .messages()
        .into_iter()
        .last()
        .context("the simulator stored no message")?;
    println!(
        "Envelope: MAIL FROM:<{}> RCPT TO:<{}> (authenticated as {})",
        stored.mail_from,
        stored.rcpt_to.join(">, <"),
        stored.auth_user
    );
    for line in stored.text().lines().take(40) {
        println!("  | {line}");
    }

    step(4, "The SMTP transcript (the token is redacted)");
    for line in sender.transcript().lines() {
        println!("  {line}");
    }

    step(
        5,
        "A diagnosed failure: Authenticated SMTP disabled for the mailbox",
    );
    sim.with_directory(|d| {
        if let Some(u) = d.user_mut(contoso::ALICE) {
            u.smtp_auth_enabled = false;
        }
    });
    show_failure(sender.send(&message).await)?;
    sim.with_directory(|d| {
        if let Some(u) = d.user_mut(contoso::ALICE) {
            u.smtp_auth_enabled = true;
        }
    });

    step(
        6,
        "A diagnosed failure: sending as a shared mailbox without Send As",
    );
    let as_support = Draft {
        from: Some(Mailbox::with_name("Contoso Support", contoso::SUPPORT)),
        to: vec![Mailbox::new(contoso::BOB)],
        subject: Some("Ticket 4711 resolved".into()),
        text: Some("Your ticket was resolved.\n".into()),
        ..Draft::default()
    }
    .build()?;
    show_failure(sender.send(&as_support).await)?;

    println!(
        "\nDone. With a real tenant: `mailgate init`, `mailgate login`, `mailgate test` (see README)."
    );
    sim.shutdown().await;
    Ok(())
}

/// Prints the error and its diagnosis; a send that unexpectedly works is a failed demo.
fn show_failure(result: Result<mailgate::send::SendReport, SendError>) -> anyhow::Result<()> {
    match result {
        Ok(_) => bail!("the simulator accepted a message it should have refused"),
        Err(e) => {
            println!("mailgate: {e}");
            match e.diagnosis() {
                Some(d) => println!("\n{d}"),
                None => bail!("no diagnosis for: {e}"),
            }
            Ok(())
        }
    }
}

/// A throwaway config: one office365 account pointing at the simulator, tokens in a file.
fn write_demo_config(sim: &Simulator, dir: &Path) -> anyhow::Result<Config> {
    let ca = dir.join("sim-ca.pem");
    sim.write_ca_file(&ca)?;
    let tenant = contoso::TENANT_DOMAIN;
    let text = format!(
        "state_dir = {state:?}\ntoken_store = \"file\"\ndefault_account = \"{ACCOUNT}\"\n\n\
         [accounts.{ACCOUNT}]\nprovider = \"office365\"\ntenant = \"{tenant}\"\n\
         client_id = \"{id}\"\nclient_secret = \"{secret}\"\nuser = \"{user}\"\n\
         authorize_url = \"{authorize}\"\ntoken_url = \"{token}\"\nredirect_port = 0\n\
         smtp_host = \"127.0.0.1\"\nsmtp_port = {port}\nsmtp_security = \"starttls\"\nca_file = {ca:?}\n",
        state = dir.join("state").display().to_string(),
        id = contoso::WEB_APP_ID,
        secret = contoso::WEB_APP_SECRET,
        user = contoso::ALICE,
        authorize = sim.authorize_url(tenant),
        token = sim.token_url(tenant),
        port = sim.smtp_addr().port(),
        ca = ca.display().to_string(),
    );
    let path = dir.join("config.toml");
    // It holds the (simulator's) client secret: private, like any real config with a secret.
    write_private_atomic(&path, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(Config::load_file(&path)?)
}
