//! Entra's domain logic: principals, the signing key and token issuance.
//! No axum or tonic types here.

pub(crate) mod application;
pub(crate) mod datetime;
pub(crate) mod directory;
pub(crate) mod federation;
pub(crate) mod graph_permission;
pub(crate) mod odata;
pub(crate) mod pinned_ids;
pub(crate) mod principal;
pub(crate) mod principal_cache;
pub(crate) mod signing;
pub(crate) mod tokens;

/// serde helper: bytes as base64url text (keeps stored JSON compact).
pub(crate) mod b64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&misim_token::b64url(v))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        misim_token::b64_lenient(&s).ok_or_else(|| serde::de::Error::custom("invalid base64"))
    }
}
