//! SMTP submission: the smtp.office365.com (or smtp.gmail.com) dialogue.
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use crate::State;

pub(crate) async fn serve(_listener: TcpListener, _state: Arc<State>, _implicit_tls: bool, _stop: watch::Receiver<bool>) {}
