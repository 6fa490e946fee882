//! The `mailgate` command: a thin layer over the `mailgate` library. Each subcommand lives in
//! `commands/`, parses its own arguments and returns an error that [`exit`] maps to a sysexits
//! status.

mod commands;
mod exit;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Send mail through Microsoft 365, Gmail and any OAuth2 SMTP server.
#[derive(Parser, Debug)]
#[command(name = "mailgate", version, about, propagate_version = true)]
pub struct Cli {
    /// Config file (default: $MAILGATE_CONFIG, else the platform config dir, e.g.
    /// ~/.config/mailgate/config.toml).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print protocol transcripts and HTTP exchanges (secrets are redacted).
    #[arg(long, global = true)]
    pub debug: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create or update an account interactively (or from flags).
    Init(commands::init::Args),
    /// Sign in and store the tokens of an account.
    Login(commands::login::Args),
    /// Print a valid access token (refreshing it first when needed).
    Token(commands::token::Args),
    /// Show accounts, their tokens and when they expire.
    Status(commands::status::Args),
    /// Forget the stored tokens of an account.
    Logout(commands::logout::Args),
    /// Send a message.
    Send(commands::send::Args),
    /// Check an account step by step, ending with a test message.
    Test(commands::test::Args),
    /// A sendmail-compatible interface: reads a message on stdin.
    #[command(disable_help_flag = true)]
    Sendmail(commands::sendmail::Args),
    /// Run the embedded Microsoft 365 simulator in the foreground.
    Sim(commands::sim::Args),
    /// Run the whole flow against the embedded simulator: login, send, diagnose.
    Demo(commands::demo::Args),
    /// File-transfer rules that mail On Success, On Error and On No Files.
    Rules(commands::rules::Args),
    /// A local SMTP relay for printers, scanners and apps that cannot do OAuth2.
    Relay(commands::relay::Args),
    /// The relay's queue: list, show, flush, retry, delete.
    Queue(commands::queue::Args),
}

/// Options every command sees.
#[derive(Clone, Debug)]
pub struct Globals {
    pub config: Option<PathBuf>,
    pub debug: bool,
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    // Invoked through a link named `sendmail`: sendmail's own argument syntax, no subcommand.
    let invoked_as = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_stem())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if invoked_as == "sendmail" {
        init_tracing(false, false);
        return exit::finish(commands::sendmail::run_argv(
            &args[1..],
            &Globals {
                config: None,
                debug: false,
            },
        ));
    }
    let cli = Cli::parse_from(args);
    // A daemon's log is its record of what happened to each message: info by default.
    let daemon = matches!(cli.command, Command::Relay(_));
    init_tracing(cli.debug, daemon);
    let globals = Globals {
        config: cli.config.clone(),
        debug: cli.debug,
    };
    exit::finish(commands::run(cli.command, &globals))
}

/// Logs go to stderr. `MAILGATE_LOG` takes `target=level` directives (`mailgate=debug,warn`);
/// a value that does not parse is reported once and the default is used.
fn init_tracing(debug: bool, daemon: bool) {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let default = match (debug, daemon) {
        (true, _) => "mailgate=debug,m365_sim=debug,info",
        (false, true) => "info",
        (false, false) => "warn",
    };
    let from_env = std::env::var("MAILGATE_LOG").ok().and_then(|v| {
        v.parse::<Targets>()
            .map_err(|e| eprintln!("mailgate: ignoring MAILGATE_LOG={v:?}: {e}"))
            .ok()
    });
    let filter = from_env.unwrap_or_else(|| default.parse().expect("the default filter parses"));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false),
        )
        .with(filter)
        .init();
}
