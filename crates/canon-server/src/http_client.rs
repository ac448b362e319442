//! Every HTTP client of the workspace starts here (the gateway's, `canon
//! import`/`export`'s, the tests').
//!
//! reqwest is built with `rustls-no-provider` (rustls on ring, without
//! aws-lc's long C build; docs/devices.md, "HTTPS endpoints"). With that
//! feature a `reqwest::Client` built before a rustls crypto provider is
//! installed panics, and Cargo unifies the feature across the workspace, so
//! it holds for every client, plain-HTTP ones included. [`builder`] installs
//! ring as the process's provider first, once, and hands reqwest a TLS
//! configuration of its own; `clippy.toml` forbids `reqwest::Client::new`,
//! `reqwest::Client::builder` and friends anywhere else, so no client can be
//! built another way.

use std::sync::{Arc, Once, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Installs ring as the process's rustls crypto provider, once. A provider
/// installed earlier by someone else stays (it is as good for reqwest).
pub fn install_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // `Err` only when a provider is already installed: that one serves.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The ring provider, for TLS configurations built by hand: the same
/// algorithms for every client.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Trusts nothing: the verifier of a host without CA certificates
/// (reqwest's own would fail to build, and with it every client, plain-HTTP
/// ones and the server's start included).
#[derive(Debug)]
struct NoSystemRoots(Arc<CryptoProvider>);

impl ServerCertVerifier for NoSystemRoots {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The TLS configuration of clients that trust the system's roots
/// (rustls-platform-verifier: on Linux the system's CA files, read once per
/// process). Without any, nothing is trusted and a warning is logged.
pub fn system_roots() -> Option<rustls::ClientConfig> {
    static CONFIG: OnceLock<Option<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = crypto_provider();
            let verifier: Arc<dyn ServerCertVerifier> = match rustls_platform_verifier::Verifier::new(provider.clone())
            {
                Ok(verifier) => Arc::new(verifier),
                Err(e) => {
                    tracing::warn!(error = %e, "no system CA certificates: no HTTPS server is trusted by them");
                    Arc::new(NoSystemRoots(provider.clone()))
                }
            };
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .ok()?
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth();
            Some(config)
        })
        .clone()
}

/// A client builder: the crypto provider installed, the system's roots
/// trusted.
#[allow(clippy::disallowed_methods)]
pub fn builder() -> reqwest::ClientBuilder {
    install_crypto_provider();
    let builder = reqwest::Client::builder();
    match system_roots() {
        Some(config) => builder.tls_backend_preconfigured(config),
        None => builder,
    }
}

/// A client with reqwest's defaults but [`builder`]'s TLS.
pub fn client() -> reqwest::Client {
    // Nothing is set that `build` could refuse: it cannot fail.
    builder()
        .build()
        .unwrap_or_else(|e| panic!("a default HTTP client: {e}"))
}
