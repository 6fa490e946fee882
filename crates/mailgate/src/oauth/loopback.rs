//! [`LoopbackListener`]: the temporary HTTP server on `http://localhost:PORT/` that receives the
//! browser after sign-in (RFC 8252 §7.3).
//!
//! It answers only what it must: a `GET` of the redirect path carrying `code` or `error`. Other
//! paths (`/favicon.ico`, probes) get a 404 and the listener keeps waiting; so does a bare visit of
//! the redirect path. Each connection is served on a task of its own, so a browser's idle
//! pre-connection cannot hold up the real redirect.
//!
//! # A wrong `state`
//!
//! A redirect whose `state` is not the one this login sent is answered with an error page, its
//! code is never used, and the listener **keeps waiting** (the count of rejected redirects shows in
//! the timeout error). Any web page the user visits can make the browser request
//! `http://localhost:PORT/?code=...&state=...`; failing on the first such request would let that
//! page cancel every login, while ignoring it lets the real redirect still arrive. Whether we fail
//! or wait, the forged code is never redeemed, which is what protects against login CSRF
//! (signing the user in as the attacker). The same holds for an `error=` redirect with a wrong
//! state: it cannot abort the login.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::client::is_loopback_host;
use super::error::{OAuthError, ProviderError};
use super::pkce::constant_time_eq;
use crate::diagnose::aadsts;
use crate::Secret;

/// The largest request head we read from the browser.
const MAX_HEAD: usize = 16 * 1024;
/// How long a connection may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the browser's connection is held open waiting for the outcome of the code exchange.
const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// What the listener received for this login.
#[derive(Debug)]
pub enum Callback {
    /// An authorization code, with the browser's connection still open for the outcome page.
    Code {
        /// The code, single-use, about 10 minutes.
        code: Secret,
        /// Answers the browser once the code has been exchanged.
        reply: BrowserReply,
    },
    /// The provider sent the browser back with `error=...` (the browser was already answered).
    Error(ProviderError),
}

/// The browser's connection, held until the code exchange says whether the login worked.
/// Dropping it answers with a neutral page that sends the user back to the terminal.
#[derive(Debug)]
pub struct BrowserReply {
    page: oneshot::Sender<Page>,
    written: oneshot::Receiver<()>,
}

impl BrowserReply {
    /// Shows `message` as a success page and waits (briefly) until it is written.
    pub async fn success(self, message: &str) {
        self.send(Page::success(message)).await
    }

    /// Shows `message` as a failure page and waits (briefly) until it is written.
    pub async fn failure(self, message: &str) {
        self.send(Page::failure(message)).await
    }

    async fn send(self, page: Page) {
        if self.page.send(page).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), self.written).await;
        }
    }
}

/// A small HTML page.
#[derive(Debug)]
struct Page {
    status: &'static str,
    title: &'static str,
    message: String,
}

impl Page {
    fn success(message: &str) -> Page {
        Page {
            status: "200 OK",
            title: "Signed in",
            message: message.into(),
        }
    }

    fn failure(message: &str) -> Page {
        Page {
            status: "200 OK",
            title: "Sign-in failed",
            message: message.into(),
        }
    }

    fn render(&self) -> String {
        let body = format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <title>mailgate: {title}</title>\
             <style>body{{font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;\
             padding:0 1em;line-height:1.5}}</style></head>\
             <body><h1 id=\"result\">{title}</h1><p id=\"message\">{message}</p>\
             <p>You can close this tab and return to the terminal.</p></body></html>\n",
            title = html_escape(self.title),
            message = html_escape(&self.message).replace('\n', "<br>"),
        );
        format!(
            "HTTP/1.1 {}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nReferrer-Policy: no-referrer\r\n\
             X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n{}",
            self.status,
            body.len(),
            body
        )
    }
}

/// Escapes text for HTML.
fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What a connection task reports to the waiting login.
enum Event {
    Callback(Callback),
    /// A redirect with a wrong or missing `state` was rejected.
    WrongState,
}

/// Shared by the connection tasks.
struct Shared {
    path: String,
    state: Secret,
    /// Set once a redirect with the right state has been taken; later ones are told so.
    taken: AtomicBool,
    events: mpsc::Sender<Event>,
}

/// A listener on the loopback interface for the sign-in redirect.
#[derive(Debug)]
pub struct LoopbackListener {
    listeners: Vec<TcpListener>,
    redirect_uri: url::Url,
}

impl LoopbackListener {
    /// Binds the port of `redirect_uri` (an `http://localhost`, `127.0.0.1` or `[::1]` URI) as
    /// `port` says: 0 picks a free port. The redirect URI then carries the bound port (Entra ID
    /// and Google ignore the port of loopback redirect URIs). For `localhost`, both 127.0.0.1 and
    /// ::1 are bound (when the machine has IPv6), since browsers may resolve it to either.
    pub async fn bind(redirect_uri: &str, port: u16) -> Result<LoopbackListener, OAuthError> {
        let invalid = |reason: &str| OAuthError::InvalidEndpoint {
            what: "redirect_uri",
            url: redirect_uri.to_string(),
            reason: reason.to_string(),
        };
        let mut uri = url::Url::parse(redirect_uri).map_err(|_| invalid("not a URL"))?;
        let host = uri.host().ok_or_else(|| invalid("it has no host"))?;
        if uri.scheme() != "http" || !is_loopback_host(&host) {
            return Err(invalid(
                "the authorization code flow needs a loopback redirect URI such as \
                 http://localhost:3017/ (or use flow = \"device_code\")",
            ));
        }
        let addrs: Vec<IpAddr> = match host {
            url::Host::Domain(_) => vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()],
            url::Host::Ipv4(a) => vec![a.into()],
            url::Host::Ipv6(a) => vec![a.into()],
        };
        let mut listeners = Vec::new();
        let mut port = port;
        for (i, ip) in addrs.iter().enumerate() {
            let addr = SocketAddr::new(*ip, port);
            match TcpListener::bind(addr).await {
                Ok(l) => {
                    if port == 0 {
                        port = l
                            .local_addr()
                            .map_err(|source| OAuthError::Listen {
                                addr: addr.to_string(),
                                source,
                            })?
                            .port();
                    }
                    listeners.push(l);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    let addr = addr.to_string();
                    return Err(OAuthError::PortInUse {
                        diagnosis: Box::new(aadsts::port_in_use(&addr)),
                        addr,
                    });
                }
                // The second address of `localhost` is a bonus: a machine without IPv6 is fine.
                Err(_) if i > 0 => {}
                Err(source) => {
                    return Err(OAuthError::Listen {
                        addr: addr.to_string(),
                        source,
                    })
                }
            }
        }
        uri.set_port(Some(port))
            .map_err(|_| invalid("cannot set its port"))?;
        tracing::debug!(redirect_uri = %uri, "listening for the sign-in redirect");
        Ok(LoopbackListener {
            listeners,
            redirect_uri: uri,
        })
    }

    /// The redirect URI to send, with the bound port.
    pub fn redirect_uri(&self) -> &str {
        self.redirect_uri.as_str()
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.redirect_uri.port().unwrap_or(80)
    }

    /// Waits until a redirect with this `state` arrives, or `timeout` passes. Redirects with
    /// another state are rejected and waiting goes on (see the module documentation).
    pub async fn wait(
        self,
        state: &Secret,
        timeout: Duration,
        ctx: &aadsts::Context,
    ) -> Result<Callback, OAuthError> {
        let (tx, mut rx) = mpsc::channel(16);
        let shared = Arc::new(Shared {
            path: self.redirect_uri.path().to_string(),
            state: state.clone(),
            taken: AtomicBool::new(false),
            events: tx,
        });
        // The accept loops stop when this set is dropped; connection tasks finish on their own.
        let mut accepting = JoinSet::new();
        for listener in self.listeners {
            let shared = shared.clone();
            accepting.spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((stream, peer)) => {
                            tracing::debug!(%peer, "connection on the redirect listener");
                            tokio::spawn(serve(stream, shared.clone()));
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            });
        }
        drop(shared);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rejected = 0usize;
        loop {
            tokio::select! {
                event = rx.recv() => match event {
                    Some(Event::Callback(cb)) => return Ok(cb),
                    Some(Event::WrongState) => {
                        rejected += 1;
                        tracing::warn!(
                            "ignored a sign-in redirect whose state does not belong to this login \
                             (an old browser tab, or a forged request); still waiting"
                        );
                    }
                    // Cannot happen while the accept loops run; if it did, nothing more can
                    // arrive, so wait out the time the user was promised and report it.
                    None => {
                        tokio::time::sleep_until(deadline).await;
                        break;
                    }
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        let uri = self.redirect_uri.to_string();
        Err(OAuthError::Timeout {
            diagnosis: Box::new(aadsts::login_timeout(&uri, timeout, rejected, ctx)),
            redirect_uri: uri,
            waited: timeout,
            rejected,
        })
    }
}

/// Reads a request head, up to the blank line.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            return String::from_utf8(buf).ok();
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
    }
}

async fn write_page(stream: &mut TcpStream, page: &Page) {
    let _ = stream.write_all(page.render().as_bytes()).await;
    let _ = stream.flush().await;
    let _ = stream.shutdown().await;
}

/// Serves one connection of the browser (or of anything else).
async fn serve(mut stream: TcpStream, shared: Arc<Shared>) {
    let Ok(Some(head)) = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await else {
        return;
    };
    let mut words = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let page = |status, title, message: &str| Page {
        status,
        title,
        message: message.into(),
    };
    // Parse the target against a dummy base; only its path and query matter.
    let Ok(url) = url::Url::parse("http://localhost").and_then(|b| b.join(target)) else {
        return write_page(&mut stream, &page("400 Bad Request", "Bad request", "")).await;
    };
    if method != "GET" || url.path() != shared.path {
        tracing::debug!(method, path = url.path(), "not the redirect: 404");
        let p = page(
            "404 Not Found",
            "Not found",
            "This address only receives mailgate's sign-in redirect.",
        );
        return write_page(&mut stream, &p).await;
    }
    let params: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let (code, error) = (param("code"), param("error"));
    if code.is_none() && error.is_none() {
        let p = page(
            "400 Bad Request",
            "Waiting for sign-in",
            "mailgate is waiting for the sign-in redirect; this request carried none. Sign in \
             from the URL mailgate printed.",
        );
        return write_page(&mut stream, &p).await;
    }
    let state_ok = param("state").is_some_and(|s| constant_time_eq(s, shared.state.expose()));
    if !state_ok {
        let p = page(
            "400 Bad Request",
            "Sign-in response rejected",
            "This sign-in response does not belong to the login mailgate is waiting for (its \
             state does not match: an old tab, or a request not made by mailgate). It was \
             ignored and its code was not used. Sign in from the URL mailgate printed.",
        );
        write_page(&mut stream, &p).await;
        let _ = shared.events.send(Event::WrongState).await;
        return;
    }
    if shared.taken.swap(true, Ordering::SeqCst) {
        let p = page(
            "409 Conflict",
            "Already received",
            "mailgate already received the sign-in response for this login.",
        );
        return write_page(&mut stream, &p).await;
    }
    if let Some(code) = code.filter(|_| error.is_none()) {
        let (page_tx, page_rx) = oneshot::channel();
        let (written_tx, written_rx) = oneshot::channel();
        let callback = Callback::Code {
            code: Secret::new(code),
            reply: BrowserReply {
                page: page_tx,
                written: written_rx,
            },
        };
        if shared.events.send(Event::Callback(callback)).await.is_err() {
            return;
        }
        let outcome = match tokio::time::timeout(REPLY_TIMEOUT, page_rx).await {
            Ok(Ok(p)) => p,
            _ => Page {
                status: "200 OK",
                title: "Sign-in response received",
                message: "mailgate received the sign-in response. The terminal shows whether \
                          the login worked."
                    .into(),
            },
        };
        write_page(&mut stream, &outcome).await;
        let _ = written_tx.send(());
    } else {
        let provider =
            ProviderError::from_redirect(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let p = Page::failure(&format!(
            "The identity provider refused the sign-in: {}\nThe terminal explains what to do.",
            provider
        ));
        write_page(&mut stream, &p).await;
        let _ = shared
            .events
            .send(Event::Callback(Callback::Error(provider)))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn request(port: u16, target: &str) -> (u16, String) {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let status = out[9..12].parse().unwrap();
        (status, out)
    }

    #[tokio::test]
    async fn ignores_other_paths_and_wrong_state_then_takes_the_code() {
        let l = LoopbackListener::bind("http://localhost:3017/", 0)
            .await
            .unwrap();
        let port = l.port();
        assert_ne!(port, 0);
        assert_eq!(l.redirect_uri(), format!("http://localhost:{port}/"));
        let state = Secret::new("s3cr3t-state");
        let ctx = aadsts::Context::default();
        let waiting =
            tokio::spawn(async move { l.wait(&state, Duration::from_secs(10), &ctx).await });
        // An idle connection must not hold anything up.
        let _idle = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (st, _) = request(port, "/favicon.ico").await;
        assert_eq!(st, 404);
        let (st, _) = request(port, "/").await;
        assert_eq!(st, 400);
        let (st, body) = request(port, "/?code=forged&state=wrong").await;
        assert_eq!(st, 400);
        assert!(body.contains("does not belong"));
        let browser = tokio::spawn(request(port, "/?code=good-code&state=s3cr3t-state"));
        let cb = waiting.await.unwrap().unwrap();
        let Callback::Code { code, reply } = cb else {
            panic!("expected a code")
        };
        assert_eq!(code.expose(), "good-code");
        reply.success("Signed in as alice@contoso.com").await;
        let (st, body) = browser.await.unwrap();
        assert_eq!(st, 200);
        assert!(body.contains("Signed in as alice@contoso.com"), "{body}");
    }

    #[tokio::test]
    async fn reports_provider_errors_and_times_out() {
        let l = LoopbackListener::bind("http://127.0.0.1/cb", 0)
            .await
            .unwrap();
        let port = l.port();
        let state = Secret::new("st");
        let ctx = aadsts::Context::default();
        let waiting =
            tokio::spawn(async move { l.wait(&state, Duration::from_secs(10), &ctx).await });
        let (st, body) = request(
            port,
            "/cb?error=access_denied&error_description=AADSTS65004%3A+User+declined+%3Cb%3E&state=st",
        )
        .await;
        assert_eq!(st, 200);
        assert!(body.contains("User declined &lt;b&gt;"), "{body}");
        let Callback::Error(p) = waiting.await.unwrap().unwrap() else {
            panic!("expected an error")
        };
        assert_eq!(p.error, "access_denied");
        assert_eq!(p.aadsts, Some(65004));

        let l = LoopbackListener::bind("http://localhost/", 0)
            .await
            .unwrap();
        let uri = l.redirect_uri().to_string();
        let e = l
            .wait(
                &Secret::new("x"),
                Duration::from_millis(200),
                &aadsts::Context::default(),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, OAuthError::Timeout { .. }));
        assert!(e.to_string().contains(&uri));
        assert!(e.diagnosis().unwrap().to_string().contains("AADSTS50011"));
    }

    #[tokio::test]
    async fn port_in_use_is_a_clear_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let e = LoopbackListener::bind("http://localhost:3017/", port)
            .await
            .unwrap_err();
        assert!(matches!(e, OAuthError::PortInUse { .. }), "{e}");
        assert!(e.to_string().contains(&port.to_string()));
        let e = LoopbackListener::bind("https://example.com/cb", 0)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("loopback"), "{e}");
    }
}
