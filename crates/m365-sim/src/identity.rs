//! The identity platform over HTTP: authorize (sign-in page), token and device code endpoints.
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use crate::State;

pub(crate) async fn serve(_listener: TcpListener, _state: Arc<State>, _stop: watch::Receiver<bool>) {}
