//! The emulator's TLS: a certificate authority made fresh at every start, a server certificate
//! it signs for `127.0.0.1` and `localhost`, and the rustls acceptor that presents it. Clients
//! trust the authority's certificate (its PEM is handed out; its private key never leaves the
//! process), as a client of Azure trusts a public root. An authority plus a leaf, rather than
//! one self-signed certificate, because strict verifiers refuse a CA certificate used as a
//! server's own.

use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::OffsetDateTime;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

/// The names the server certificate is valid for.
const SERVER_NAMES: [&str; 2] = ["127.0.0.1", "localhost"];

/// How long before and after the start the certificates are valid: clocks on one machine agree,
/// but a client may compare with a clock a little behind.
const VALID_BEFORE: Duration = Duration::from_secs(60 * 60);
const VALID_FOR: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Why the TLS material could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    #[error("generating the emulator's certificates")]
    Certificate(#[from] rcgen::Error),
    #[error("configuring the emulator's TLS server")]
    Config(#[from] rustls::Error),
}

/// What the HTTPS listener serves with, and what a client has to trust.
pub(crate) struct TlsIdentity {
    /// The authority's certificate, PEM encoded: the one thing a client must trust.
    pub ca_pem: String,
    pub acceptor: TlsAcceptor,
}

impl TlsIdentity {
    /// Makes a new authority and server certificate, and the acceptor that presents them.
    pub(crate) fn generate() -> Result<Self, TlsError> {
        let now = OffsetDateTime::now_utc();
        let ca_key = KeyPair::generate()?;
        let ca_params = authority_params(now);
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate()?;
        let server_cert = server_params(now)?.signed_by(&server_key, &issuer)?;
        let chain = vec![server_cert.der().clone(), ca_cert.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
        Ok(TlsIdentity {
            ca_pem: ca_cert.pem(),
            acceptor: acceptor(chain, key)?,
        })
    }
}

fn authority_params(now: OffsetDateTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "keysync emulator local CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut params, now);
    params
}

fn server_params(now: OffsetDateTime) -> Result<CertificateParams, rcgen::Error> {
    let names: Vec<String> = SERVER_NAMES.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "keysync emulator");
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, now);
    Ok(params)
}

fn set_validity(params: &mut CertificateParams, now: OffsetDateTime) {
    params.not_before = now - VALID_BEFORE;
    params.not_after = now + VALID_FOR;
}

/// A TLS 1.2/1.3 acceptor on aws-lc-rs (the provider the rest of the build already uses),
/// offering only HTTP/1.1, the one protocol the emulator speaks.
fn acceptor(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<TlsAcceptor, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authority_is_handed_out_as_pem_without_its_key() {
        let identity = TlsIdentity::generate().unwrap();
        assert!(identity.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(!identity.ca_pem.contains("PRIVATE KEY"));
    }
}
