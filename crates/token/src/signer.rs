//! `RsaSigner`: an RSA key parsed once and reused to sign every RS256 JWT.
//!
//! Signing is aws-lc-rs (ring's API over AWS-LC): its RSA-2048 signature is
//! about twice as fast as ring's on the target machine, and Entra's token rate
//! is bounded by it (ARCHITECTURE.md, decision: aws-lc-rs for signing and TLS).

use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair};
use serde::Serialize;

use crate::{TokenError, b64url};

/// An RSA private key, parsed once, that signs RS256 JWTs.
///
/// Parsing a PKCS#8 key costs far more than one signature, so the key pair is
/// built at construction and reused for every token (the Entra signing path
/// and the IMDS client-assertion path are both hot).
#[derive(Debug)]
pub struct RsaSigner {
    key: RsaKeyPair,
    rng: aws_lc_rs::rand::SystemRandom,
    /// Header value identifying the key: base64url SHA-1 of its certificate.
    kid: String,
    /// Pre-encoded JOSE header (it never changes for a key).
    header_b64: String,
}

impl RsaSigner {
    /// Builds a signer from a PKCS#8 DER private key and the DER certificate
    /// whose thumbprint identifies it (`kid` and `x5t`).
    pub fn new(pkcs8_der: &[u8], certificate_der: &[u8]) -> Result<Self, TokenError> {
        let key = RsaKeyPair::from_pkcs8(pkcs8_der).map_err(|e| TokenError::Key(e.to_string()))?;
        let kid = b64url(&crate::sha1(certificate_der));
        let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5t": kid, "kid": kid});
        let header_b64 = b64url(header.to_string().as_bytes());
        Ok(Self {
            key,
            rng: aws_lc_rs::rand::SystemRandom::new(),
            kid,
            header_b64,
        })
    }

    /// The key id (`kid` / `x5t` header value).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The RSA modulus and exponent (big-endian), for JWKS.
    pub fn public_components(&self) -> (Vec<u8>, Vec<u8>) {
        let public = self.key.public_key();
        (
            public.modulus().big_endian_without_leading_zero().to_vec(),
            public.exponent().big_endian_without_leading_zero().to_vec(),
        )
    }

    /// Signs `claims` as a compact RS256 JWT.
    pub fn sign<C: Serialize>(&self, claims: &C) -> Result<String, TokenError> {
        let payload =
            serde_json::to_vec(claims).map_err(|e| TokenError::Malformed(e.to_string()))?;
        let mut out = String::with_capacity(self.header_b64.len() + payload.len() * 4 / 3 + 350);
        out.push_str(&self.header_b64);
        out.push('.');
        out.push_str(&b64url(&payload));
        let mut sig = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(&RSA_PKCS1_SHA256, &self.rng, out.as_bytes(), &mut sig)
            .map_err(|_| TokenError::Key("rsa signing failed".into()))?;
        out.push('.');
        out.push_str(&b64url(&sig));
        Ok(out)
    }
}
