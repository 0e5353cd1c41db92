//! RSA keys and X.509 certificates.
//!
//! Managed identities authenticate to Entra with certificates (docs/azure-protocol.md, Entra:
//! managed-identity certificates): ARM, acting as the managed-identity resource provider, generates
//! a key pair and a self-signed certificate per identity, registers the certificate with Entra and
//! hands both to the VM's IMDS.

use std::time::SystemTime;

use rsa::pkcs8::{EncodePrivateKey, LineEnding};

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

/// What Entra needs from a registered certificate.
#[derive(Debug, Clone)]
pub struct CertInfo {
    /// The RSA public key as PKCS#1 `RSAPublicKey` DER.
    pub rsa_public_key: Vec<u8>,
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
    let key_err = |e: &dyn std::fmt::Display| TokenError::Key(e.to_string());
    let private = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).map_err(|e| key_err(&e))?;
    let private_key_der = private
        .to_pkcs8_der()
        .map_err(|e| key_err(&e))?
        .as_bytes()
        .to_vec();
    let private_key_pem = private
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| key_err(&e))?
        .to_string();
    let key_pair =
        rcgen::KeyPair::from_pem_and_sign_algo(&private_key_pem, &rcgen::PKCS_RSA_SHA256)
            .map_err(|e| key_err(&e))?;
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
        private_key_der,
        private_key_pem,
    })
}

/// Parses a DER certificate that must carry an RSA key.
pub fn parse_rsa_cert(der: &[u8]) -> Result<CertInfo, TokenError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| TokenError::Key(format!("not an X.509 certificate: {e}")))?;
    let spki = &cert.tbs_certificate.subject_pki;
    // rsaEncryption
    if spki.algorithm.algorithm.to_id_string() != "1.2.840.113549.1.1.1" {
        return Err(TokenError::Key("certificate key is not RSA".into()));
    }
    let validity = &cert.tbs_certificate.validity;
    Ok(CertInfo {
        rsa_public_key: spki.subject_public_key.data.to_vec(),
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
        sha1: crate::sha1(der),
        sha256: crate::sha256(der),
    })
}

/// The SHA-1 thumbprint (upper-case hex, as Azure shows it) of the first certificate in `pem`,
/// which must carry an RSA key like every credential misim registers.
pub fn pem_thumbprint_sha1(pem: &str) -> Result<String, TokenError> {
    let info = parse_rsa_cert(&pem_to_der(pem, "CERTIFICATE")?)?;
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
        let info = parse_rsa_cert(&g.certificate_der).unwrap();
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
    fn garbage_is_not_a_certificate() {
        assert!(parse_rsa_cert(b"nope").is_err());
        assert!(pem_to_der("junk", "CERTIFICATE").is_err());
        assert!(pem_thumbprint_sha1("junk").is_err());
    }
}
