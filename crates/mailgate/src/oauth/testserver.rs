//! A tiny HTTP server for unit tests: answers each request with the next canned response and
//! records what it was sent.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A canned answer.
pub struct Canned {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Canned {
    pub fn json(status: u16, body: serde_json::Value) -> Canned {
        Canned {
            status,
            headers: vec![("Content-Type", "application/json".into())],
            body: body.to_string(),
        }
    }

    pub fn html(status: u16, body: &str) -> Canned {
        Canned {
            status,
            headers: vec![("Content-Type", "text/html".into())],
            body: body.into(),
        }
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Canned {
        self.headers.push((name, value.into()));
        self
    }
}

/// A request the server received: its form body, decoded, and when it came.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub form: Vec<(String, String)>,
    pub at: Instant,
}

impl Received {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

pub struct TestServer {
    pub base: String,
    pub received: Arc<Mutex<Vec<Received>>>,
}

impl TestServer {
    /// Serves `answers` in order (the last one repeats).
    pub async fn start(answers: Vec<Canned>) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let queue = Arc::new(Mutex::new(VecDeque::from(answers)));
        let rec = received.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let rec = rec.clone();
                let queue = queue.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let (head_end, content_length) = loop {
                        let n = s.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                            let cl = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            break (i + 4, cl);
                        }
                    };
                    while buf.len() < head_end + content_length {
                        let n = s.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let path = head
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or_default()
                        .to_string();
                    let form = url::form_urlencoded::parse(&buf[head_end..])
                        .into_owned()
                        .collect();
                    rec.lock().unwrap().push(Received {
                        path,
                        form,
                        at: Instant::now(),
                    });
                    let answer = {
                        let mut q = queue.lock().unwrap();
                        if q.len() > 1 {
                            q.pop_front().unwrap()
                        } else {
                            let last = q.front().unwrap();
                            Canned {
                                status: last.status,
                                headers: last.headers.clone(),
                                body: last.body.clone(),
                            }
                        }
                    };
                    let mut out = format!("HTTP/1.1 {} X\r\n", answer.status);
                    for (k, v) in &answer.headers {
                        out.push_str(&format!("{k}: {v}\r\n"));
                    }
                    out.push_str(&format!(
                        "Content-Length: {}\r\nConnection: close\r\n\r\n{}",
                        answer.body.len(),
                        answer.body
                    ));
                    let _ = s.write_all(out.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        TestServer { base, received }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}
