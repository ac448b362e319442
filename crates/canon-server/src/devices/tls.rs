//! How the gateway trusts an `https` device (docs/devices.md, "HTTPS
//! endpoints"): the system's roots, a device's own CA bundle, a pinned
//! certificate digest, or both of the last two; and what a failed handshake
//! tells the caller.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
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

/// A CA bundle as it is kept and shown: its certificates alone, each
/// re-encoded as a PEM section (64 base64 characters a line, `\n` line
/// ends), one after another. Whatever else the text held (a bundle's
/// comments, `openssl x509 -text`'s dump, `s_client`'s `subject=` lines)
/// is dropped, so what is shown is exactly what is trusted.
pub fn canonical_bundle(pem: &str) -> Result<String, TrustError> {
    let mut out = String::with_capacity(pem.len());
    for cert in certificates(pem)? {
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        let encoded = STANDARD.encode(cert.as_ref());
        // Base64 is ASCII, so every 64-byte chunk is a whole `str`.
        for line in encoded.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap_or_default());
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    // Shorter lines than the given text's can make it longer: it is shown
    // under the same bound it was admitted by.
    if out.len() > MAX_CA_BUNDLE {
        return Err(TrustError::Ca(format!("must be at most {MAX_CA_BUNDLE} bytes")));
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

/// The device's certificate had the pinned digest, and the CA bundle's
/// check then refused it (why, as webpki said). Kept apart from the same
/// refusal without a pin, whose advice ("pin it") would be wrong here.
#[derive(Debug, thiserror::Error)]
#[error("the certificate is the pinned one, but tls.ca_certificate's check refused it ({0:?})")]
pub struct PinnedButRefused(pub CertificateError);

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
            Some(verifier) => verifier
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .map_err(|e| match e {
                    // The pin held (checked above): say so with the refusal.
                    rustls::Error::InvalidCertificate(why) if self.pin.is_some() => rustls::Error::InvalidCertificate(
                        CertificateError::Other(OtherError(Arc::new(PinnedButRefused(why)))),
                    ),
                    other => other,
                }),
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
            CertificateError::Other(OtherError(other)) if other.downcast_ref::<PinMismatch>().is_some() => {
                "the device's certificate is not the one pinned (its SHA-256 digest is not tls.certificate_sha256)"
                    .into()
            }
            CertificateError::Other(OtherError(other)) if other.downcast_ref::<PinnedButRefused>().is_some() => {
                let why = other
                    .downcast_ref::<PinnedButRefused>()
                    .map(|p| refused_with_pin(&p.0))
                    .unwrap_or_default();
                format!("the device's certificate is the one pinned (tls.certificate_sha256), but {why}")
            }
            cert => refused(cert),
        },
        other => format!("the handshake failed ({other})"),
    }
}

/// Whether webpki's refusal was of a CA certificate presented as the
/// server's own (rustls-webpki's `CaUsedAsEndEntity`, not re-exported by
/// rustls: known by name).
fn ca_as_end_entity(e: &CertificateError) -> bool {
    format!("{e:?}").contains("CaUsedAsEndEntity")
}

/// A certificate refused by the system's roots or the device's CA bundle,
/// with no pin set: the advice may be to pin it.
fn refused(e: &CertificateError) -> String {
    match e {
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
        | CertificateError::NotValidYetContext { .. } => "the device's certificate is expired or not yet valid".into(),
        other if ca_as_end_entity(other) => {
            "the device's certificate is marked as a CA, so it cannot be trusted as its own CA (as \
             `openssl req -x509` makes them): pin it with tls.certificate_sha256 instead"
                .into()
        }
        other => format!("the device's certificate was refused ({other:?})"),
    }
}

/// Why the device's CA bundle refused a certificate that had the pinned
/// digest: the pin is set already, so the way out is the bundle (fix it,
/// or leave it out and trust the pin alone).
fn refused_with_pin(e: &CertificateError) -> String {
    match e {
        CertificateError::UnknownIssuer | CertificateError::BadSignature => {
            "it is not signed by a CA in tls.ca_certificate (register its CA there, or leave \
             tls.ca_certificate out to trust the pin alone)"
                .into()
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "it is not valid for the endpoint's host name (checked because tls.ca_certificate is set; \
             the pin alone does not check it)"
                .into()
        }
        CertificateError::Expired
        | CertificateError::ExpiredContext { .. }
        | CertificateError::NotValidYet
        | CertificateError::NotValidYetContext { .. } => {
            "it is expired or not yet valid (checked because tls.ca_certificate is set; the pin alone \
             does not check it)"
                .into()
        }
        other if ca_as_end_entity(other) => {
            "it is marked as a CA, so tls.ca_certificate cannot vouch for it as its own CA (as \
             `openssl req -x509` makes them): leave tls.ca_certificate out and the pin alone is trusted"
                .into()
        }
        other => format!("tls.ca_certificate's check refused it ({other:?})"),
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
