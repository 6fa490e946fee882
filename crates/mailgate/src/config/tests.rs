use super::*;

const PATH: &str = "/x/config.toml";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new(PATH))
}

fn err(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

const MINIMAL: &str = r#"
[accounts.work]
tenant = "contoso.onmicrosoft.com"
client_id = "0d5c7a43-6f0e-4b8e-9c1d-7e2a3b4c5d6e"
client_secret = "Qx58Q~value"
user = "alice@contoso.com"
"#;

#[test]
fn office365_needs_only_tenant_client_secret_and_user() {
    let c = parse(MINIMAL).unwrap();
    let a = c.account(None).unwrap();
    assert_eq!(a.provider, Provider::Office365);
    assert_eq!(a.flow, Flow::AuthorizationCode);
    assert_eq!(
        a.authorize_url,
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/authorize"
    );
    assert_eq!(
        a.token_url,
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    );
    assert_eq!(
        a.device_authorization_url.as_deref(),
        Some("https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/devicecode")
    );
    assert_eq!(
        a.scopes,
        [
            "offline_access",
            "https://outlook.office.com/SMTP.Send",
            "openid",
            "profile"
        ]
    );
    assert_eq!(a.redirect_uri, "http://localhost:3017/");
    assert_eq!(a.redirect_port, 3017);
    assert_eq!(
        (a.smtp_host.as_str(), a.smtp_port),
        ("smtp.office365.com", 587)
    );
    assert_eq!(a.smtp_security, Security::Starttls);
    assert_eq!(a.smtp_auth, AuthMechanism::Xoauth2);
    assert_eq!(a.from, "alice@contoso.com");
    assert_eq!((a.max_connections, a.messages_per_minute), (3, 30));
    assert_eq!(c.token_store, TokenStoreKind::Auto);

    let e = a.oauth_endpoints().unwrap();
    assert_eq!(e.client_secret.unwrap().expose(), "Qx58Q~value");
    assert_eq!(e.redirect_port, 3017);
    let s = a.smtp_settings();
    assert_eq!((s.host.as_str(), s.port), ("smtp.office365.com", 587));
}

#[test]
fn default_tenant_is_organizations() {
    let c = parse("[accounts.w]\nclient_id = \"c\"\nuser = \"a@b.c\"\n").unwrap();
    let a = c.account(Some("w")).unwrap();
    assert_eq!(a.tenant.as_deref(), Some("organizations"));
    assert!(a.token_url.contains("/organizations/oauth2/v2.0/token"));
    assert_eq!(a.client_secret, SecretSource::None);
}

#[test]
fn client_credentials_uses_the_default_scope_and_needs_a_real_tenant() {
    let c = parse(&MINIMAL.replace(
        "[accounts.work]",
        "[accounts.work]\nflow = \"client_credentials\"",
    ))
    .unwrap();
    let a = c.account(None).unwrap();
    assert_eq!(a.scopes, ["https://outlook.office365.com/.default"]);

    let e = err(&MINIMAL
        .replace("contoso.onmicrosoft.com", "organizations")
        .replace(
            "[accounts.work]",
            "[accounts.work]\nflow = \"client_credentials\"",
        ));
    assert!(
        e.starts_with("config /x/config.toml: [accounts.work] tenant = \"organizations\""),
        "{e}"
    );
    assert!(e.contains("needs your own tenant"), "{e}");

    let e = err(
        "[accounts.a]\nflow = \"client_credentials\"\nclient_id = \"c\"\nclient_secret = \"s\"\n\
         user = \"a@b.c\"\n",
    );
    assert!(e.contains("[accounts.a] tenant is missing"), "{e}");

    let e = err(
        "[accounts.a]\nflow = \"client_credentials\"\ntenant = \"contoso.com\"\nclient_id = \"c\"\n\
         user = \"a@b.c\"\n",
    );
    assert!(e.contains("client_secret is missing"), "{e}");
}

#[test]
fn a_bad_value_names_file_account_key_and_what_is_allowed() {
    let text = MINIMAL.to_string() + "smtp_security = \"ssl\"\n";
    let e = err(&text);
    assert_eq!(
        e,
        "config /x/config.toml: [accounts.work] smtp_security = \"ssl\": expected one of \
         starttls, tls, plain (line 7)"
    );
    let e = err(&(MINIMAL.to_string() + "flow = \"implicit\"\n"));
    assert!(
        e.contains("[accounts.work] flow = \"implicit\": expected one of authorization_code, device_code, client_credentials"),
        "{e}"
    );
    let e = err(&(MINIMAL.to_string() + "smtp_port = 70000\n"));
    assert!(e.contains("smtp_port = 70000: expected 0 to 65535"), "{e}");
    let e = err(&(MINIMAL.to_string() + "smtp_port = \"587\"\n"));
    assert!(e.contains("smtp_port = \"587\": expected a number"), "{e}");
    let e = err(&format!("token_store = \"vault\"\n{MINIMAL}"));
    assert!(
        e.starts_with(
            "config /x/config.toml: token_store = \"vault\": expected one of auto, keyring, file"
        ),
        "{e}"
    );
}

#[test]
fn unknown_keys_are_refused_with_a_suggestion() {
    let e = err(&(MINIMAL.to_string() + "smtp_securty = \"tls\"\n"));
    assert!(
        e.contains("[accounts.work] smtp_securty: unknown key (did you mean smtp_security?)"),
        "{e}"
    );
    assert!(e.contains("allowed keys: provider, tenant"), "{e}");
    let e = err(&format!("[server]\nlisten = \"127.0.0.1:2525\"\n{MINIMAL}"));
    assert!(e.contains("server: unknown key"), "{e}");
    assert!(e.contains("(line 1)"), "{e}");
}

#[test]
fn secrets_never_appear_in_errors() {
    let e = err(&MINIMAL.replace("client_secret = \"Qx58Q~value\"", "client_secret = 42"));
    assert!(e.contains("client_secret = <secret, not shown>"), "{e}");
    assert!(!e.contains("42"), "{e}");
}

#[test]
fn at_most_one_secret_source() {
    let e = err(&(MINIMAL.to_string() + "client_secret_env = \"S\"\n"));
    assert!(
        e.contains("client_secret and client_secret_env: set at most one of client_secret, client_secret_env, client_secret_command"),
        "{e}"
    );
    let e = err(&MINIMAL.replace(
        "client_secret = \"Qx58Q~value\"",
        "client_secret_env = \"S=abc\"",
    ));
    assert!(
        e.contains("expected the NAME of an environment variable"),
        "{e}"
    );
}

#[test]
fn plain_http_endpoints_only_to_loopback() {
    let e = err(&(MINIMAL.to_string() + "token_url = \"http://login.example.com/token\"\n"));
    assert!(
        e.contains("[accounts.work] token_url = \"http://login.example.com/token\""),
        "{e}"
    );
    assert!(e.contains("expected an https:// URL"), "{e}");
    for host in ["127.0.0.1:8080", "localhost", "[::1]:9"] {
        let text = MINIMAL.to_string() + &format!("token_url = \"http://{host}/t\"\n");
        assert!(parse(&text).is_ok(), "{host}");
    }
}

#[test]
fn plain_smtp_only_to_loopback() {
    let e = err(&(MINIMAL.to_string() + "smtp_security = \"plain\"\n"));
    assert!(e.contains("smtp_security = \"plain\""), "{e}");
    assert!(
        e.contains("only allowed to a loopback host, not \"smtp.office365.com\""),
        "{e}"
    );
    let ok = MINIMAL.to_string()
        + "smtp_security = \"plain\"\nsmtp_host = \"127.0.0.1\"\nsmtp_port = 2525\n";
    assert_eq!(
        parse(&ok).unwrap().account(None).unwrap().smtp_security,
        Security::Plain
    );
}

#[test]
fn tls_defaults_to_port_465() {
    let c = parse(&(MINIMAL.to_string() + "smtp_security = \"tls\"\n")).unwrap();
    assert_eq!(c.account(None).unwrap().smtp_port, 465);
}

#[test]
fn scopes_as_a_string_or_a_list() {
    let c = parse(
        &(MINIMAL.to_string()
            + "scopes = \"openid  offline_access https://outlook.office365.com/SMTP.Send\"\n"),
    )
    .unwrap();
    assert_eq!(
        c.account(None).unwrap().scopes,
        [
            "openid",
            "offline_access",
            "https://outlook.office365.com/SMTP.Send"
        ]
    );
    let c = parse(&(MINIMAL.to_string() + "scopes = [\"a\", \"b\"]\n")).unwrap();
    assert_eq!(c.account(None).unwrap().scopes, ["a", "b"]);
    let e = err(&(MINIMAL.to_string() + "scopes = []\n"));
    assert!(e.contains("scopes = []: must not be empty"), "{e}");
}

#[test]
fn gmail_preset() {
    let c = parse(
        "[accounts.home]\nprovider = \"gmail\"\nclient_id = \"x.apps.googleusercontent.com\"\n\
         client_secret = \"GOCSPX-x\"\nuser = \"me@gmail.com\"\n",
    )
    .unwrap();
    let a = c.account(None).unwrap();
    assert_eq!(
        a.authorize_url,
        "https://accounts.google.com/o/oauth2/v2/auth"
    );
    assert_eq!(a.token_url, "https://oauth2.googleapis.com/token");
    assert_eq!(a.scopes, ["openid", "email", "https://mail.google.com/"]);
    assert_eq!((a.smtp_host.as_str(), a.smtp_port), ("smtp.gmail.com", 587));
    assert_eq!(a.tenant, None);
    let e = err("[accounts.home]\nprovider = \"gmail\"\ntenant = \"x\"\nclient_id = \"x\"\nuser = \"me@gmail.com\"\n");
    assert!(
        e.contains("tenant only applies to provider office365"),
        "{e}"
    );
}

#[test]
fn custom_needs_its_endpoints() {
    let e = err("[accounts.c]\nprovider = \"custom\"\nclient_id = \"x\"\nuser = \"u\"\n");
    assert!(e.contains("[accounts.c] token_url is missing"), "{e}");
    let base = "[accounts.c]\nprovider = \"custom\"\nclient_id = \"x\"\nuser = \"u\"\n\
                token_url = \"https://id.example.com/token\"\nscopes = \"smtp\"\n\
                smtp_host = \"mail.example.com\"\n";
    let e = err(base);
    assert!(e.contains("authorize_url is missing"), "{e}");
    let c =
        parse(&(base.to_string() + "authorize_url = \"https://id.example.com/auth\"\n")).unwrap();
    assert_eq!(c.account(None).unwrap().device_authorization_url, None);
    let e = err(&(base.to_string() + "flow = \"device_code\"\n"));
    assert!(e.contains("device_authorization_url is missing"), "{e}");
}

#[test]
fn redirect_uri_and_port() {
    let c = parse(&(MINIMAL.to_string() + "redirect_port = 0\n")).unwrap();
    let a = c.account(None).unwrap();
    assert_eq!(
        (a.redirect_uri.as_str(), a.redirect_port),
        ("http://localhost:0/", 0)
    );
    let c =
        parse(&(MINIMAL.to_string() + "redirect_uri = \"http://127.0.0.1:8400/cb\"\n")).unwrap();
    assert_eq!(c.account(None).unwrap().redirect_port, 8400);
    let e = err(&(MINIMAL.to_string()
        + "redirect_uri = \"http://localhost:3017/\"\nredirect_port = 3018\n"));
    assert!(e.contains("redirect_port = 3018"), "{e}");
    assert!(e.contains("expected 3017"), "{e}");
    let e = err(&(MINIMAL.to_string() + "redirect_uri = \"https://app.example.com/cb\"\n"));
    assert!(e.contains("expected an http:// loopback URI"), "{e}");
}

#[test]
fn user_must_be_an_address() {
    let e = err(&MINIMAL.replace("alice@contoso.com", "alice"));
    assert!(
        e.contains("[accounts.work] user = \"alice\": expected the mailbox's address"),
        "{e}"
    );
    let e = err(&MINIMAL.replace("user = \"alice@contoso.com\"\n", ""));
    assert!(e.contains("[accounts.work] user is missing"), "{e}");
}

#[test]
fn choosing_an_account() {
    let two = format!(
        "{MINIMAL}\n{}",
        MINIMAL.replace("[accounts.work]", "[accounts.home]")
    );
    let c = parse(&two).unwrap();
    let e = c.account(None).unwrap_err().to_string();
    assert!(
        e.contains("which account?") && e.contains("home, work"),
        "{e}"
    );
    assert_eq!(c.account(Some("home")).unwrap().name, "home");
    let e = c.account(Some("nope")).unwrap_err().to_string();
    assert!(
        e.contains("no account named \"nope\" (accounts: home, work)"),
        "{e}"
    );
    let c = parse(&format!("default_account = \"home\"\n{two}")).unwrap();
    assert_eq!(c.account(None).unwrap().name, "home");
    let e = err(&format!("default_account = \"play\"\n{two}"));
    assert!(
        e.contains("default_account = \"play\": no such account (accounts: home, work)"),
        "{e}"
    );
    assert_eq!(
        parse(&two).unwrap().account(None).unwrap_err().sysexit(),
        Sysexit::Config
    );
}

#[test]
fn bad_account_names() {
    let e = err(&MINIMAL.replace("[accounts.work]", "[accounts.\"my work\"]"));
    assert!(e.contains("may only use letters"), "{e}");
}

#[test]
fn syntax_errors_give_the_line() {
    let e = err("token_store = \"file\"\n[accounts.work\n");
    assert!(
        e.starts_with("config /x/config.toml: not valid TOML: line 2"),
        "{e}"
    );
}

#[test]
fn relative_paths_follow_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), "x").unwrap();
    let text = format!("state_dir = \"state\"\n{MINIMAL}ca_file = \"ca.pem\"\n");
    let c = Config::parse(&text, &dir.path().join("config.toml")).unwrap();
    assert_eq!(c.state_dir, dir.path().join("state"));
    assert_eq!(c.tokens_dir(), dir.path().join("state").join("tokens"));
    assert_eq!(
        c.account(None).unwrap().ca_file,
        Some(dir.path().join("ca.pem"))
    );
    let e = err(&(MINIMAL.to_string() + "ca_file = \"/nonexistent/ca.pem\"\n"));
    assert!(
        e.contains("ca_file = \"/nonexistent/ca.pem\": no such file"),
        "{e}"
    );
}

#[test]
fn secret_from_env_and_command() {
    let text = MINIMAL.replace(
        "client_secret = \"Qx58Q~value\"",
        "client_secret_env = \"MAILGATE_TEST_SECRET_UNSET_1\"",
    );
    let c = parse(&text).unwrap();
    let e = c
        .account(None)
        .unwrap()
        .oauth_endpoints()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("[accounts.work] client_secret_env: environment variable MAILGATE_TEST_SECRET_UNSET_1 is not set"),
        "{e}"
    );

    #[cfg(unix)]
    {
        let text = MINIMAL.replace(
            "client_secret = \"Qx58Q~value\"",
            "client_secret_command = \"printf '  s3cret-from-cmd\\\\n'\"",
        );
        let c = parse(&text).unwrap();
        let s = c.account(None).unwrap().resolve_secret().unwrap().unwrap();
        assert_eq!(s.expose(), "s3cret-from-cmd");

        let text = MINIMAL.replace(
            "client_secret = \"Qx58Q~value\"",
            "client_secret_command = [\"sh\", \"-c\", \"printf 'leak%sd-value' e; echo vault is sealed >&2; exit 3\"]",
        );
        let c = parse(&text).unwrap();
        let e = c.account(None).unwrap().resolve_secret().unwrap_err();
        assert_eq!(e.sysexit(), Sysexit::Config);
        let e = e.to_string();
        assert!(e.contains("client_secret_command"), "{e}");
        assert!(e.contains("vault is sealed"), "{e}");
        assert!(e.contains("exit status: 3"), "{e}");
        assert!(
            !e.contains("leaked-value"),
            "the command's output is never shown: {e}"
        );

        let text = MINIMAL.replace(
            "client_secret = \"Qx58Q~value\"",
            "client_secret_command = \"true\"",
        );
        let e = parse(&text)
            .unwrap()
            .account(None)
            .unwrap()
            .resolve_secret()
            .unwrap_err()
            .to_string();
        assert!(e.contains("printed nothing"), "{e}");
    }
}
