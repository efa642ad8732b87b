//! TLS to PostgreSQL (tenant sessions and the control connection), from the
//! URL's `sslmode` (disable | prefer | require | verify-ca | verify-full) and
//! `sslrootcert`, as libpq reads them. tokio-postgres knows neither verify-*
//! nor sslrootcert, so both are taken off the URL before it is parsed.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::crypto::{ring, verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use tokio_rustls::rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, Error as TlsError, RootCertStore, SignatureScheme,
};

/// How much TLS a connection to PostgreSQL needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "disable" => Ok(SslMode::Disable),
            "allow" | "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            other => Err(format!("unknown sslmode {other:?}")),
        }
    }
}

/// The TLS part of a PostgreSQL URL.
#[derive(Clone)]
pub(crate) struct UrlTls {
    pub mode: SslMode,
    /// The client configuration (not used when the mode is `disable`).
    pub config: Arc<ClientConfig>,
}

impl std::fmt::Debug for UrlTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UrlTls").field("mode", &self.mode).finish()
    }
}

/// Takes `sslmode` and `sslrootcert` off `url`; returns the rest and the TLS setup.
pub(crate) fn split_url(url: &str) -> Result<(String, UrlTls), String> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, query),
        None => (url, ""),
    };
    let mut kept = Vec::new();
    let mut mode = SslMode::Prefer;
    let mut root: Option<PathBuf> = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => mode = percent_decode(value).parse()?,
            "sslrootcert" => root = Some(PathBuf::from(percent_decode(value))),
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    let config = client_config(mode, root.as_deref()).map_err(|e| e.to_string())?;
    Ok((rest, UrlTls { mode, config }))
}

/// A tokio-postgres config for `url` with its TLS requirement applied.
pub(crate) fn postgres_config(url: &str) -> Result<(tokio_postgres::Config, UrlTls), String> {
    let (rest, tls) = split_url(url)?;
    let mut config = tokio_postgres::Config::from_str(&rest).map_err(|e| e.to_string())?;
    config.ssl_mode(match tls.mode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        _ => tokio_postgres::config::SslMode::Require,
    });
    Ok((config, tls))
}

/// The connector tokio-postgres uses for a URL's TLS.
pub(crate) fn make_connect(tls: &UrlTls) -> tokio_postgres_rustls::MakeRustlsConnect {
    tokio_postgres_rustls::MakeRustlsConnect::new((*tls.config).clone())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

fn client_config(mode: SslMode, root: Option<&Path>) -> anyhow::Result<Arc<ClientConfig>> {
    let provider = provider();
    let config = match mode {
        // libpq's prefer and require encrypt without checking the certificate
        // (disable never uses it).
        SslMode::Disable | SslMode::Prefer | SslMode::Require => unverified(provider)?,
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let Some(root) = root else {
                anyhow::bail!("sslmode verify-ca and verify-full need sslrootcert=<PEM file>");
            };
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(root)
                .map_err(|e| anyhow::anyhow!("sslrootcert {}: {e}", root.display()))?
            {
                roots.add(cert.map_err(|e| anyhow::anyhow!("sslrootcert {}: {e}", root.display()))?)?;
            }
            let verifier =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider)).build()?;
            let builder = ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions()?;
            if mode == SslMode::VerifyFull {
                builder.with_webpki_verifier(verifier).with_no_client_auth()
            } else {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(IgnoreName(verifier)))
                    .with_no_client_auth()
            }
        }
    };
    Ok(Arc::new(config))
}

fn unverified(provider: Arc<CryptoProvider>) -> anyhow::Result<ClientConfig> {
    Ok(ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
        .with_no_client_auth())
}

/// sslmode=prefer/require: encrypted, certificate not checked (as libpq).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// sslmode=verify-ca: the chain must lead to the root; the name is not checked.
#[derive(Debug)]
struct IgnoreName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for IgnoreName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(TlsError::InvalidCertificate(CertificateError::NotValidForName))
            | Err(TlsError::InvalidCertificate(CertificateError::NotValidForNameContext { .. })) => {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_come_off_the_url() {
        let (rest, tls) = split_url("postgres://u@h/db?sslmode=require&application_name=x").unwrap();
        assert_eq!(rest, "postgres://u@h/db?application_name=x");
        assert_eq!(tls.mode, SslMode::Require);
        let (rest, tls) = split_url("postgres://u@h/db").unwrap();
        assert_eq!((rest.as_str(), tls.mode), ("postgres://u@h/db", SslMode::Prefer));
        assert!(split_url("postgres://u@h/db?sslmode=verify-full").is_err(), "verify needs a root");
        assert!(split_url("postgres://u@h/db?sslmode=bogus").is_err());
        assert_eq!(percent_decode("%2Ftmp%2Fca.crt"), "/tmp/ca.crt");
    }
}
