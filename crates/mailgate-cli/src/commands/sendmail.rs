//! `mailgate sendmail` and the `sendmail` link: sendmail's own argument syntax.
//!
//! Reads a message on standard input and sends it through an account, as cron, `git
//! send-email`, PHP's `mail()` and every Unix program that calls `/usr/sbin/sendmail` expect:
//!
//! - `-t`: recipients from To, Cc and Bcc (added to those on the command line); Bcc is always
//!   removed from what is sent;
//! - `-i` / `-oi`: a line with a single `.` does not end the message;
//! - `-f FROM` (or `-r`): the envelope sender (a bare local name such as `root` is replaced by
//!   the account's address); `-F NAME`: the sender's name when a From header is added;
//! - `-v`: print the SMTP session (token redacted) on standard error;
//! - `--account A` (or `$MAILGATE_ACCOUNT`), `--config FILE`: mailgate's own;
//! - `-bm` (the default mode), `-o...`, `-O opt=val`, `-B type`, `-e?`, `-N dsn`, `-R ret`,
//!   `-V envid`, `-h hops`, `-L tag`, `-U`, `-n`, `-m`, `-d...`, `-q...` are accepted and ignored
//!   as sendmail ignores what it does not need.
//!
//! Exit status follows sysexits: 0 sent, 64 usage, 65 bad message, 69 refused, 75 temporary
//! (worth retrying: network down, 4xx, token endpoint unreachable), 77 not permitted, 78 config.

use std::ffi::OsString;
use std::io::Read;
use std::path::PathBuf;

use anyhow::Context as _;
use mailgate::config::Config;
use mailgate::message::{prepare_raw, Mailbox, RawOptions};
use mailgate::send::AccountSender;
use mailgate::Sysexit;

use crate::exit::fail;
use crate::Globals;

/// Everything after `mailgate sendmail`, parsed by [`run_argv`] with sendmail's rules.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub argv: Vec<OsString>,
}

pub fn run(args: Args, globals: &Globals) -> anyhow::Result<()> {
    run_argv(&args.argv, globals)
}

/// What the command line asked for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Invocation {
    pub extract_recipients: bool,
    pub ignore_dots: bool,
    pub envelope_from: Option<String>,
    pub full_name: Option<String>,
    pub verbose: bool,
    pub account: Option<String>,
    pub config: Option<PathBuf>,
    pub debug: bool,
    pub recipients: Vec<String>,
    /// `-q`: process the queue (there is none: nothing to do).
    pub queue_run: bool,
    pub help: bool,
    /// Options accepted and ignored, for `-v`.
    pub ignored: Vec<String>,
}

const USAGE: &str = "usage: sendmail [-t] [-i|-oi] [-f FROM] [-F NAME] [-v] [--account A] [--config FILE] [RECIPIENT...] < message";

fn usage(msg: impl std::fmt::Display) -> anyhow::Error {
    fail(Sysexit::Usage, anyhow::anyhow!("{msg}\n{USAGE}"))
}

/// Parses sendmail's options by hand (getopt-like: options may be glued to their values, and
/// may come before or after recipients until `--`).
pub fn parse_argv(argv: &[OsString]) -> anyhow::Result<Invocation> {
    let args: Vec<String> = argv
        .iter()
        .map(|a| {
            a.to_str()
                .map(str::to_owned)
                .ok_or_else(|| usage(format!("argument {a:?} is not valid UTF-8")))
        })
        .collect::<Result<_, _>>()?;
    let mut inv = Invocation::default();
    let mut i = 0;
    let mut only_recipients = false;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if only_recipients || !arg.starts_with('-') || arg == "-" {
            inv.recipients.push(arg.clone());
            continue;
        }
        if arg == "--" {
            only_recipients = true;
            continue;
        }
        if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            let mut value = |what: &str| -> anyhow::Result<String> {
                match inline.clone() {
                    Some(v) => Ok(v),
                    None if i < args.len() => {
                        i += 1;
                        Ok(args[i - 1].clone())
                    }
                    None => Err(usage(format!("--{what} needs a value"))),
                }
            };
            match name {
                "account" => inv.account = Some(value("account")?),
                "config" => inv.config = Some(PathBuf::from(value("config")?)),
                "debug" => inv.debug = true,
                "help" => inv.help = true,
                "read-envelope-from" | "read-recipients" => inv.extract_recipients = true,
                other => return Err(usage(format!("unknown option --{other}"))),
            }
            continue;
        }
        // A cluster of single-letter options, e.g. `-ti`, `-oi`, `-fFROM`, `-F Name`.
        let letters: Vec<char> = arg[1..].chars().collect();
        let mut j = 0;
        while j < letters.len() {
            let c = letters[j];
            j += 1;
            let rest: String = letters[j..].iter().collect();
            // Options with a value take the rest of this argument, or the next argument.
            let mut take_value = |name: char| -> anyhow::Result<String> {
                if !rest.is_empty() {
                    j = letters.len();
                    Ok(rest.clone())
                } else if i < args.len() {
                    i += 1;
                    Ok(args[i - 1].clone())
                } else {
                    Err(usage(format!("option -{name} needs a value")))
                }
            };
            match c {
                't' => inv.extract_recipients = true,
                'i' => inv.ignore_dots = true,
                'v' => inv.verbose = true,
                'f' | 'r' => inv.envelope_from = Some(take_value(c)?),
                'F' => inv.full_name = Some(take_value(c)?),
                'o' => {
                    // -oi, -oem, -odi, -oQ/var/spool...: the option letter and its value glued.
                    if rest.starts_with('i') && rest.len() == 1 {
                        inv.ignore_dots = true;
                    } else if rest.is_empty() {
                        return Err(usage("option -o needs an option letter (-oi, -oem...)"));
                    } else {
                        inv.ignored.push(format!("-o{rest}"));
                    }
                    j = letters.len();
                }
                'b' => {
                    match rest.as_str() {
                        "m" | "" => {}
                        other => {
                            return Err(fail(
                                Sysexit::Usage,
                                anyhow::anyhow!(
                                    "mode -b{other} is not supported: mailgate's sendmail only sends the message on standard input (-bm)"
                                ),
                            ))
                        }
                    }
                    j = letters.len();
                }
                'e' | 'd' | 'q' | 'U' | 'n' | 'm' | 's' | 'x' => {
                    if c == 'q' {
                        inv.queue_run = true;
                    }
                    // -em, -ep, -d0.1, -q30m: any glued value belongs to the option.
                    inv.ignored.push(format!("-{c}{rest}"));
                    j = letters.len();
                }
                'O' | 'B' | 'N' | 'R' | 'V' | 'h' | 'L' | 'X' | 'C' | 'A' | 'p' => {
                    let v = take_value(c)?;
                    inv.ignored.push(format!("-{c} {v}"));
                }
                'G' | 'M' | 'I' => inv.ignored.push(format!("-{c}")),
                other => return Err(usage(format!("unknown option -{other}"))),
            }
        }
    }
    Ok(inv)
}

/// Runs with sendmail's argument syntax (`-t -i -f FROM -F NAME -oi -bm RCPT...`).
pub fn run_argv(argv: &[OsString], globals: &Globals) -> anyhow::Result<()> {
    let inv = parse_argv(argv)?;
    if inv.help {
        println!("{USAGE}");
        println!("Reads a message on standard input and sends it through a mailgate account.");
        return Ok(());
    }
    if inv.queue_run && inv.recipients.is_empty() && !inv.extract_recipients {
        // `sendmail -q`: mailgate's sendmail keeps no queue of its own.
        return Ok(());
    }
    if inv.recipients.is_empty() && !inv.extract_recipients {
        return Err(usage(
            "no recipients: give them as arguments, or use -t to take them from the headers",
        ));
    }
    let config_path = inv.config.clone().or_else(|| globals.config.clone());
    let config = Config::load(config_path.as_deref())?;
    let account_name = inv.account.clone().or_else(|| {
        std::env::var("MAILGATE_ACCOUNT")
            .ok()
            .filter(|a| !a.is_empty())
    });
    let account = config.account(account_name.as_deref())?;

    let mut input = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut input)
        .map_err(|e| {
            fail(
                Sysexit::IoErr,
                anyhow::anyhow!("cannot read the message from standard input: {e}"),
            )
        })?;
    let opts = RawOptions {
        extract_recipients: inv.extract_recipients,
        recipients: inv.recipients.clone(),
        ignore_dots: inv.ignore_dots,
        envelope_from: inv.envelope_from.clone(),
        full_name: inv.full_name.clone(),
        default_from: Mailbox::new(account.from.clone()),
    };
    let message = prepare_raw(&input, &opts)?;
    if inv.verbose {
        if !inv.ignored.is_empty() {
            eprintln!("ignored options: {}", inv.ignored.join(" "));
        }
        eprintln!(
            "account {} (user {}): MAIL FROM:<{}> to {}",
            account.name,
            account.user,
            message.envelope.mail_from,
            message.envelope.rcpt_to.join(", ")
        );
    }
    let sender = AccountSender::new(&config, account)?;
    let result = super::send::runtime()?.block_on(sender.send(&message));
    if inv.verbose || inv.debug {
        eprint!("{}", sender.transcript());
    }
    let report = result.context("message not sent")?;
    super::send::finish_report(&report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Invocation {
        parse_argv(&args.iter().map(OsString::from).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn what_cron_git_and_php_pass() {
        // Debian cron: /usr/sbin/sendmail -i -FCronDaemon -B8BITMIME -oem alice@contoso.com
        let inv = parse(&[
            "-i",
            "-FCronDaemon",
            "-B8BITMIME",
            "-oem",
            "alice@contoso.com",
        ]);
        assert!(inv.ignore_dots && !inv.extract_recipients);
        assert_eq!(inv.full_name.as_deref(), Some("CronDaemon"));
        assert_eq!(inv.recipients, vec!["alice@contoso.com"]);
        // cronie: -FCronDaemon -i -odi -oem -oi -t -f root
        let inv = parse(&[
            "-FCronDaemon",
            "-i",
            "-odi",
            "-oem",
            "-oi",
            "-t",
            "-f",
            "root",
        ]);
        assert!(inv.extract_recipients && inv.ignore_dots);
        assert_eq!(inv.envelope_from.as_deref(), Some("root"));
        assert!(inv.recipients.is_empty());
        // git send-email: -i -f sender rcpt...
        let inv = parse(&[
            "-i",
            "-falice@contoso.com",
            "bob@contoso.com",
            "carol@fabrikam.com",
        ]);
        assert_eq!(inv.envelope_from.as_deref(), Some("alice@contoso.com"));
        assert_eq!(inv.recipients.len(), 2);
        // PHP: sendmail -t -i
        let inv = parse(&["-t", "-i"]);
        assert!(inv.extract_recipients && inv.ignore_dots);
        // Clusters, -bm, mailgate's own options.
        let inv = parse(&["-ti", "-bm", "--account=work", "-v", "--", "-odd@x.example"]);
        assert!(inv.extract_recipients && inv.ignore_dots && inv.verbose);
        assert_eq!(inv.account.as_deref(), Some("work"));
        assert_eq!(inv.recipients, vec!["-odd@x.example"]);
    }

    #[test]
    fn unsupported_modes_and_missing_values_are_usage_errors() {
        let err = |args: &[&str]| {
            parse_argv(&args.iter().map(OsString::from).collect::<Vec<_>>()).unwrap_err()
        };
        assert!(err(&["-bp"]).to_string().contains("-bp"));
        assert!(err(&["-f"]).to_string().contains("-f needs a value"));
        assert!(err(&["-Z"]).to_string().contains("unknown option -Z"));
    }
}
