//! The JSON Web Key Set document served by Entra (`/discovery/v2.0/keys`).

use base64::Engine;
use serde::Serialize;

/// One key of a JWKS, in the shape Entra publishes (docs/azure-protocol.md, Entra: OIDC discovery
/// and JWKS).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Jwk {
    /// Always `RSA`.
    pub kty: String,
    /// Always `sig`.
    #[serde(rename = "use")]
    pub use_: String,
    /// Key id.
    pub kid: String,
    /// Thumbprint (same as kid).
    pub x5t: String,
    /// Modulus, base64url.
    pub n: String,
    /// Exponent, base64url.
    pub e: String,
    /// The certificate chain, standard base64 DER.
    pub x5c: Vec<String>,
    /// The issuer the key signs for (v2 keys carry it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
}

/// A JSON Web Key Set (`{"keys": [...]}`), the document at an issuer's `jwks_uri`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

impl Jwk {
    /// Builds an RSA signing key entry.
    pub fn rsa(
        kid: &str,
        modulus: &[u8],
        exponent: &[u8],
        cert_der: &[u8],
        issuer: Option<String>,
    ) -> Self {
        Self {
            kty: "RSA".into(),
            use_: "sig".into(),
            kid: kid.into(),
            x5t: kid.into(),
            n: crate::b64url(modulus),
            e: crate::b64url(exponent),
            x5c: vec![base64::engine::general_purpose::STANDARD.encode(cert_der)],
            issuer,
        }
    }
}
