//! Client TLS with rustls: the acceptor, and the certificate hash that
//! SCRAM-SHA-256-PLUS binds to (`tls-server-end-point`, RFC 5929).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// ALPN protocol name of PostgreSQL (required for direct TLS, PostgreSQL 17+).
pub(crate) const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// The proxy's TLS setup.
pub(crate) struct TlsSetup {
    pub acceptor: TlsAcceptor,
    /// SHA-256 of the server certificate, for channel binding.
    pub end_point_hash: [u8; 32],
    /// Refuse clients that do not encrypt.
    pub required: bool,
    /// Offer cleartext password authentication on TLS connections.
    pub cleartext_password: bool,
}

impl TlsSetup {
    /// Loads a PEM certificate chain and private key.
    pub(crate) fn load(cert: &Path, key: &Path, required: bool, cleartext_password: bool) -> anyhow::Result<TlsSetup> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .with_context(|| format!("tls.cert: cannot read {}", cert.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("tls.cert: invalid PEM in {}", cert.display()))?;
        let Some(leaf) = chain.first() else {
            anyhow::bail!("tls.cert: no certificate in {}", cert.display());
        };
        // tls-server-end-point hashes with the certificate's signature hash,
        // SHA-256 for the certificates in use today (and for MD5/SHA-1 ones).
        let end_point_hash: [u8; 32] = Sha256::digest(leaf.as_ref()).into();
        let key =
            PrivateKeyDer::from_pem_file(key).with_context(|| format!("tls.key: cannot read {}", key.display()))?;
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .context("tls.cert and tls.key do not form a usable pair")?;
        config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
        Ok(TlsSetup { acceptor: TlsAcceptor::from(Arc::new(config)), end_point_hash, required, cleartext_password })
    }
}
