//! TLS for the SMTP client: rustls with the ring provider, TLS 1.2 and 1.3 only, trusting the
//! system's roots (or Mozilla's bundled ones when the system has none) plus an optional CA file.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

use super::SmtpError;

/// What the TLS session looks like, for `mailgate test`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: String,
    /// The cipher suite, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
    /// The server certificate's subject common name (or the whole subject when it has no CN).
    pub subject: Option<String>,
    /// The issuer's common name.
    pub issuer: Option<String>,
    /// The certificate's expiry, as written in it (`2026-07-11 12:00:00 UTC`).
    pub not_after: Option<String>,
}

fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        if found.certs.is_empty() {
            tracing::debug!("no system CA certificates found; using the bundled Mozilla roots");
        }
        found.certs
    })
}

/// A client config trusting the system roots plus `ca_file` (PEM, one or more certificates).
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, SmtpError> {
    let mut roots = RootCertStore::empty();
    let system = system_roots();
    if system.is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    } else {
        // Some system bundles hold certificates rustls cannot use; skip those rather than fail.
        let _ = roots.add_parsable_certificates(system.iter().cloned());
    }
    if let Some(path) = ca_file {
        let err = |message: String| SmtpError::CaFile {
            path: path.to_owned(),
            message,
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| err(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| err(e.to_string()))?;
        if certs.is_empty() {
            return Err(err("it holds no PEM certificate".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| err(e.to_string()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| SmtpError::tls("(local)", e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Describes an established session.
pub fn describe(conn: &rustls::ClientConnection) -> TlsInfo {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
        Some(v) => format!("{v:?}"),
        None => "unknown".to_string(),
    };
    let cipher = conn
        .negotiated_cipher_suite()
        .map(|c| format!("{:?}", c.suite()))
        .unwrap_or_default();
    let cert = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| der::summary(c));
    TlsInfo {
        version,
        cipher,
        subject: cert.as_ref().and_then(|c| c.subject.clone()),
        issuer: cert.as_ref().and_then(|c| c.issuer.clone()),
        not_after: cert.and_then(|c| c.not_after),
    }
}

/// Just enough DER to read a certificate's subject, issuer and expiry for display.
mod der {
    pub struct Summary {
        pub subject: Option<String>,
        pub issuer: Option<String>,
        pub not_after: Option<String>,
    }

    /// Reads one TLV: returns (tag, contents, rest).
    fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            first as usize
        } else {
            let n = (first & 0x7f) as usize;
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | *b as usize);
            rest = &rest[n..];
            len
        };
        if rest.len() < len {
            return None;
        }
        Some((tag, &rest[..len], &rest[len..]))
    }

    pub fn summary(cert: &[u8]) -> Option<Summary> {
        let (_, cert, _) = tlv(cert)?; // Certificate SEQUENCE
        let (_, tbs, _) = tlv(cert)?; // TBSCertificate SEQUENCE
        let mut rest = tbs;
        let (tag, _, r) = tlv(rest)?;
        if tag == 0xa0 {
            rest = r; // [0] version
        }
        let (_, _, r) = tlv(rest)?; // serial
        let (_, _, r) = tlv(r)?; // signature algorithm
        let (_, issuer, r) = tlv(r)?;
        let (_, validity, r) = tlv(r)?;
        let (_, subject, _) = tlv(r)?;
        let not_after = tlv(validity)
            .and_then(|(_, _, r)| tlv(r))
            .and_then(|(tag, t, _)| time(tag, t));
        Some(Summary {
            subject: name(subject),
            issuer: name(issuer),
            not_after,
        })
    }

    /// The CN of a Name, else its O, else nothing.
    fn name(mut input: &[u8]) -> Option<String> {
        const CN: &[u8] = &[0x55, 0x04, 0x03];
        const O: &[u8] = &[0x55, 0x04, 0x0a];
        let (mut cn, mut o) = (None, None);
        while let Some((_, set, rest)) = tlv(input) {
            input = rest;
            let Some((_, atv, _)) = tlv(set) else {
                continue;
            };
            let Some((0x06, oid, r)) = tlv(atv) else {
                continue;
            };
            let Some((_, value, _)) = tlv(r) else {
                continue;
            };
            let value = String::from_utf8_lossy(value).into_owned();
            if oid == CN {
                cn = Some(value);
            } else if oid == O {
                o = Some(value);
            }
        }
        cn.or(o)
    }

    fn time(tag: u8, t: &[u8]) -> Option<String> {
        let s = std::str::from_utf8(t).ok()?;
        let (year, rest) = match tag {
            0x17 if s.len() >= 12 => {
                let yy: u32 = s[..2].parse().ok()?;
                (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &s[2..])
            }
            0x18 if s.len() >= 14 => (s[..4].parse().ok()?, &s[4..]),
            _ => return None,
        };
        Some(format!(
            "{year}-{}-{} {}:{}:{} UTC",
            &rest[0..2],
            &rest[2..4],
            &rest[4..6],
            &rest[6..8],
            &rest[8..10]
        ))
    }
}
