//! `CertSigner`: signs client assertions with a certificate's key, RS256 for
//! RSA keys and ES256 for P-256 keys (managed-identity certificates).

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use serde::Serialize;

use crate::{RsaSigner, TokenError, b64url};

/// A certificate's private key, parsed once, that signs compact JWTs naming the
/// certificate by `x5t` (and `kid`). IMDS holds one per identity: identities
/// made before P-256 keep their RSA key, newer ones have a P-256 key.
#[derive(Debug)]
pub enum CertSigner {
    /// RS256.
    Rsa(RsaSigner),
    /// ES256.
    Ec(EcSigner),
}

impl CertSigner {
    /// Builds a signer from a PKCS#8 DER private key (RSA or P-256) and its DER certificate.
    pub fn new(pkcs8_der: &[u8], certificate_der: &[u8]) -> Result<Self, TokenError> {
        match crate::cert::parse_cert(certificate_der)?.key_alg {
            crate::cert::KeyAlg::Rsa => Ok(Self::Rsa(RsaSigner::new(pkcs8_der, certificate_der)?)),
            crate::cert::KeyAlg::EcP256 => Ok(Self::Ec(EcSigner::new(pkcs8_der, certificate_der)?)),
        }
    }

    /// The key id (`kid` / `x5t` header value).
    pub fn kid(&self) -> &str {
        match self {
            Self::Rsa(s) => s.kid(),
            Self::Ec(s) => &s.kid,
        }
    }

    /// Signs `claims` as a compact JWT.
    pub fn sign<C: Serialize>(&self, claims: &C) -> Result<String, TokenError> {
        match self {
            Self::Rsa(s) => s.sign(claims),
            Self::Ec(s) => s.sign(claims),
        }
    }
}

/// A P-256 private key, parsed once, that signs ES256 JWTs.
#[derive(Debug)]
pub struct EcSigner {
    key: EcdsaKeyPair,
    rng: aws_lc_rs::rand::SystemRandom,
    kid: String,
    header_b64: String,
}

impl EcSigner {
    /// Builds a signer from a PKCS#8 DER P-256 key and the DER certificate whose
    /// thumbprint identifies it.
    pub fn new(pkcs8_der: &[u8], certificate_der: &[u8]) -> Result<Self, TokenError> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8_der)
            .map_err(|e| TokenError::Key(e.to_string()))?;
        let kid = b64url(&crate::sha1(certificate_der));
        let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5t": kid, "kid": kid});
        let header_b64 = b64url(header.to_string().as_bytes());
        Ok(Self {
            key,
            rng,
            kid,
            header_b64,
        })
    }

    /// Signs `claims` as a compact ES256 JWT (the signature is JWS's fixed
    /// 64-byte `r || s`, not DER).
    pub fn sign<C: Serialize>(&self, claims: &C) -> Result<String, TokenError> {
        let payload =
            serde_json::to_vec(claims).map_err(|e| TokenError::Malformed(e.to_string()))?;
        let mut out = String::with_capacity(self.header_b64.len() + payload.len() * 4 / 3 + 100);
        out.push_str(&self.header_b64);
        out.push('.');
        out.push_str(&b64url(&payload));
        let sig = self
            .key
            .sign(&self.rng, out.as_bytes())
            .map_err(|_| TokenError::Key("ecdsa signing failed".into()))?;
        out.push('.');
        out.push_str(&b64url(sig.as_ref()));
        Ok(out)
    }
}
