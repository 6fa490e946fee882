//! Relay users: argon2 password hashes in `[relay.users]`, checked for AUTH PLAIN and LOGIN.

use std::collections::BTreeMap;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;

use crate::Secret;

/// A hash that no password matches, verified for unknown user names so that a failed login
/// takes as long whether or not the user exists.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$bWFpbGdhdGUtZHVtbXk$7a1sYc9pYtKyu2KnYAk3MGHbG4tSp6rPHVp1cxl7Lx8";

/// Hashes `password` with argon2id (the crate's default, OWASP-recommended parameters) and a
/// random salt, as a PHC string for `[relay.users]`.
pub fn hash_password(password: &Secret) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.expose().as_bytes(), &salt)
        .expect("argon2 with default parameters hashes any password")
        .to_string()
}

/// Whether `s` is an argon2 PHC hash string.
pub fn is_password_hash(s: &str) -> bool {
    PasswordHash::new(s)
        .map(|h| h.algorithm.as_str().starts_with("argon2"))
        .unwrap_or(false)
}

/// The relay's users and their password hashes.
#[derive(Clone, Default)]
pub struct Users {
    hashes: BTreeMap<String, String>,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.hashes.keys()).finish()
    }
}

impl Users {
    pub fn new(hashes: BTreeMap<String, String>) -> Users {
        Users { hashes }
    }

    /// No users: AUTH is not offered.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Checks a user name and password. Slow on purpose (argon2): call it on a blocking thread.
    pub fn verify(&self, user: &str, password: &Secret) -> bool {
        let (hash, known) = match self.hashes.get(user) {
            Some(h) => (h.as_str(), true),
            None => (DUMMY_HASH, false),
        };
        let ok = PasswordHash::new(hash)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.expose().as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false);
        ok && known
    }
}

/// Credentials sent by a client.
#[derive(Debug)]
pub struct Credentials {
    pub user: String,
    pub password: Secret,
}

/// Decodes an AUTH PLAIN response: base64 of `authzid \0 authcid \0 password`. An authzid other
/// than empty or the user itself is refused (no proxy authorization).
pub fn decode_plain(b64: &str) -> Option<Credentials> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let mut parts = raw.split(|&b| b == 0);
    let authz = parts.next()?;
    let user = parts.next()?;
    let pass = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    let user = String::from_utf8(user.to_vec()).ok()?;
    if !authz.is_empty() && authz != user.as_bytes() {
        return None;
    }
    let password = String::from_utf8(pass.to_vec()).ok()?;
    if user.is_empty() {
        return None;
    }
    Some(Credentials {
        user,
        password: Secret::new(password),
    })
}

/// Decodes one base64 line of AUTH LOGIN.
pub fn decode_line(b64: &str) -> Option<String> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    String::from_utf8(raw).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let h = hash_password(&Secret::new("correct horse"));
        assert!(is_password_hash(&h), "{h}");
        let mut m = BTreeMap::new();
        m.insert("scanner".to_string(), h);
        let users = Users::new(m);
        assert!(users.verify("scanner", &Secret::new("correct horse")));
        assert!(!users.verify("scanner", &Secret::new("wrong")));
        assert!(!users.verify("nobody", &Secret::new("correct horse")));
        assert!(is_password_hash(DUMMY_HASH));
        assert!(!format!("{users:?}").contains("argon2"));
    }

    #[test]
    fn plain() {
        let b = base64::engine::general_purpose::STANDARD.encode(b"\0scanner\0pw");
        let c = decode_plain(&b).unwrap();
        assert_eq!(c.user, "scanner");
        assert_eq!(c.password.expose(), "pw");
        let b = base64::engine::general_purpose::STANDARD.encode(b"other\0scanner\0pw");
        assert!(decode_plain(&b).is_none());
        assert!(decode_plain("!!!").is_none());
    }
}
