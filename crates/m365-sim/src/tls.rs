//! The simulator's certificate authority and the server certificate it signs for SMTP.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::SimError;

/// A fresh CA and a leaf certificate for `localhost`, `127.0.0.1`, `::1` and the given host names.
pub struct SimTls {
    /// The CA certificate, PEM: what clients must trust (`ca_file`).
    pub ca_pem: String,
    /// Server config for the SMTP listeners (TLS 1.2 and 1.3 only).
    pub server_config: Arc<ServerConfig>,
}

impl SimTls {
    pub fn generate(host_names: &[&str]) -> Result<SimTls, SimError> {
        let err = |e: rcgen::Error| SimError::Tls(e.to_string());
        let ca_key = KeyPair::generate().map_err(err)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        ca_params.distinguished_name.push(
            DnType::CommonName,
            "m365-sim test CA (not a real authority)",
        );
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(err)?;

        let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        names.extend(host_names.iter().map(|s| s.to_string()));
        let leaf_key = KeyPair::generate().map_err(err)?;
        let mut leaf_params = CertificateParams::new(names).map_err(err)?;
        leaf_params.distinguished_name.push(
            DnType::CommonName,
            host_names.first().copied().unwrap_or("localhost"),
        );
        let leaf = leaf_params
            .signed_by(&leaf_key, &ca_cert, &ca_key)
            .map_err(err)?;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server_config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| SimError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(
                vec![
                    CertificateDer::from(leaf.der().to_vec()),
                    CertificateDer::from(ca_cert.der().to_vec()),
                ],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
            )
            .map_err(|e| SimError::Tls(e.to_string()))?;
        Ok(SimTls {
            ca_pem: ca_cert.pem(),
            server_config: Arc::new(server_config),
        })
    }
}
