//! Tokens and the keys behind them.
//!
//! - [`RsaSigner`]: an RSA key parsed **once** that signs RS256 JWTs (Entra's
//!   access tokens, IMDS's client assertions). Signing never re-parses a key.
//! - [`CertSigner`]: a certificate's key (RSA or P-256) that signs client
//!   assertions (IMDS), RS256 or ES256.
//! - [`cert`]: RSA and P-256 key generation and self-signed X.509 certificates
//!   (managed-identity credentials, Entra's signing certificate).
//! - [`verify`]: access-token verification against a key set (ARM, Key Vault)
//!   and client-assertion verification against a registered certificate (Entra).
//! - [`jwks`]: the JSON Web Key Set document.

pub mod cert;
mod cert_signer;
pub mod jwks;
mod signer;
pub mod verify;

pub use cert_signer::{CertSigner, EcSigner};
pub use signer::RsaSigner;

use base64::Engine;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// A key or certificate could not be generated or parsed.
    #[error("key error: {0}")]
    Key(String),
    /// The token is not a well-formed JWT.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The signature does not verify, or the key is unknown.
    #[error("invalid signature: {0}")]
    Signature(String),
    /// A claim is missing or has the wrong value.
    #[error("invalid claim {claim}: {reason}")]
    Claim {
        /// The claim name.
        claim: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The token is expired or not yet valid.
    #[error("token expired or not yet valid: {0}")]
    Lifetime(String),
}

impl TokenError {
    /// Maps to the shared vocabulary: bad tokens are authentication failures,
    /// key problems are internal.
    pub fn code(&self) -> misim_types::ErrorCode {
        match self {
            TokenError::Key(_) => misim_types::ErrorCode::Internal,
            _ => misim_types::ErrorCode::Unauthenticated,
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header value: scheme
/// compared case-insensitively (clients send `Bearer` and `bearer`), `None`
/// for another scheme or an empty token. Every resource server parses it here.
pub fn bearer_token(header_value: &str) -> Option<&str> {
    let (scheme, token) = header_value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// base64url without padding (JOSE).
pub fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64 leniently: URL-safe or standard alphabet, padding optional.
/// Clients disagree on how they encode `x5t` (docs/azure-protocol.md, Entra: client assertions).
pub fn b64_lenient(s: &str) -> Option<Vec<u8>> {
    let cleaned: String = s.trim_end_matches('=').replace('+', "-").replace('/', "_");
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cleaned)
        .ok()
}

/// SHA-1 of bytes (certificate thumbprints; SHA-1 is what `x5t` means).
pub fn sha1(bytes: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, bytes)
        .as_ref()
        .to_vec()
}

/// SHA-256 of bytes (`x5t#S256`).
pub fn sha256(bytes: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .to_vec()
}

/// Compares secrets (hashes, keys) in time that depends only on their lengths, so a
/// mismatch's position leaks nothing; lengths are not secret.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// Upper-case hex without separators, as Azure writes certificate thumbprints.
pub fn hex_upper(bytes: &[u8]) -> String {
    // A table, not `format!` per byte: Entra hashes a client secret and reads an
    // assertion's thumbprints with this on every token request, and one
    // formatted String per byte cost as much as the rest of request parsing.
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER  abc "), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer"), None);
    }

    #[test]
    fn hex_is_upper_case_and_unseparated() {
        assert_eq!(hex_upper(&[]), "");
        assert_eq!(hex_upper(&[0x00, 0x0f, 0xa5, 0xff]), "000FA5FF");
        let all: Vec<u8> = (0..=255).collect();
        let expected: String = all.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(hex_upper(&all), expected);
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    #[test]
    fn lenient_base64_accepts_every_x5t_spelling() {
        let raw = sha1(b"cert");
        let std_padded = base64::engine::general_purpose::STANDARD.encode(&raw);
        let url_padded = base64::engine::general_purpose::URL_SAFE.encode(&raw);
        for s in [std_padded, url_padded, b64url(&raw)] {
            assert_eq!(b64_lenient(&s).as_deref(), Some(raw.as_slice()), "{s}");
        }
        assert!(b64_lenient("%%%").is_none());
    }
}
