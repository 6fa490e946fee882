//! `mailgate init`: writes an account into the config file, interactively (one question per
//! field, each explained in one line) or from flags (`--non-interactive`, for scripts). The file
//! keeps its comments and other accounts; it is written atomically with mode 0600 and only when
//! it loads. Ends by offering to sign in.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{anyhow, Context as _};
use mailgate::config::edit::ConfigEditor;
use mailgate::config::{paths, presets, Provider};
use mailgate::oauth::Flow;
use mailgate::Sysexit;
use toml_edit::{Array, Value};

use crate::exit::fail;
use crate::Globals;

#[derive(clap::Args, Debug, Default)]
pub struct Args {
    /// The account's name, used in commands (`mailgate login NAME`).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// office365, gmail or custom.
    #[arg(long, value_parser = ["office365", "gmail", "custom"])]
    pub provider: Option<String>,
    /// office365: the tenant's domain (contoso.onmicrosoft.com) or Directory (tenant) ID;
    /// default organizations.
    #[arg(long)]
    pub tenant: Option<String>,
    /// authorization_code (browser), device_code (headless) or client_credentials (app-only).
    #[arg(long, value_parser = ["authorization_code", "device_code", "client_credentials"])]
    pub flow: Option<String>,
    /// The Application (client) ID of the app registration.
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,
    /// Read the client secret's Value from this environment variable at run time.
    #[arg(long, value_name = "VAR", group = "secret")]
    pub client_secret_env: Option<String>,
    /// Run this command at run time; its output is the client secret's Value.
    #[arg(long, value_name = "CMD", group = "secret")]
    pub client_secret_command: Option<String>,
    /// Read the client secret's Value from standard input now and store it in the config file
    /// (mode 0600).
    #[arg(long, group = "secret")]
    pub client_secret_stdin: bool,
    /// A public client: no secret ("Allow public client flows" enabled on the app).
    #[arg(long, group = "secret")]
    pub public_client: bool,
    /// The mailbox that signs in to SMTP (for client_credentials: the mailbox the app sends as).
    #[arg(long, value_name = "ADDRESS")]
    pub user: Option<String>,
    /// The default sender address, when it is not the user (a shared mailbox).
    #[arg(long, value_name = "ADDRESS")]
    pub from: Option<String>,
    /// custom: the token endpoint.
    #[arg(long, value_name = "URL")]
    pub token_url: Option<String>,
    /// custom: the authorization endpoint.
    #[arg(long, value_name = "URL")]
    pub authorize_url: Option<String>,
    /// custom: the device authorization endpoint.
    #[arg(long, value_name = "URL")]
    pub device_authorization_url: Option<String>,
    /// The scopes to request, space-separated (default: the provider's).
    #[arg(long)]
    pub scopes: Option<String>,
    /// The SMTP server (default: the provider's).
    #[arg(long, value_name = "HOST")]
    pub smtp_host: Option<String>,
    /// The SMTP port (default: 587).
    #[arg(long, value_name = "PORT")]
    pub smtp_port: Option<u16>,
    /// Make it the default account (the first account always is).
    #[arg(long)]
    pub default: bool,
    /// Replace an account of the same name.
    #[arg(long)]
    pub force: bool,
    /// Ask nothing: take every value from the flags (missing required ones are an error).
    #[arg(long)]
    pub non_interactive: bool,
    /// Sign in right after writing the account (interactive mode offers it).
    #[arg(long)]
    pub login: bool,
}

/// What the account will be.
#[derive(Debug, Default)]
struct Answers {
    name: String,
    provider: Option<Provider>,
    tenant: Option<String>,
    flow: Option<Flow>,
    client_id: String,
    secret: SecretAnswer,
    user: String,
    from: Option<String>,
    token_url: Option<String>,
    authorize_url: Option<String>,
    device_authorization_url: Option<String>,
    scopes: Option<String>,
    smtp_host: Option<String>,
    smtp_port: Option<u16>,
}

#[derive(Debug, Default)]
enum SecretAnswer {
    #[default]
    None,
    Value(mailgate::Secret),
    Env(String),
    Command(String),
}

pub fn run(args: Args, globals: &Globals) -> anyhow::Result<()> {
    let path = paths::config_path(globals.config.as_deref())?;
    let mut editor = ConfigEditor::open(&path)?;
    let answers = if args.non_interactive {
        from_flags(&args, &editor)?
    } else {
        let mut p = Prompter::new();
        wizard(&args, &editor, &mut p)?
    };
    write_account(&mut editor, &answers, args.default)?;
    let config = editor.save()?;
    let account = config.account(Some(&answers.name))?;
    println!(
        "Wrote account {} to {} (readable by you only).",
        account.name,
        path.display()
    );
    if account.flow == Flow::AuthorizationCode {
        println!(
            "The app registration needs the redirect URI {} (platform \"Mobile and desktop \
             applications\", or \"Web\" for an app with a secret).",
            account.redirect_uri
        );
    }
    let login = if args.login {
        true
    } else if args.non_interactive {
        false
    } else {
        let mut p = Prompter::new();
        p.confirm(
            &format!("Sign in now (mailgate login {})?", account.name),
            "the tokens are stored so that mailgate can send mail on its own afterwards",
            true,
        )?
    };
    if login {
        return super::login::run(
            super::login::Args {
                account: Some(account.name.clone()),
                no_browser: false,
                timeout: None,
            },
            &crate::Globals {
                config: Some(path),
                debug: globals.debug,
            },
        );
    }
    println!("Next: mailgate login {}", account.name);
    Ok(())
}

fn usage(msg: impl std::fmt::Display) -> anyhow::Error {
    fail(Sysexit::Usage, anyhow!("{msg}"))
}

fn parse_provider(s: &str) -> Option<Provider> {
    match s.trim().to_ascii_lowercase().as_str() {
        "office365" | "o365" | "microsoft" | "m365" | "microsoft365" => Some(Provider::Office365),
        "gmail" | "google" => Some(Provider::Gmail),
        "custom" => Some(Provider::Custom),
        _ => None,
    }
}

fn parse_flow(s: &str) -> Option<Flow> {
    match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
        "authorization_code" | "auth_code" | "browser" => Some(Flow::AuthorizationCode),
        "device_code" | "device" => Some(Flow::DeviceCode),
        "client_credentials" | "app" => Some(Flow::ClientCredentials),
        _ => None,
    }
}

fn flow_str(flow: Flow) -> &'static str {
    match flow {
        Flow::AuthorizationCode => "authorization_code",
        Flow::DeviceCode => "device_code",
        Flow::ClientCredentials => "client_credentials",
    }
}

fn check_name(name: &str, editor: &ConfigEditor, force: bool) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if !ok {
        return Err(usage(format!(
            "account name {name:?}: use letters, digits, '-', '_' and '.'"
        )));
    }
    if editor.has_account(name) && !force {
        return Err(usage(format!(
            "{} already has an account named {name}: pass --force to replace it, or choose \
             another --name",
            editor.path().display()
        )));
    }
    Ok(())
}

fn from_flags(args: &Args, editor: &ConfigEditor) -> anyhow::Result<Answers> {
    let name = args.name.clone().unwrap_or_else(|| "work".to_string());
    check_name(&name, editor, args.force)?;
    let provider = args
        .provider
        .as_deref()
        .map(parse_provider)
        .unwrap_or(Some(Provider::Office365));
    let flow = args
        .flow
        .as_deref()
        .map(parse_flow)
        .unwrap_or(Some(Flow::AuthorizationCode));
    let client_id = args
        .client_id
        .clone()
        .ok_or_else(|| usage("--non-interactive needs --client-id"))?;
    let user = args
        .user
        .clone()
        .ok_or_else(|| usage("--non-interactive needs --user (the mailbox that signs in)"))?;
    let secret = if let Some(v) = &args.client_secret_env {
        SecretAnswer::Env(v.clone())
    } else if let Some(c) = &args.client_secret_command {
        SecretAnswer::Command(c.clone())
    } else if args.client_secret_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the client secret from standard input")?;
        let v = line.trim();
        if v.is_empty() {
            return Err(usage(
                "--client-secret-stdin: standard input held no secret",
            ));
        }
        SecretAnswer::Value(mailgate::Secret::new(v))
    } else {
        SecretAnswer::None
    };
    Ok(Answers {
        name,
        provider,
        tenant: args.tenant.clone(),
        flow,
        client_id,
        secret,
        user,
        from: args.from.clone(),
        token_url: args.token_url.clone(),
        authorize_url: args.authorize_url.clone(),
        device_authorization_url: args.device_authorization_url.clone(),
        scopes: args.scopes.clone(),
        smtp_host: args.smtp_host.clone(),
        smtp_port: args.smtp_port,
    })
}

fn wizard(args: &Args, editor: &ConfigEditor, p: &mut Prompter) -> anyhow::Result<Answers> {
    println!(
        "This adds an account to {}{}.",
        editor.path().display(),
        if editor.existed() {
            ""
        } else {
            " (a new file)"
        }
    );
    println!("Press Enter to take the value in [brackets].\n");

    let name = loop {
        let name = p.ask(
            "Account name",
            "what you call this account in commands, e.g. `mailgate login work`",
            args.name.as_deref().or(Some("work")),
        )?;
        if editor.has_account(&name) && !args.force {
            if p.confirm(
                &format!("Account {name} exists. Replace it?"),
                "its current settings are overwritten",
                false,
            )? {
                check_name(&name, editor, true)?;
                break name;
            }
            continue;
        }
        match check_name(&name, editor, true) {
            Ok(()) => break name,
            Err(e) => println!("  {e}"),
        }
    };

    let provider = loop {
        let s = p.ask(
            "Provider",
            "office365 (Microsoft 365 / Exchange Online), gmail (Google Workspace / Gmail) or \
             custom (any OAuth2 server)",
            args.provider.as_deref().or(Some("office365")),
        )?;
        match parse_provider(&s) {
            Some(pv) => break pv,
            None => println!("  expected office365, gmail or custom"),
        }
    };

    let flow = loop {
        let s = p.ask(
            "Sign-in flow",
            "authorization_code (a browser on this machine), device_code (sign in from another \
             device: for servers without a browser), client_credentials (app-only, no user)",
            args.flow.as_deref().or(Some("authorization_code")),
        )?;
        match parse_flow(&s) {
            Some(f) if provider == Provider::Gmail && f == Flow::ClientCredentials => {
                println!("  Gmail has no client credentials grant for SMTP")
            }
            Some(f) => break f,
            None => println!("  expected authorization_code, device_code or client_credentials"),
        }
    };

    let tenant = if provider == Provider::Office365 {
        let default = args.tenant.as_deref().or(match flow {
            Flow::ClientCredentials => None,
            _ => Some(presets::DEFAULT_TENANT),
        });
        let t = p.ask(
            "Tenant",
            "your tenant's domain (contoso.onmicrosoft.com) or its Directory (tenant) ID from the \
             app registration's Overview page; organizations works for user sign-in only",
            default,
        )?;
        Some(t)
    } else {
        None
    };

    let mut custom = Answers::default();
    if provider == Provider::Custom {
        custom.token_url = Some(p.ask(
            "Token URL",
            "the OAuth2 token endpoint (https://...)",
            args.token_url.as_deref(),
        )?);
        if flow == Flow::AuthorizationCode {
            custom.authorize_url = Some(p.ask(
                "Authorization URL",
                "the OAuth2 authorization endpoint (https://...)",
                args.authorize_url.as_deref(),
            )?);
        }
        if flow == Flow::DeviceCode {
            custom.device_authorization_url = Some(p.ask(
                "Device authorization URL",
                "the OAuth2 device authorization endpoint (https://...)",
                args.device_authorization_url.as_deref(),
            )?);
        }
        custom.scopes = Some(p.ask(
            "Scopes",
            "the scopes to request, separated by spaces (include offline_access if the server \
             needs it for a refresh token)",
            args.scopes.as_deref(),
        )?);
        custom.smtp_host = Some(p.ask(
            "SMTP host",
            "the SMTP submission server",
            args.smtp_host.as_deref(),
        )?);
        let port = loop {
            let s = p.ask(
                "SMTP port",
                "587 with STARTTLS (465 needs smtp_security = \"tls\" in the file)",
                Some(&args.smtp_port.unwrap_or(587).to_string()),
            )?;
            match s.parse::<u16>() {
                Ok(n) if n > 0 => break n,
                _ => println!("  expected a port number"),
            }
        };
        custom.smtp_port = Some(port);
    }

    let client_id_help = match provider {
        Provider::Gmail => {
            "the OAuth client ID (…apps.googleusercontent.com) of a Desktop app: Google Cloud \
             console → APIs & Services → Credentials"
        }
        _ => "the Application (client) ID, a GUID on the app registration's Overview page",
    };
    let client_id = p.ask("Client ID", client_id_help, args.client_id.as_deref())?;

    let secret = ask_secret(provider, flow, args, p)?;

    let user = p.ask(
        if flow == Flow::ClientCredentials {
            "Mailbox"
        } else {
            "User"
        },
        if flow == Flow::ClientCredentials {
            "the mailbox the app sends as (it needs SMTP.SendAsApp and mailbox permission)"
        } else {
            "the mailbox that signs in and sends, e.g. alice@contoso.com (for a shared mailbox: a \
             member's address; put the shared one in `from` later)"
        },
        args.user.as_deref(),
    )?;

    Ok(Answers {
        name,
        provider: Some(provider),
        tenant,
        flow: Some(flow),
        client_id,
        secret,
        user,
        from: args.from.clone(),
        scopes: custom.scopes.or_else(|| args.scopes.clone()),
        token_url: custom.token_url,
        authorize_url: custom.authorize_url,
        device_authorization_url: custom.device_authorization_url,
        smtp_host: custom.smtp_host.or_else(|| args.smtp_host.clone()),
        smtp_port: custom.smtp_port.or(args.smtp_port),
    })
}

fn ask_secret(
    provider: Provider,
    flow: Flow,
    args: &Args,
    p: &mut Prompter,
) -> anyhow::Result<SecretAnswer> {
    if let Some(v) = &args.client_secret_env {
        return Ok(SecretAnswer::Env(v.clone()));
    }
    if let Some(c) = &args.client_secret_command {
        return Ok(SecretAnswer::Command(c.clone()));
    }
    if args.public_client {
        return Ok(SecretAnswer::None);
    }
    let where_ = match provider {
        Provider::Office365 => {
            "the secret's Value (Certificates & secrets → Client secrets, the Value column, shown \
             only right after it is created), not the Secret ID"
        }
        Provider::Gmail => "the client secret shown with the client ID (GOCSPX-...)",
        Provider::Custom => "the client secret the OAuth server issued",
    };
    println!("The client secret is {where_}.");
    // Most registrations (a "Web" platform, or any client credentials app) have a secret.
    let default = "value";
    loop {
        let how = p.ask(
            "Client secret",
            "value (type it now; stored in the config file, mode 0600), env (an environment \
             variable holds it), command (a command prints it, e.g. from a password manager), or \
             none (a public client)",
            Some(default),
        )?;
        match how.trim().to_ascii_lowercase().as_str() {
            "value" => {
                let v = p.secret("Client secret Value (input hidden)")?;
                if v.is_empty() {
                    println!("  nothing entered");
                    continue;
                }
                if provider == Provider::Office365 && mailgate::config::looks_like_guid(&v) {
                    println!(
                        "  That looks like a Secret ID (a GUID). Entra needs the secret's Value; \
                         if it is no longer visible, create a new secret."
                    );
                    if !p.confirm(
                        "Use it anyway?",
                        "sign-in will fail with AADSTS7000215",
                        false,
                    )? {
                        continue;
                    }
                }
                return Ok(SecretAnswer::Value(mailgate::Secret::new(v)));
            }
            "env" => {
                let var = p.ask(
                    "Environment variable",
                    "its name; it must be set wherever mailgate runs",
                    Some("MAILGATE_CLIENT_SECRET"),
                )?;
                return Ok(SecretAnswer::Env(var));
            }
            "command" => {
                let cmd = p.ask(
                    "Command",
                    "run through the shell; its output is the secret, e.g. `pass show mailgate`",
                    None,
                )?;
                return Ok(SecretAnswer::Command(cmd));
            }
            "none" if flow == Flow::ClientCredentials => {
                println!("  client_credentials authenticates the app itself: it needs a secret")
            }
            "none" => return Ok(SecretAnswer::None),
            _ => println!("  expected value, env, command or none"),
        }
    }
}

fn write_account(editor: &mut ConfigEditor, a: &Answers, make_default: bool) -> anyhow::Result<()> {
    let name = a.name.as_str();
    if editor.has_account(name) {
        for key in mailgate::config::ACCOUNT_KEYS {
            editor.remove_account_value(name, key);
        }
    }
    let provider = a.provider.unwrap_or_default();
    let flow = a.flow.unwrap_or_default();
    let set = |ed: &mut ConfigEditor, key: &str, v: Value| ed.set_account_value(name, key, v);
    set(editor, "provider", provider.as_str().into());
    if let Some(t) = &a.tenant {
        set(editor, "tenant", t.as_str().into());
    }
    if flow != Flow::AuthorizationCode {
        set(editor, "flow", flow_str(flow).into());
    }
    set(editor, "client_id", a.client_id.as_str().into());
    match &a.secret {
        SecretAnswer::None => {}
        SecretAnswer::Value(s) => set(editor, "client_secret", s.expose().into()),
        SecretAnswer::Env(v) => set(editor, "client_secret_env", v.as_str().into()),
        SecretAnswer::Command(c) => set(editor, "client_secret_command", c.as_str().into()),
    }
    set(editor, "user", a.user.as_str().into());
    if let Some(f) = &a.from {
        set(editor, "from", f.as_str().into());
    }
    for (key, v) in [
        ("token_url", &a.token_url),
        ("authorize_url", &a.authorize_url),
        ("device_authorization_url", &a.device_authorization_url),
        ("smtp_host", &a.smtp_host),
    ] {
        if let Some(v) = v {
            set(editor, key, v.as_str().into());
        }
    }
    if let Some(s) = &a.scopes {
        let arr: Array = s.split_whitespace().collect();
        set(editor, "scopes", Value::Array(arr));
    }
    if let Some(port) = a.smtp_port {
        set(editor, "smtp_port", i64::from(port).into());
    }
    editor.comment_account(
        name,
        &format!("Written by `mailgate init`. Sign in with: mailgate login {name}"),
    );
    let first = editor.account_names().len() == 1;
    if make_default || first || !editor.has_top("default_account") {
        editor.set_top("default_account", name);
    }
    Ok(())
}

/// Questions on standard input; hidden input for secrets when it is a terminal.
struct Prompter {
    stdin: std::io::StdinLock<'static>,
    tty: bool,
}

impl Prompter {
    fn new() -> Prompter {
        Prompter {
            stdin: std::io::stdin().lock(),
            tty: std::io::stdin().is_terminal(),
        }
    }

    fn read_line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        let n = self
            .stdin
            .read_line(&mut line)
            .context("cannot read the answer")?;
        if n == 0 {
            return Err(usage(
                "no more answers on standard input; for scripts use `mailgate init \
                 --non-interactive` with flags (see `mailgate init --help`)",
            ));
        }
        Ok(line.trim().to_string())
    }

    /// Asks until there is an answer (or takes `default` on an empty line).
    fn ask(&mut self, label: &str, help: &str, default: Option<&str>) -> anyhow::Result<String> {
        loop {
            println!("{label}: {help}");
            match default {
                Some(d) => print!("  {label} [{d}]: "),
                None => print!("  {label}: "),
            }
            std::io::stdout().flush().ok();
            let answer = self.read_line()?;
            if !answer.is_empty() {
                return Ok(answer);
            }
            if let Some(d) = default {
                return Ok(d.to_string());
            }
            println!("  (an answer is needed)");
        }
    }

    fn confirm(&mut self, question: &str, help: &str, default: bool) -> anyhow::Result<bool> {
        loop {
            print!(
                "{question} ({help}) [{}]: ",
                if default { "Y/n" } else { "y/N" }
            );
            std::io::stdout().flush().ok();
            let answer = self.read_line()?.to_ascii_lowercase();
            match answer.as_str() {
                "" => return Ok(default),
                "y" | "yes" => return Ok(true),
                "n" | "no" => return Ok(false),
                _ => println!("  answer y or n"),
            }
        }
    }

    fn secret(&mut self, label: &str) -> anyhow::Result<String> {
        if self.tty {
            let v = rpassword::prompt_password(format!("  {label}: "))
                .context("cannot read the secret from the terminal")?;
            Ok(v.trim().to_string())
        } else {
            print!("  {label}: ");
            std::io::stdout().flush().ok();
            self.read_line()
        }
    }
}
