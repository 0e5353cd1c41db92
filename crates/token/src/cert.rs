//! Key pairs and self-signed X.509 certificates (RSA and ECDSA P-256).
//!
//! Managed identities authenticate to Entra with certificates (docs/azure-protocol.md, Entra:
//! managed-identity certificates): ARM, acting as the managed-identity resource provider, generates
//! a key pair and a self-signed certificate per identity, registers the certificate with Entra and
//! hands both to the VM's IMDS. Those certificates are P-256 ([`generate_ec_cert`]): no client ever
//! sees them, and a P-256 key costs microseconds where an RSA-2048 keygen costs tens to hundreds of
//! milliseconds on the provisioning path (docs/performance.md). Entra's token-signing key and
//! app registrations' uploaded certificates stay RSA, as clients expect.

use std::time::SystemTime;

use crate::TokenError;

/// A freshly generated RSA key and its self-signed certificate.
#[derive(Clone)]
pub struct GeneratedCert {
    /// The self-signed X.509 certificate, DER (what Entra registers).
    pub certificate_der: Vec<u8>,
    /// The same certificate as PEM (what IMDS and ARM store).
    pub certificate_pem: String,
    /// PKCS#8 DER private key.
    pub private_key_der: Vec<u8>,
    /// PKCS#8 PEM private key.
    pub private_key_pem: String,
}

impl std::fmt::Debug for GeneratedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print private keys.
        f.debug_struct("GeneratedCert").finish_non_exhaustive()
    }
}

/// The kind of key a certificate carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlg {
    /// RSA (`rsaEncryption`): app registrations, Entra's signing key, identity
    /// certificates made before they became P-256.
    Rsa,
    /// ECDSA on P-256 (`id-ecPublicKey` + `prime256v1`): managed-identity certificates.
    EcP256,
}

impl KeyAlg {
    /// Tells the key kind from a certificate's subject public key bits: an
    /// uncompressed P-256 point is 65 bytes starting 0x04, a PKCS#1
    /// `RSAPublicKey` is a DER SEQUENCE (0x30). The encodings cannot collide,
    /// so stored keys need no separate tag (records from before EC keep verifying).
    pub fn of_public_key(key: &[u8]) -> Option<KeyAlg> {
        match key.first() {
            Some(0x04) if key.len() == 65 => Some(KeyAlg::EcP256),
            Some(0x30) => Some(KeyAlg::Rsa),
            _ => None,
        }
    }
}

/// What Entra needs from a registered certificate.
#[derive(Debug, Clone)]
pub struct CertInfo {
    /// Which key the certificate carries.
    pub key_alg: KeyAlg,
    /// The subject public key: PKCS#1 `RSAPublicKey` DER for RSA, the uncompressed
    /// SEC1 point for P-256.
    pub public_key: Vec<u8>,
    /// Validity start, Unix seconds.
    pub not_before: i64,
    /// Validity end, Unix seconds.
    pub not_after: i64,
    /// SHA-1 of the DER certificate (`x5t`).
    pub sha1: Vec<u8>,
    /// SHA-256 of the DER certificate (`x5t#S256`).
    pub sha256: Vec<u8>,
}

/// Generates an RSA-2048 key and a self-signed certificate for `common_name`
/// valid from `not_before` to `not_after`.
pub fn generate_rsa_cert(
    common_name: &str,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<GeneratedCert, TokenError> {
    // aws-lc-rs's keygen (through rcgen): tens of milliseconds where the
    // pure-Rust `rsa` crate took hundreds (docs/performance.md, finding 7).
    generate_self_signed(&rcgen::PKCS_RSA_SHA256, common_name, not_before, not_after)
}

/// Generates an ECDSA P-256 key and a self-signed certificate for `common_name`
/// valid from `not_before` to `not_after` (managed-identity credentials).
pub fn generate_ec_cert(
    common_name: &str,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<GeneratedCert, TokenError> {
    generate_self_signed(
        &rcgen::PKCS_ECDSA_P256_SHA256,
        common_name,
        not_before,
        not_after,
    )
}

fn generate_self_signed(
    alg: &'static rcgen::SignatureAlgorithm,
    common_name: &str,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<GeneratedCert, TokenError> {
    let key_err = |e: &dyn std::fmt::Display| TokenError::Key(e.to_string());
    let key_pair = rcgen::KeyPair::generate_for(alg).map_err(|e| key_err(&e))?;
    let mut params =
        rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| key_err(&e))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    params.not_before = time::OffsetDateTime::from(not_before);
    params.not_after = time::OffsetDateTime::from(not_after);
    let cert = params.self_signed(&key_pair).map_err(|e| key_err(&e))?;
    Ok(GeneratedCert {
        certificate_der: cert.der().to_vec(),
        certificate_pem: cert.pem(),
        private_key_der: key_pair.serialize_der(),
        private_key_pem: key_pair.serialize_pem(),
    })
}

/// Parses a DER certificate that carries an RSA or a P-256 key (the name
/// predates P-256 identity certificates). Callers that must only take RSA
/// (app registrations) check [`CertInfo::key_alg`].
pub fn parse_cert(der: &[u8]) -> Result<CertInfo, TokenError> {
    const RSA: &str = "1.2.840.113549.1.1.1"; // rsaEncryption
    const EC: &str = "1.2.840.10045.2.1"; // id-ecPublicKey
    const P256: &str = "1.2.840.10045.3.1.7"; // prime256v1
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| TokenError::Key(format!("not an X.509 certificate: {e}")))?;
    let spki = &cert.tbs_certificate.subject_pki;
    let key = spki.subject_public_key.data.to_vec();
    let key_alg = match spki.algorithm.algorithm.to_id_string().as_str() {
        RSA => KeyAlg::Rsa,
        EC if spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .is_some_and(|c| c.to_id_string() == P256) =>
        {
            KeyAlg::EcP256
        }
        _ => {
            return Err(TokenError::Key(
                "certificate key is neither RSA nor ECDSA P-256".into(),
            ));
        }
    };
    // The bits must say the same as the algorithm, so verification (which
    // reads the kind from the bits) cannot be steered by a mislabelled key.
    if KeyAlg::of_public_key(&key) != Some(key_alg) {
        return Err(TokenError::Key(
            "certificate public key does not match its algorithm".into(),
        ));
    }
    let validity = &cert.tbs_certificate.validity;
    Ok(CertInfo {
        key_alg,
        public_key: key,
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
        sha1: crate::sha1(der),
        sha256: crate::sha256(der),
    })
}

/// The SHA-1 thumbprint (upper-case hex, as Azure shows it) of the first certificate in `pem`,
/// which must carry a key misim registers (RSA or P-256).
pub fn pem_thumbprint_sha1(pem: &str) -> Result<String, TokenError> {
    let info = parse_cert(&pem_to_der(pem, "CERTIFICATE")?)?;
    Ok(crate::hex_upper(&info.sha1))
}

/// Decodes the first PEM block of `pem` with the given label.
pub fn pem_to_der(pem: &str, label: &str) -> Result<Vec<u8>, TokenError> {
    use base64::Engine;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem
        .find(&begin)
        .ok_or_else(|| TokenError::Key(format!("no {label} PEM block")))?
        + begin.len();
    let stop = pem[start..]
        .find(&end)
        .ok_or_else(|| TokenError::Key(format!("unterminated {label} PEM block")))?
        + start;
    let body: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| TokenError::Key(format!("bad PEM base64: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn generated_certificate_round_trips() {
        let nb = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let na = nb + Duration::from_secs(90 * 86400);
        let g = generate_rsa_cert("client-1", nb, na).unwrap();
        let info = parse_cert(&g.certificate_der).unwrap();
        assert_eq!(info.not_before, 1_700_000_000);
        assert_eq!(info.not_after, 1_700_000_000 + 90 * 86400);
        assert_eq!(
            pem_to_der(&g.certificate_pem, "CERTIFICATE").unwrap(),
            g.certificate_der
        );
        assert_eq!(
            pem_to_der(&g.private_key_pem, "PRIVATE KEY").unwrap(),
            g.private_key_der
        );
        assert!(format!("{g:?}").find("PRIVATE").is_none());
        let thumbprint = pem_thumbprint_sha1(&g.certificate_pem).unwrap();
        assert_eq!(thumbprint, crate::hex_upper(&info.sha1));
        assert_eq!(thumbprint.len(), 40);
    }

    #[test]
    fn ec_certificate_round_trips_and_is_told_apart_from_rsa() {
        let nb = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let na = nb + Duration::from_secs(90 * 86400);
        let g = generate_ec_cert("mi-1", nb, na).unwrap();
        let info = parse_cert(&g.certificate_der).unwrap();
        assert_eq!(info.key_alg, KeyAlg::EcP256);
        assert_eq!(info.public_key.len(), 65);
        assert_eq!(info.not_before, 1_700_000_000);
        assert_eq!(info.not_after, 1_700_000_000 + 90 * 86400);
        assert_eq!(
            pem_to_der(&g.private_key_pem, "PRIVATE KEY").unwrap(),
            g.private_key_der
        );
        assert_eq!(pem_thumbprint_sha1(&g.certificate_pem).unwrap().len(), 40);
        let rsa = generate_rsa_cert("r", nb, na).unwrap();
        assert_eq!(
            parse_cert(&rsa.certificate_der).unwrap().key_alg,
            KeyAlg::Rsa
        );
        assert_eq!(KeyAlg::of_public_key(&[0x04; 64]), None);
        assert_eq!(KeyAlg::of_public_key(&[]), None);
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(parse_cert(b"nope").is_err());
        assert!(pem_to_der("junk", "CERTIFICATE").is_err());
        assert!(pem_thumbprint_sha1("junk").is_err());
    }
}
