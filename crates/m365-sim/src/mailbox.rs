//! Where the SMTP side stores what it accepted: one `.eml` and one `.json` envelope per message.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::SimError;

/// A message the simulator accepted with `250 2.0.0 OK`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeliveredMessage {
    /// The id in the 250 reply.
    pub id: String,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// The `user=` of the SMTP AUTH (a mailbox address, or the app's mailbox for app-only).
    pub auth_user: String,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    /// The message as received (dot-stuffing removed).
    #[serde(skip)]
    pub data: Vec<u8>,
    /// The `.eml` file.
    pub path: PathBuf,
}

impl DeliveredMessage {
    /// The message as text (lossy for non-UTF-8 bytes).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

pub(crate) struct Mailbox {
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    messages: Mutex<Vec<DeliveredMessage>>,
}

impl Mailbox {
    pub fn open(dir: Option<&Path>) -> Result<Mailbox, SimError> {
        let (dir, temp) = match dir {
            Some(d) => (d.to_owned(), None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("m365-sim-mail-")
                    .tempdir()
                    .map_err(|source| SimError::MailDir {
                        path: std::env::temp_dir(),
                        source,
                    })?;
                (t.path().to_owned(), Some(t))
            }
        };
        std::fs::create_dir_all(&dir).map_err(|source| SimError::MailDir {
            path: dir.clone(),
            source,
        })?;
        Ok(Mailbox {
            dir,
            _temp: temp,
            messages: Mutex::default(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores a message and returns it.
    pub fn store(
        &self,
        id: &str,
        mail_from: &str,
        rcpt_to: &[String],
        auth_user: &str,
        data: Vec<u8>,
    ) -> std::io::Result<DeliveredMessage> {
        let safe: String = id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = self.dir.join(format!("{safe}.eml"));
        std::fs::write(&path, &data)?;
        let msg = DeliveredMessage {
            id: id.into(),
            mail_from: mail_from.into(),
            rcpt_to: rcpt_to.to_vec(),
            auth_user: auth_user.into(),
            received_at: OffsetDateTime::now_utc(),
            data,
            path: path.clone(),
        };
        std::fs::write(
            path.with_extension("json"),
            serde_json::to_vec_pretty(&msg).expect("envelope serializes"),
        )?;
        self.messages.lock().unwrap().push(msg.clone());
        Ok(msg)
    }

    pub fn list(&self) -> Vec<DeliveredMessage> {
        self.messages.lock().unwrap().clone()
    }
}
