//! Diagnoses of SMTP replies (and of the connection failures before any reply): what happened,
//! why it usually happens, how to fix it (admin-center path and PowerShell line), and the
//! provider's exact reply.
//!
//! [`CATALOGUE`] lists every reply mailgate explains, with a sample line; [`diagnose_reply`]
//! explains a reply in its context (who signed in, which From was used, what the server's 334
//! challenge said). A reply not in the catalogue is shown verbatim with its enhanced code.

use std::time::Duration;

use crate::smtp::reply::{EnhancedCode, Reply};
use crate::smtp::sasl::{mechanism_name, OAuthChallenge};
use crate::smtp::{AuthMechanism, Stage};
use crate::{Diagnosis, Sysexit};

/// What the client knew when the reply came, to name the user and mailbox in the diagnosis.
#[derive(Clone, Copy, Debug)]
pub struct ReplyContext<'a> {
    /// What the client was doing.
    pub stage: Stage,
    /// The server's host name (as configured).
    pub host: &'a str,
    /// The `user=` of the SASL login.
    pub auth_user: Option<&'a str>,
    /// The envelope sender (`MAIL FROM`).
    pub mail_from: Option<&'a str>,
    /// The recipient, for a `RCPT TO` reply.
    pub recipient: Option<&'a str>,
    /// The SASL mechanism used.
    pub mechanism: Option<AuthMechanism>,
    /// The decoded 334 challenge the server sent before refusing AUTH.
    pub challenge: Option<&'a OAuthChallenge>,
}

impl<'a> ReplyContext<'a> {
    /// A context that knows only the stage and the host.
    pub fn new(stage: Stage, host: &'a str) -> ReplyContext<'a> {
        ReplyContext {
            stage,
            host,
            auth_user: None,
            mail_from: None,
            recipient: None,
            mechanism: None,
            challenge: None,
        }
    }
}

/// One entry of the catalogue: a reply mailgate explains, with a sample as providers send it.
#[derive(Clone, Copy, Debug)]
pub struct CatalogueEntry {
    /// The code the diagnosis carries (`5.7.139`).
    pub code: &'static str,
    /// A sample reply, verbatim.
    pub sample: &'static str,
    /// When it comes.
    pub stage: Stage,
    /// The exit status the diagnosis gives.
    pub sysexit: Sysexit,
}

/// Every SMTP reply mailgate explains.
pub const CATALOGUE: &[CatalogueEntry] = &[
    CatalogueEntry {
        code: "5.7.139",
        sample: "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information. [AM0PR02CA0134.eurprd02.prod.outlook.com 2024-07-11T11:46:49.042Z 08DCA18218166FB4]",
        stage: Stage::Auth,
        sysexit: Sysexit::NoPerm,
    },
    CatalogueEntry {
        code: "5.7.139",
        sample: "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox. Visit https://aka.ms/smtp_auth_disabled for more information.",
        stage: Stage::Auth,
        sysexit: Sysexit::NoPerm,
    },
    CatalogueEntry {
        code: "5.7.3",
        sample: "535 5.7.3 Authentication unsuccessful [AM0PR02CA0134.eurprd02.prod.outlook.com 2024-07-11T11:46:49.042Z 08DCA18218166FB4]",
        stage: Stage::Auth,
        sysexit: Sysexit::NoPerm,
    },
    CatalogueEntry {
        code: "5.7.57",
        sample: "530 5.7.57 Client not authenticated to send mail. [AM0PR02CA0134.eurprd02.prod.outlook.com]",
        stage: Stage::MailFrom,
        sysexit: Sysexit::NoPerm,
    },
    CatalogueEntry {
        code: "5.2.252",
        sample: "554 5.2.252 SendAsDenied; alice@contoso.com not allowed to send as support@contoso.com; STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; Failed to process message due to a permanent exception with message [BeginDiagnosticData]Cannot submit message.",
        stage: Stage::Message,
        sysexit: Sysexit::NoPerm,
    },
    CatalogueEntry {
        code: "5.7.60",
        sample: "550 5.7.60 SMTP; Client does not have permissions to send as this sender",
        stage: Stage::Message,
        sysexit: Sysexit::NoPerm,
    },
    CatalogueEntry {
        code: "4.3.2",
        sample: "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded [Hostname=AM0PR02MB1234.eurprd02.prod.outlook.com]",
        stage: Stage::Auth,
        sysexit: Sysexit::TempFail,
    },
    CatalogueEntry {
        code: "5.2.0",
        sample: "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to process message due to a permanent exception with message Cannot submit message.",
        stage: Stage::Message,
        sysexit: Sysexit::TempFail,
    },
    CatalogueEntry {
        code: "4.7.66",
        sample: "421 4.7.66 TLS 1.0 and 1.1 are not supported. Please upgrade/update your client to support TLS 1.2. Visit https://aka.ms/smtp_auth_tls.",
        stage: Stage::Ehlo,
        sysexit: Sysexit::TempFail,
    },
    CatalogueEntry {
        code: "5.7.30",
        sample: "550 5.7.30 Basic authentication is not supported for Client Submission.",
        stage: Stage::Auth,
        sysexit: Sysexit::NoPerm,
    },
    CatalogueEntry {
        code: "5.7.708",
        sample: "550 5.7.708 Service unavailable. Access denied, traffic not accepted from this IP. For more information please go to http://go.microsoft.com/fwlink/?LinkId=526653",
        stage: Stage::MailFrom,
        sysexit: Sysexit::NoPerm,
    },
    CatalogueEntry {
        code: "5.7.8",
        sample: "535-5.7.8 Username and Password not accepted. For more information, go to\n535 5.7.8  https://support.google.com/mail/?p=BadCredentials d9443c01a7336-1fb",
        stage: Stage::Auth,
        sysexit: Sysexit::NoPerm,
    },
    CatalogueEntry {
        code: "5.7.139",
        sample: "535 5.7.139 Authentication unsuccessful, basic authentication is disabled.",
        stage: Stage::Auth,
        sysexit: Sysexit::NoPerm,
    },
    CatalogueEntry {
        code: "5.7.0",
        sample: "530-5.7.0 Authentication Required. For more information, go to\n530 5.7.0  https://support.google.com/mail/?p=WantAuthError a640c23a62f3a-123 - gsmtp",
        stage: Stage::MailFrom,
        sysexit: Sysexit::NoPerm,
    },
    CatalogueEntry {
        code: "4.7.0",
        sample: "454 4.7.0 Too many concurrent SMTP connections; please try again later.",
        stage: Stage::Auth,
        sysexit: Sysexit::TempFail,
    },
    CatalogueEntry {
        code: "5.4.5",
        sample: "550-5.4.5 Daily user sending limit exceeded. For more information on Gmail\n550-5.4.5 sending limits go to\n550 5.4.5  https://support.google.com/a/answer/166852 a640c23a62f3a-123 - gsmtp",
        stage: Stage::Message,
        sysexit: Sysexit::TempFail,
    },
    CatalogueEntry {
        code: "4.5.3",
        sample: "452 4.5.3 Too many recipients",
        stage: Stage::RcptTo,
        sysexit: Sysexit::TempFail,
    },
    CatalogueEntry {
        code: "5.1.1",
        sample: "550 5.1.1 User unknown",
        stage: Stage::RcptTo,
        sysexit: Sysexit::Unavailable,
    },
    CatalogueEntry {
        code: "5.3.4",
        sample: "552 5.3.4 Message size exceeds fixed maximum message size",
        stage: Stage::Message,
        sysexit: Sysexit::DataErr,
    },
];

const AUTH_DISABLED_URL: &str = "https://aka.ms/smtp_auth_disabled";

/// The exit status a reply deserves when nothing more specific is known: 4xx (and the network)
/// 75, `5.7.x` (security or policy) 77, other 5xx 69.
pub fn default_status(reply: &Reply) -> Sysexit {
    if reply.is_transient() {
        Sysexit::TempFail
    } else if reply
        .enhanced
        .is_some_and(|e| e.class == 5 && e.subject == 7)
        || (reply.code == 535 || reply.code == 530)
    {
        Sysexit::NoPerm
    } else if reply.is_permanent() {
        Sysexit::Unavailable
    } else {
        Sysexit::Protocol
    }
}

/// Explains a reply.
pub fn diagnose_reply(reply: &Reply, ctx: &ReplyContext<'_>) -> Diagnosis {
    let text = reply.text();
    let lower = text.to_ascii_lowercase();
    let code = reply.enhanced;
    let is = |class: u8, subject: u16, detail: u16| {
        code == Some(EnhancedCode::new(class, subject, detail))
    };
    let verbatim = provider_says(reply, ctx.challenge);
    let user = ctx.auth_user.unwrap_or("the signed-in user");
    let code_text = reply.enhanced_or_default().to_string();
    let mut d = if lower.contains("basic authentication is disabled")
        || lower.contains("basic authentication is not supported")
        || is(5, 7, 30)
    {
        basic_auth(&code_text)
    } else if is(5, 7, 139) || lower.contains("smtpclientauthentication is disabled") {
        auth_disabled(&lower, user)
    } else if is(5, 2, 252)
        || lower.contains("sendasdenied")
        || lower.contains("send as this sender")
        || is(5, 7, 60)
    {
        let (who, mailbox) = send_as_names(&text);
        send_as_denied(
            &code_text,
            who.as_deref()
                .or(ctx.auth_user)
                .unwrap_or("the signed-in user"),
            mailbox
                .as_deref()
                .or(ctx.mail_from)
                .unwrap_or("the From address"),
        )
    } else if is(5, 7, 8) || (ctx.challenge.is_some() && reply.code == 535) {
        google_refused(ctx)
    } else if is(5, 7, 3) || (reply.code == 535 && ctx.stage == Stage::Auth) {
        token_refused(ctx)
    } else if is(5, 7, 57)
        || (reply.code == 530
            && (lower.contains("not authenticated") || lower.contains("authentication required")))
    {
        not_authenticated(&code_text)
    } else if lower.contains("thread limit")
        || lower.contains("too many concurrent smtp connections")
    {
        thread_limit(&code_text, user)
    } else if lower.contains("submissionquotaexceeded")
        || (is(5, 2, 0) && lower.contains("quota"))
        || lower.contains("sending limit exceeded")
    {
        quota_exceeded(&code_text, user)
    } else if is(4, 7, 66) || lower.contains("tls 1.0 and 1.1") {
        old_tls(ctx.host)
    } else if is(5, 7, 708) || lower.contains("traffic not accepted from this ip") {
        ip_refused()
    } else if is(4, 5, 3) || is(5, 5, 3) || lower.contains("too many recipients") {
        too_many_recipients(reply, ctx.recipient)
    } else if code.is_some_and(|e| e.class == 5 && e.subject == 1 && matches!(e.detail, 1 | 10))
        || (ctx.stage == Stage::RcptTo && (reply.code == 550 || reply.code == 553))
    {
        recipient_refused(ctx.recipient)
    } else if is(5, 3, 4) || reply.code == 552 || lower.contains("message size exceeds") {
        too_big()
    } else {
        unknown(reply, ctx)
    };
    d.provider_says = verbatim;
    d
}

fn provider_says(reply: &Reply, challenge: Option<&OAuthChallenge>) -> String {
    let mut s = reply.verbatim();
    if let Some(c) = challenge {
        s.push_str(&format!(
            "\n  (before that, its 334 challenge decoded: {})",
            c.raw.trim()
        ));
    }
    s
}

fn diagnosis(
    code: &str,
    title: String,
    explanation: String,
    fix: Vec<String>,
    sysexit: Sysexit,
) -> Diagnosis {
    Diagnosis {
        code: code.into(),
        title,
        explanation,
        fix,
        provider_says: String::new(),
        sysexit,
    }
}

fn auth_disabled(lower: &str, user: &str) -> Diagnosis {
    let tenant = lower.contains("for the tenant");
    let mailbox_fix = vec![
        format!(
            "For the mailbox: Microsoft 365 admin center → Users → Active users → {user} → Mail → Manage email apps → tick \"Authenticated SMTP\" → Save changes."
        ),
        format!("Or in Exchange Online PowerShell: Set-CASMailbox -Identity {user} -SmtpClientAuthenticationDisabled $false"),
    ];
    let tenant_fix = vec![
        "For the whole tenant: Exchange admin center → Settings → Mail flow → untick \"Turn off SMTP AUTH protocol for your organization\".".to_string(),
        "Or in Exchange Online PowerShell: Set-TransportConfig -SmtpClientAuthenticationDisabled $false".to_string(),
    ];
    let mut fix = Vec::new();
    if tenant {
        fix.extend(tenant_fix);
        fix.push("A per-mailbox setting overrides the tenant's: if the tenant must stay off, enable only this mailbox:".into());
        fix.extend(mailbox_fix);
    } else {
        fix.extend(mailbox_fix);
        fix.extend(tenant_fix);
    }
    fix.push("Security defaults turn SMTP AUTH off whatever the settings above say: check Microsoft Entra admin center → Identity → Overview → Properties → Manage security defaults.".into());
    fix.push(format!("Changes can take up to an hour to apply; then run `mailgate test`. Microsoft's page: {AUTH_DISABLED_URL}"));
    diagnosis(
        "5.7.139",
        format!(
            "SMTP AUTH (\"Authenticated SMTP\") is disabled {}",
            if tenant { "for the tenant".to_string() } else { format!("for the mailbox {user}") }
        ),
        format!(
            "Microsoft 365 refused the login before looking at the token: authenticated SMTP submission is turned off {}. New tenants have it off, and security defaults disable it.",
            if tenant { "for the whole organization" } else { "for this mailbox" }
        ),
        fix,
        Sysexit::NoPerm,
    )
}

fn token_refused(ctx: &ReplyContext<'_>) -> Diagnosis {
    let user = ctx.auth_user.unwrap_or("the account");
    let mut fix = vec![
        "The token must be for the Outlook SMTP scope: delegated https://outlook.office.com/SMTP.Send (offline_access for a refresh token), or app-only https://outlook.office365.com/.default. A Microsoft Graph token (https://graph.microsoft.com/...) or a token mixing resources is refused: check the account's scopes and run `mailgate login` again.".to_string(),
        format!(
            "user= must be the account that signed in ({user}), not a shared mailbox: to send as a shared mailbox, sign in as a member and set the account's `from` (or --from) to the shared address."
        ),
        "The token must not have expired or been revoked: `mailgate token` shows a fresh one (refreshing it); if the refresh fails, run `mailgate login`.".to_string(),
        "The app registration needs the delegated permission SMTP.Send with user or admin consent (Entra admin center → App registrations → the app → API permissions).".to_string(),
        format!(
            "For app-only (client credentials) tokens, Exchange must know the app: New-ServicePrincipal -AppId <app id> -ObjectId <enterprise app object id>, then Add-MailboxPermission -Identity {user} -User <service principal id> -AccessRights FullAccess, and the SMTP.SendAsApp application permission with admin consent."
        ),
    ];
    if let Some(from) = ctx.mail_from.filter(|f| !f.eq_ignore_ascii_case(user)) {
        fix.push(format!("Sending as {from} needs Send As for {user} on it, but that is checked later; AUTH itself must use {user}."));
    }
    diagnosis(
        "5.7.3",
        "Microsoft 365 refused the token (535 5.7.3 Authentication unsuccessful)".into(),
        format!(
            "SMTP AUTH is enabled but the OAuth2 token or the login name ({user}) did not pass. The server does not say which check failed; check these, most likely first:"
        ),
        fix,
        Sysexit::NoPerm,
    )
}

fn google_refused(ctx: &ReplyContext<'_>) -> Diagnosis {
    let user = ctx.auth_user.unwrap_or("the account");
    let mut explanation = format!("{} refused the token presented for {user}.", ctx.host);
    if let Some(c) = ctx.challenge {
        explanation.push_str(" Before refusing, the server sent a 334 challenge");
        if let Some(status) = &c.status {
            explanation.push_str(&format!(" with status {status}"));
            if let Some(m) = c.status_meaning() {
                explanation.push_str(&format!(" ({m})"));
            }
        }
        if let Some(scope) = &c.scope {
            explanation.push_str(&format!(", naming the scope it requires: {scope}"));
        }
        explanation.push('.');
    }
    let scope = ctx
        .challenge
        .and_then(|c| c.scope.clone())
        .unwrap_or_else(|| "https://mail.google.com/".into());
    diagnosis(
        "5.7.8",
        "The server refused the OAuth2 token (Username and Password not accepted)".into(),
        explanation,
        vec![
            format!("The token must carry the scope {scope} (for Gmail SMTP, gmail.send is not enough): add it to the account's scopes and run `mailgate login`."),
            format!("user= must be the Google account that signed in ({user})."),
            "Refresh tokens of OAuth apps left in \"Testing\" publishing status expire after 7 days: publish the app (Google Cloud console → APIs & Services → OAuth consent screen → Publish app) or run `mailgate login` again.".into(),
            "An expired access token is refreshed by `mailgate token`; a revoked one (password change, access removed at myaccount.google.com/permissions) needs `mailgate login`.".into(),
        ],
        Sysexit::NoPerm,
    )
}

fn not_authenticated(code: &str) -> Diagnosis {
    diagnosis(
        code,
        format!("The server says the client is not authenticated ({code})"),
        "MAIL FROM came on a connection that had not authenticated. Microsoft 365 accepts submission only after STARTTLS and a successful AUTH; a device or proxy that skips AUTH (or talks to port 25 of smtp.office365.com) gets this.".into(),
        vec![
            "Use smtp.office365.com, port 587, security = \"starttls\" with auth = \"xoauth2\".".into(),
            "Programs that cannot authenticate (printers, scanners) should send to mailgate (sendmail or the relay), which authenticates for them.".into(),
            "Run `mailgate test` to see each step of the session.".into(),
        ],
        Sysexit::NoPerm,
    )
}

/// Parses `a@x not allowed to send as b@y` out of a SendAsDenied reply.
pub fn send_as_names(text: &str) -> (Option<String>, Option<String>) {
    let marker = " not allowed to send as ";
    let lower = text.to_ascii_lowercase();
    let Some(at) = lower.find(marker) else {
        return (None, None);
    };
    let clean = |s: &str| {
        s.trim_matches(|c: char| {
            c == ';' || c == ',' || c == '<' || c == '>' || c == '.' || c.is_whitespace()
        })
        .to_string()
    };
    let who = text[..at]
        .split_whitespace()
        .last()
        .map(clean)
        .filter(|s| s.contains('@'));
    let mailbox = text[at + marker.len()..]
        .split_whitespace()
        .next()
        .map(clean)
        .filter(|s| s.contains('@'));
    (who, mailbox)
}

fn send_as_denied(code: &str, user: &str, mailbox: &str) -> Diagnosis {
    diagnosis(
        code,
        format!("{user} is not allowed to send as {mailbox} (missing \"Send As\")"),
        format!(
            "The message was refused after it was sent: {user} signed in correctly but lacks the Send As permission on {mailbox}. Membership of a shared mailbox (Full Access) is not enough to send as it; Send As is a separate grant."
        ),
        vec![
            format!(
                "An Exchange admin grants it: Exchange admin center → Recipients → Mailboxes → {mailbox} → Delegation → Send As → Edit → add {user} → Save."
            ),
            format!(
                "Or in Exchange Online PowerShell: Add-RecipientPermission -Identity {mailbox} -Trustee {user} -AccessRights SendAs -Confirm:$false"
            ),
            format!(
                "The grant can take up to an hour to apply. Until then, send from {user} (leave out --from, or remove `from` from the account)."
            ),
        ],
        Sysexit::NoPerm,
    )
}

fn thread_limit(code: &str, user: &str) -> Diagnosis {
    diagnosis(
        code,
        "Too many simultaneous connections for this mailbox (sender thread limit exceeded)".into(),
        format!(
            "The provider limits concurrent SMTP connections per mailbox (Microsoft 365: 3, Gmail: 15); other clients sending as {user} (scripts, scanners, other mailgate processes) already hold them. This is temporary."
        ),
        vec![
            "Retry later: mailgate exits 75 so that cron and sendmail callers retry.".into(),
            "Send many messages over one connection (mailgate's batch sending or the relay) instead of one process per message in parallel.".into(),
            format!("Look for other programs that send as {user} at the same time."),
        ],
        Sysexit::TempFail,
    )
}

fn quota_exceeded(code: &str, user: &str) -> Diagnosis {
    diagnosis(
        code,
        "The mailbox has reached its daily sending limit".into(),
        format!(
            "Microsoft 365 limits each mailbox to 10,000 recipients per rolling 24 hours (SubmissionQuotaExceeded), Gmail to 2,000 messages a day for Workspace and 500 for free accounts; {user} has used them up. On Microsoft 365 a full mailbox gives the same error, since sent copies go to Sent Items. The message can be sent once the window frees up."
        ),
        vec![
            "Wait: recipients drop out of the 24-hour window one by one. mailgate exits 75 so that callers retry later.".into(),
            format!("Check {user}'s storage: Microsoft 365 admin center → Users → Active users → {user} → Mail → Mailbox storage; empty Sent Items or Deleted Items if it is full."),
            "For bulk mail, use a service meant for it (Azure Communication Services Email, Exchange High Volume Email) instead of a user mailbox.".into(),
        ],
        Sysexit::TempFail,
    )
}

fn old_tls(host: &str) -> Diagnosis {
    diagnosis(
        "4.7.66",
        "The server refused the TLS version (TLS 1.0 and 1.1 are not supported)".into(),
        format!(
            "{host} requires TLS 1.2 or newer. mailgate only offers TLS 1.2 and 1.3, so something between mailgate and the server (a TLS-inspecting proxy, firewall or antivirus) re-encrypted the connection with an older version."
        ),
        vec![
            format!("Exempt {host} port 587 from TLS inspection, or update the proxy to TLS 1.2."),
            "Retrying does not help until that is fixed (mailgate exits 75 because the server says 4xx).".into(),
        ],
        Sysexit::TempFail,
    )
}

fn basic_auth(code: &str) -> Diagnosis {
    diagnosis(
        code,
        "Basic authentication is not supported for client submission".into(),
        "The server received a username and password (AUTH LOGIN or PLAIN). Microsoft is retiring Basic authentication for SMTP AUTH: it is off by default for existing tenants from the end of December 2026, and already off in many. Only OAuth2 works.".into(),
        vec![
            "Use OAuth2: `mailgate login` for the account, then send with mailgate.".into(),
            "Devices and programs that only know a password (scanners, printers, old scripts) should send through mailgate (sendmail or the relay), which adds the OAuth2 token.".into(),
        ],
        Sysexit::NoPerm,
    )
}

fn ip_refused() -> Diagnosis {
    diagnosis(
        "5.7.708",
        "Microsoft 365 does not accept mail from this IP address (5.7.708)".into(),
        "Microsoft restricts outbound mail from new or trial tenants and from IP addresses with a poor reputation. It is a tenant/network restriction, not a problem with the token.".into(),
        vec![
            "Open a support request in the Microsoft 365 admin center (Support → New service request) to have the restriction lifted; new tenants may need a paid license and some sending history.".into(),
            "Check the Microsoft Defender portal → Email & collaboration → Review → Restricted entities in case the user was blocked for sending spam.".into(),
            "Try from another network (office instead of a cloud VM): many cloud IP ranges have a poor reputation.".into(),
        ],
        Sysexit::NoPerm,
    )
}

fn too_many_recipients(reply: &Reply, recipient: Option<&str>) -> Diagnosis {
    let who = recipient.map(|r| format!(" ({r})")).unwrap_or_default();
    diagnosis(
        "4.5.3",
        format!("Too many recipients for one message{who}"),
        "The server accepts a limited number of recipients per message (Microsoft 365: 500) and refused those beyond it. The other recipients got the message.".into(),
        vec![
            "Send to the refused recipients in another message (mailgate lists them).".into(),
            "For large lists, split them into messages of at most 500 recipients, or use a distribution group as the single recipient.".into(),
        ],
        if reply.is_transient() { Sysexit::TempFail } else { Sysexit::Unavailable },
    )
}

fn recipient_refused(recipient: Option<&str>) -> Diagnosis {
    let who = recipient.unwrap_or("the recipient");
    diagnosis(
        "5.1.1",
        format!("The server refused the recipient {who}"),
        "The address does not exist or is not accepted by the server. The other recipients (if any) got the message.".into(),
        vec![format!("Check the spelling of {who}.")],
        Sysexit::Unavailable,
    )
}

fn too_big() -> Diagnosis {
    diagnosis(
        "5.3.4",
        "The message is too large".into(),
        "The server refused the message for its size. Exchange Online's default limit is 35 MB per message (after MIME encoding, which adds about a third to attachments).".into(),
        vec![
            "Send smaller attachments, or share large files as links.".into(),
            "An admin can raise the mailbox limit: Set-Mailbox -Identity <user> -MaxSendSize 150MB".into(),
        ],
        Sysexit::DataErr,
    )
}

fn unknown(reply: &Reply, ctx: &ReplyContext<'_>) -> Diagnosis {
    let code = reply.enhanced_or_default();
    let sysexit = default_status(reply);
    let fix = if reply.is_transient() {
        vec![
            "This is a temporary refusal: retry later (mailgate exits 75 so callers retry).".into(),
        ]
    } else {
        vec![format!(
            "Look up the enhanced status code {code} in the provider's documentation; the reply's own text (below) usually names the cause."
        )]
    };
    diagnosis(
        &code.to_string(),
        format!(
            "{} refused {} with {} {}",
            ctx.host, ctx.stage, reply.code, code
        ),
        "mailgate has no explanation for this reply; it is shown verbatim below.".into(),
        fix,
        sysexit,
    )
}

/// Explains a failed TCP connection.
pub fn connect_failure(host: &str, port: u16, err: &std::io::Error) -> Diagnosis {
    use std::io::ErrorKind;
    let why = match err.kind() {
        ErrorKind::ConnectionRefused => format!("Nothing accepted the connection on {host} port {port}: the port is wrong, the server is down, or a firewall rejects it."),
        ErrorKind::NotFound => format!("The host name {host} could not be resolved: check its spelling and this machine's DNS."),
        _ if err.to_string().contains("failed to lookup address") || err.to_string().contains("Name or service not known") => {
            format!("The host name {host} could not be resolved: check its spelling and this machine's DNS.")
        }
        _ => format!("The network did not let mailgate reach {host} port {port}."),
    };
    diagnosis(
        "connect",
        format!("Cannot reach {host}:{port}"),
        why,
        connect_fixes(host, port),
        Sysexit::TempFail,
    )
}

/// Explains a connection that did not complete in time.
pub fn connect_timeout(host: &str, port: u16, after: Duration) -> Diagnosis {
    diagnosis(
        "connect-timeout",
        format!("No answer from {host}:{port} within {}s", after.as_secs()),
        "The connection attempt was silently dropped: usually a firewall, or a provider that blocks outgoing SMTP ports.".into(),
        connect_fixes(host, port),
        Sysexit::TempFail,
    )
}

fn connect_fixes(host: &str, port: u16) -> Vec<String> {
    vec![
        "Microsoft 365 is smtp.office365.com port 587 (STARTTLS); Gmail is smtp.gmail.com port 587 (STARTTLS) or 465 (TLS).".into(),
        format!("Many ISPs and cloud providers block outgoing SMTP: check with `nc -vz {host} {port}` from this machine."),
        "mailgate exits 75, so cron and sendmail callers retry later.".into(),
    ]
}

/// Explains a failed TLS handshake.
pub fn tls_failure(host: &str, message: &str) -> Diagnosis {
    let (title, why, fix) = if message.contains("UnknownIssuer")
        || message.contains("unknown issuer")
    {
        (
            format!("The certificate of {host} is not trusted"),
            "The certificate was not issued by an authority this machine trusts. A TLS-inspecting proxy or antivirus that re-signs connections causes this, as does a test server.".to_string(),
            vec![
                "If your network re-signs TLS, set `ca_file` in the account to the proxy's CA certificate (PEM).".to_string(),
                "Otherwise make sure the system's CA certificates are installed (Debian: apt-get install ca-certificates).".to_string(),
            ],
        )
    } else if message.contains("NotValidForName") || message.contains("not valid for name") {
        (
            format!("The certificate does not name {host}"),
            "The server's certificate is for another name. This happens when connecting by IP address or through an alias.".to_string(),
            vec!["Use the server's DNS name (smtp.office365.com, smtp.gmail.com) as `host`.".to_string()],
        )
    } else if message.contains("Expired") || message.contains("expired") {
        (
            format!("The certificate of {host} has expired"),
            "The server presented an expired certificate, or this machine's clock is wrong.".to_string(),
            vec!["Check the system clock (timedatectl); if it is right, the server must renew its certificate.".to_string()],
        )
    } else {
        (
            format!("TLS with {host} failed"),
            "The TLS handshake did not complete. mailgate requires TLS 1.2 or newer.".to_string(),
            vec!["Check that the port speaks the expected protocol: 587 is STARTTLS (security = \"starttls\"), 465 is TLS from the first byte (security = \"tls\").".to_string()],
        )
    };
    diagnosis("tls", title, why, fix, Sysexit::Unavailable)
}

/// Explains a server that does not offer the SASL mechanism the account is set to use.
pub fn mechanism_not_offered(host: &str, wanted: AuthMechanism, offered: &[String]) -> Diagnosis {
    let other = match wanted {
        AuthMechanism::Xoauth2 => ("OAUTHBEARER", "oauthbearer"),
        AuthMechanism::Oauthbearer => ("XOAUTH2", "xoauth2"),
    };
    let offers_other = offered.iter().any(|m| m.eq_ignore_ascii_case(other.0));
    let (fix, status) = if offers_other {
        (
            vec![format!(
                "Set `auth = \"{}\"` in the account: {host} offers {}.",
                other.1, other.0
            )],
            Sysexit::Config,
        )
    } else if offered.is_empty() {
        (
            vec![
                "The server offers no AUTH at all on this connection: check the port (Microsoft 365 and Gmail take submissions on 587 with STARTTLS).".to_string(),
                "On Microsoft 365, make sure SMTP AUTH is enabled for the tenant or mailbox (Set-CASMailbox -Identity <user> -SmtpClientAuthenticationDisabled $false).".to_string(),
            ],
            Sysexit::Unavailable,
        )
    } else {
        (
            vec![
                "This server does not take OAuth2 tokens; mailgate cannot authenticate to it."
                    .to_string(),
            ],
            Sysexit::Unavailable,
        )
    };
    diagnosis(
        "auth-mechanism",
        format!("{host} does not offer AUTH {}", mechanism_name(wanted)),
        format!(
            "It offers: {}.",
            if offered.is_empty() {
                "nothing".to_string()
            } else {
                offered.join(" ")
            }
        ),
        fix,
        status,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(stage: Stage) -> ReplyContext<'static> {
        ReplyContext {
            auth_user: Some("alice@contoso.com"),
            mail_from: Some("support@contoso.com"),
            ..ReplyContext::new(stage, "smtp.office365.com")
        }
    }

    #[test]
    fn every_catalogue_entry_is_recognised_with_its_status() {
        for entry in CATALOGUE {
            let reply = Reply::parse(entry.sample)
                .unwrap_or_else(|| panic!("sample parses: {}", entry.sample));
            let d = diagnose_reply(&reply, &ctx(entry.stage));
            assert_eq!(d.code, entry.code, "{}", entry.sample);
            assert_eq!(d.sysexit, entry.sysexit, "{}", entry.sample);
            assert!(!d.fix.is_empty());
            assert!(d.provider_says.contains(&reply.verbatim()));
            assert!(!d.title.contains("refused") || !d.explanation.contains("no explanation"));
        }
    }

    #[test]
    fn auth_disabled_names_authenticated_smtp_and_both_fixes() {
        let reply = Reply::parse(CATALOGUE[0].sample).unwrap();
        let text = diagnose_reply(&reply, &ctx(Stage::Auth)).to_string();
        assert!(text.contains("Authenticated SMTP"));
        assert!(text.contains(
            "Set-CASMailbox -Identity alice@contoso.com -SmtpClientAuthenticationDisabled $false"
        ));
        assert!(text.contains("Set-TransportConfig -SmtpClientAuthenticationDisabled $false"));
        assert!(text.contains("Security defaults"));
        assert!(text.contains("for the tenant"));
        let reply = Reply::parse(CATALOGUE[1].sample).unwrap();
        let d = diagnose_reply(&reply, &ctx(Stage::Auth));
        assert!(d.title.contains("for the mailbox alice@contoso.com"));
        assert!(d.fix[0].contains("Manage email apps"));
    }

    #[test]
    fn send_as_denied_names_user_and_mailbox() {
        let reply = Reply::parse(
            "554 5.2.252 SendAsDenied; bob@contoso.com not allowed to send as sales@contoso.com; STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied",
        )
        .unwrap();
        let d = diagnose_reply(&reply, &ctx(Stage::Message));
        assert_eq!(
            d.title,
            "bob@contoso.com is not allowed to send as sales@contoso.com (missing \"Send As\")"
        );
        let text = d.to_string();
        assert!(text.contains("Recipients → Mailboxes → sales@contoso.com → Delegation → Send As"));
        assert!(text.contains("Add-RecipientPermission -Identity sales@contoso.com -Trustee bob@contoso.com -AccessRights SendAs"));
        // 5.7.60 names nobody: the context does.
        let reply = Reply::parse(CATALOGUE[5].sample).unwrap();
        let d = diagnose_reply(&reply, &ctx(Stage::Message));
        assert!(d
            .title
            .contains("alice@contoso.com is not allowed to send as support@contoso.com"));
    }

    #[test]
    fn token_refused_lists_the_checks() {
        let reply = Reply::parse(CATALOGUE[2].sample).unwrap();
        let text = diagnose_reply(&reply, &ctx(Stage::Auth)).to_string();
        assert!(text.contains("https://outlook.office.com/SMTP.Send"));
        assert!(text.contains("not a shared mailbox"));
        assert!(text.contains("expired"));
    }

    #[test]
    fn gmail_refusal_shows_the_challenge() {
        let challenge = OAuthChallenge {
            raw: r#"{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}"#.into(),
            status: Some("400".into()),
            schemes: Some("Bearer".into()),
            scope: Some("https://mail.google.com/".into()),
            openid_configuration: None,
        };
        let reply = Reply::parse(CATALOGUE[11].sample).unwrap();
        let c = ReplyContext {
            challenge: Some(&challenge),
            ..ctx(Stage::Auth)
        };
        let text = diagnose_reply(&reply, &c).to_string();
        assert!(text
            .contains(r#"{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}"#));
        assert!(text.contains("\"Testing\" publishing status"));
        assert!(text.contains("7 days"));
    }

    #[test]
    fn unknown_replies_are_shown_verbatim_with_their_code() {
        let reply = Reply::parse("550 5.4.317 Message expired, cannot process").unwrap();
        let d = diagnose_reply(&reply, &ctx(Stage::Message));
        assert_eq!(d.code, "5.4.317");
        assert_eq!(d.sysexit, Sysexit::Unavailable);
        assert!(d
            .provider_says
            .contains("550 5.4.317 Message expired, cannot process"));
        let reply = Reply::parse("451 4.7.500 Server busy").unwrap();
        assert_eq!(
            diagnose_reply(&reply, &ctx(Stage::Message)).sysexit,
            Sysexit::TempFail
        );
        let reply = Reply::parse("554 Transaction failed").unwrap();
        let d = diagnose_reply(&reply, &ctx(Stage::Message));
        assert_eq!(d.code, "5.0.0");
        assert_eq!(d.sysexit, Sysexit::Unavailable);
    }
}
