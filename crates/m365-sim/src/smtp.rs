//! SMTP submission: the smtp.office365.com (or smtp.gmail.com) dialogue.
//!
//! Microsoft mode follows Exchange Online's client submission: STARTTLS before AUTH, only
//! `AUTH LOGIN XOAUTH2` offered, `535 5.7.3` at once for a rejected token, `5.7.139` when
//! Authenticated SMTP is off, Send As checked after DATA, the per-mailbox connection limit
//! (`432 4.3.2`) and the daily recipient quota (`554 5.2.0`). Gmail mode answers like
//! smtp.gmail.com, with its 334 JSON challenge for a rejected token. Commands are parsed with
//! `smtp-proto`; message data goes through its DATA/BDAT receivers.

mod auth;
mod message;
mod replies;
mod session;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::State;

/// Accepts connections on `listener` until `stop` turns true. With `implicit_tls` the
/// connection speaks TLS from the first byte (port 465 style); otherwise STARTTLS is offered.
pub(crate) async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    implicit_tls: bool,
    mut stop: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(state.tls.server_config.clone());
    loop {
        if *stop.borrow() {
            break;
        }
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    if state.faults().smtp_reject_connections {
                        tracing::debug!(%peer, "fault smtp_reject_connections: closing at once");
                        drop(socket);
                        continue;
                    }
                    // Replies are written one by one; without this, Nagle holds the second reply
                    // of a pipelined group until the client's delayed ACK (about 40 ms).
                    let _ = socket.set_nodelay(true);
                    tokio::spawn(session::handle(
                        socket,
                        peer,
                        state.clone(),
                        acceptor.clone(),
                        implicit_tls,
                        stop.clone(),
                    ));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "smtp accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}
