//! How the gateway trusts an `https` device (docs/devices.md, "HTTPS
//! endpoints"): the system's roots, a device's own CA bundle, a pinned
//! certificate digest, or both of the last two; and what a failed handshake
//! tells the caller.

use std::sync::Arc;

use canon_store::DeviceTls;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

/// The largest CA bundle a device may carry (a few certificates).
pub const MAX_CA_BUNDLE: usize = 64 * 1024;

/// What is wrong with a trust setting, for a 400 at its field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    /// `ca_certificate` is not a PEM bundle of certificates.
    #[error("{0}")]
    Ca(String),
    /// `certificate_sha256` is not a SHA-256 digest.
    #[error("{0}")]
    Fingerprint(String),
}

impl TrustError {
    /// The JSON pointer of the field at fault, below `at` (`/tls`).
    pub fn pointer(&self, at: &str) -> String {
        match self {
            TrustError::Ca(_) => format!("{at}/ca_certificate"),
            TrustError::Fingerprint(_) => format!("{at}/certificate_sha256"),
        }
    }
}

/// A fingerprint as given (hex, either case, bytes optionally separated by
/// `:` as `openssl x509 -fingerprint -sha256` prints them), as kept: 64
/// lower-case hex digits.
pub fn normalize_fingerprint(text: &str) -> Result<String, TrustError> {
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TrustError::Fingerprint(
            "must be the certificate's SHA-256 digest: 64 hexadecimal digits, optionally in pairs separated by `:`"
                .into(),
        ));
    }
    Ok(hex.to_ascii_lowercase())
}

/// The certificates of a PEM bundle; `Err` when it holds anything else (a
/// private key pasted by mistake is refused, not kept), a section that does
/// not decode, or no certificate at all.
fn certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let bad = |why: &str| {
        TrustError::Ca(format!(
            "must be PEM certificates (`-----BEGIN CERTIFICATE-----`): {why}"
        ))
    };
    if pem.len() > MAX_CA_BUNDLE {
        return Err(TrustError::Ca(format!("must be at most {MAX_CA_BUNDLE} bytes")));
    }
    let mut out = Vec::new();
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem.as_bytes()) {
        match section {
            Ok((SectionKind::Certificate, der)) => out.push(CertificateDer::from(der)),
            Ok((SectionKind::RsaPrivateKey | SectionKind::PrivateKey | SectionKind::EcPrivateKey, _)) => {
                return Err(bad("it holds a private key, which Canon neither needs nor keeps"));
            }
            Ok(_) => return Err(bad("it holds a section that is not a certificate")),
            Err(_) => return Err(bad("a section does not decode")),
        }
    }
    // Sections of a label the parser does not know are skipped by it.
    if pem.matches("-----BEGIN ").count() != out.len() {
        return Err(bad("it holds a section that is not a certificate"));
    }
    if out.is_empty() {
        return Err(bad("it holds none"));
    }
    Ok(out)
}

/// A device's trust setting, checked and ready to build a TLS client
/// configuration from.
#[derive(Debug, Clone)]
pub struct Trust {
    /// The CAs the certificate must chain to (and its name be checked
    /// against), when the device has its own.
    verifier: Option<Arc<WebPkiServerVerifier>>,
    /// The digest the device's own certificate must have.
    pin: Option<[u8; 32]>,
    provider: Arc<CryptoProvider>,
}

impl Trust {
    /// The setting of `tls`; `None` when it has neither field (the system's
    /// roots, reqwest's own verifier).
    pub fn of(tls: &DeviceTls) -> Result<Option<Trust>, TrustError> {
        if tls.ca_certificate.is_none() && tls.certificate_sha256.is_none() {
            return Ok(None);
        }
        let provider = crate::http_client::crypto_provider();
        let verifier = match &tls.ca_certificate {
            None => None,
            Some(pem) => {
                let mut roots = RootCertStore::empty();
                for cert in certificates(pem)? {
                    roots.add(cert).map_err(|e| {
                        TrustError::Ca(format!("holds a certificate that cannot be a trust anchor ({e})"))
                    })?;
                }
                let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| TrustError::Ca(format!("cannot be used to verify certificates ({e})")))?;
                Some(verifier)
            }
        };
        let pin = match &tls.certificate_sha256 {
            None => None,
            Some(text) => {
                let hex = normalize_fingerprint(text)?;
                let mut pin = [0u8; 32];
                for (i, byte) in pin.iter_mut().enumerate() {
                    *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                        .map_err(|_| TrustError::Fingerprint("must be hexadecimal".into()))?;
                }
                Some(pin)
            }
        };
        Ok(Some(Trust {
            verifier,
            pin,
            provider,
        }))
    }

    /// The TLS client configuration that verifies the device this way.
    pub fn client_config(self) -> Result<rustls::ClientConfig, rustls::Error> {
        let provider = self.provider.clone();
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(self))
            .with_no_client_auth())
    }
}

/// The device's certificate did not have the pinned digest.
#[derive(Debug, thiserror::Error)]
#[error("the certificate's SHA-256 digest is not the device's certificate_sha256")]
pub struct PinMismatch;

impl ServerCertVerifier for Trust {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(pin) = &self.pin {
            let digest: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
            if digest != *pin {
                return Err(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(
                    Arc::new(PinMismatch),
                ))));
            }
        }
        match &self.verifier {
            Some(verifier) => verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now),
            // Pinned only: the digest is the device's identity; its chain,
            // name and dates are not checked (a self-signed appliance
            // certificate often has none that would pass).
            None => Ok(ServerCertVerified::assertion()),
        }
    }

    // The handshake's signatures are always checked: they prove the device
    // holds the certificate's key, which is what makes a pin mean anything.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// What a TLS failure in `e`'s chain was, in words for a 502's detail;
/// `None` when the failure was not TLS's.
pub fn failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(describe(tls));
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.to_string().contains("tls handshake eof") {
                return Some("the device closed the connection during the handshake".into());
            }
            // An `io::Error`'s `source` skips the error it wraps: go inside.
            if let Some(inner) = io.get_ref() {
                source = Some(inner);
                continue;
            }
        }
        source = err.source();
    }
    None
}

/// A rustls error as the caller can act on it.
fn describe(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                "the device's certificate is not signed by a CA trusted for it (register its CA as \
                 tls.ca_certificate, or pin the certificate with tls.certificate_sha256)"
                    .into()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "the device's certificate is not valid for the endpoint's host name".into()
            }
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => {
                "the device's certificate is expired or not yet valid".into()
            }
            CertificateError::Other(OtherError(other)) if other.downcast_ref::<PinMismatch>().is_some() => {
                "the device's certificate is not the one pinned (its SHA-256 digest is not tls.certificate_sha256)"
                    .into()
            }
            // rustls-webpki's own error, not re-exported by rustls: known by name.
            other if format!("{other:?}").contains("CaUsedAsEndEntity") => {
                "the device's certificate is marked as a CA, so it cannot be trusted as its own CA (as \
                 `openssl req -x509` makes them): pin it with tls.certificate_sha256 instead"
                    .into()
            }
            other => format!("the device's certificate was refused ({other:?})"),
        },
        other => format!("the handshake failed ({other})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_kept_as_lower_case_hex() {
        let colons = "AB:".repeat(31) + "CD";
        assert_eq!(normalize_fingerprint(&colons).unwrap(), "ab".repeat(31) + "cd");
        assert_eq!(normalize_fingerprint(&"0F".repeat(32)).unwrap(), "0f".repeat(32));
        for bad in ["", "ab", &"g0".repeat(32), &"ab".repeat(33)] {
            assert!(normalize_fingerprint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_ca_bundle_is_certificates_only() {
        let key = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n";
        let odd = "-----BEGIN SOMETHING-----\nAAAA\n-----END SOMETHING-----\n";
        let broken = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        for bad in ["", "not pem", key, odd, broken] {
            assert!(matches!(certificates(bad), Err(TrustError::Ca(_))), "{bad}");
        }
        let tls = |ca: &str| DeviceTls {
            ca_certificate: Some(ca.into()),
            certificate_sha256: None,
        };
        // Decodes as PEM, but is no certificate.
        let junk = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(Trust::of(&tls(junk)), Err(TrustError::Ca(_))));
        assert!(Trust::of(&DeviceTls::default()).unwrap().is_none());
    }
}
