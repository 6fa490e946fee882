//! `mailgate relay`: the local SMTP relay for devices that cannot do OAuth2 (`run`, the
//! default), and `add-user`, which writes a relay user's password hash into the config.

use std::io::{BufRead, IsTerminal};

use anyhow::Context as _;
use mailgate::config::edit::ConfigEditor;
use mailgate::config::{paths, Config};
use mailgate::relay::auth::hash_password;
use mailgate::relay::config::valid_user_name;
use mailgate::relay::Relay;
use mailgate::{Secret, Sysexit};

use crate::exit::fail;
use crate::Globals;

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Sub>,
}

#[derive(clap::Subcommand, Debug)]
pub enum Sub {
    /// Run the relay in the foreground (the default): accept mail on the `[relay]` listeners,
    /// spool it durably and send it through the accounts. Stops cleanly on Ctrl-C or SIGTERM.
    Run,
    /// Create or replace a relay user for AUTH PLAIN/LOGIN: the argon2 hash of the password is
    /// written into `[relay.users]` of the config (comments are kept).
    AddUser(AddUserArgs),
}

#[derive(clap::Args, Debug)]
pub struct AddUserArgs {
    /// The user name devices log in with.
    pub name: String,
    /// Read the password from the first line of standard input instead of prompting.
    #[arg(long)]
    pub password_stdin: bool,
}

pub fn run(args: Args, globals: &Globals) -> anyhow::Result<()> {
    match args.command.unwrap_or(Sub::Run) {
        Sub::Run => run_relay(globals),
        Sub::AddUser(a) => add_user(a, globals),
    }
}

fn run_relay(globals: &Globals) -> anyhow::Result<()> {
    let config = Config::load(globals.config.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("mailgate-relay")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let relay = Relay::start(&config).await?;
        let tls = if relay.starttls() { " (STARTTLS)" } else { "" };
        for (addr, implicit) in relay.addresses() {
            if implicit {
                println!("mailgate relay: listening on {addr} (TLS)");
            } else {
                println!("mailgate relay: listening on {addr}{tls}");
            }
        }
        let counts = relay.spool().counts()?;
        println!(
            "mailgate relay: spool {} ({} queued, {} deferred, {} failed); accounts: {}",
            relay.spool().dir().display(),
            counts.new + counts.active,
            counts.deferred,
            counts.failed,
            config
                .accounts
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        relay.run(shutdown_signal()).await?;
        println!("mailgate relay: stopped");
        Ok(())
    })
}

/// Completes on Ctrl-C, and on SIGTERM (Unix: systemd's stop) or a console close/shutdown event
/// (Windows: a service stop through a wrapper, a logoff).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(windows)]
    {
        use tokio::signal::windows;
        let close = windows::ctrl_close();
        let shutdown = windows::ctrl_shutdown();
        match (close, shutdown) {
            (Ok(mut close), Ok(mut shutdown)) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = close.recv() => {}
                    _ = shutdown.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn read_password(args: &AddUserArgs) -> anyhow::Result<Secret> {
    let password = if args.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else {
        if !std::io::stdin().is_terminal() {
            return Err(fail(
                Sysexit::Usage,
                anyhow::anyhow!(
                    "no terminal to ask for the password: pass --password-stdin and write it to \
                     standard input"
                ),
            ));
        }
        let first = rpassword::prompt_password(format!("Password for relay user {}: ", args.name))
            .context("cannot read the password")?;
        let again = rpassword::prompt_password("Again: ").context("cannot read the password")?;
        if first != again {
            return Err(fail(
                Sysexit::DataErr,
                anyhow::anyhow!("the two passwords differ; nothing was changed"),
            ));
        }
        first
    };
    if password.is_empty() {
        return Err(fail(
            Sysexit::DataErr,
            anyhow::anyhow!("the password is empty; nothing was changed"),
        ));
    }
    if password.chars().count() < 8 {
        eprintln!(
            "mailgate: warning: a password of fewer than 8 characters is easy to guess; the relay \
             only takes passwords over TLS or from loopback, but consider a longer one"
        );
    }
    Ok(Secret::new(password))
}

fn add_user(args: AddUserArgs, globals: &Globals) -> anyhow::Result<()> {
    if !valid_user_name(&args.name) {
        return Err(fail(
            Sysexit::Usage,
            anyhow::anyhow!(
                "{:?} is not a valid user name: use letters, digits, '-', '_', '.' and '@' (up to \
                 64)",
                args.name
            ),
        ));
    }
    let path = paths::config_path(globals.config.as_deref())?;
    let mut editor = ConfigEditor::open(&path)?;
    if !editor.existed() {
        return Err(fail(
            Sysexit::Config,
            anyhow::anyhow!(
                "no config file at {}: run `mailgate init` first to add an account",
                path.display()
            ),
        ));
    }
    let password = read_password(&args)?;
    let hash = hash_password(&password);
    let table = editor.table_mut(&["relay", "users"]);
    let replaced = match table.get_mut(&args.name).and_then(|i| i.as_value_mut()) {
        Some(old) => {
            let decor = old.decor().clone();
            let mut value = toml_edit::Value::from(hash);
            *value.decor_mut() = decor;
            *old = value;
            true
        }
        None => {
            table.insert(&args.name, toml_edit::value(hash));
            false
        }
    };
    editor.save()?;
    println!(
        "{} relay user {} in {} (argon2 hash; the password itself is not stored).",
        if replaced { "Updated" } else { "Added" },
        args.name,
        path.display()
    );
    println!(
        "Devices log in with AUTH PLAIN or LOGIN, over STARTTLS/TLS or from this machine; restart \
         the relay to apply."
    );
    Ok(())
}
