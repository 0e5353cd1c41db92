//! Verifying tokens: access tokens at resource servers, client assertions at Entra.
//!
//! Lifetimes are checked against an injected [`Clock`], never the system time,
//! so jsonwebtoken's own `exp`/`nbf` checks are switched off.

use std::collections::HashMap;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use misim_types::Clock;
use serde::Deserialize;

use crate::TokenError;

/// Clock skew tolerated on `nbf`/`exp`, as Entra and ARM allow (5 minutes).
pub const SKEW_SECS: i64 = 300;

/// The claims that resource servers read from an access token.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
pub struct AccessClaims {
    /// Audience: the resource.
    pub aud: String,
    /// Issuer.
    pub iss: String,
    /// Issued at.
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Expiry.
    pub exp: i64,
    /// Client (app) id of the caller (v1).
    #[serde(default)]
    pub appid: Option<String>,
    /// Client (app) id of the caller (v2).
    #[serde(default)]
    pub azp: Option<String>,
    /// Object id of the caller's principal.
    pub oid: String,
    /// Subject.
    pub sub: String,
    /// Tenant id.
    pub tid: String,
    /// Resource id of the managed identity, for MI tokens.
    #[serde(default)]
    pub xms_mirid: Option<String>,
    /// Token version, "1.0" or "2.0".
    #[serde(default)]
    pub ver: Option<String>,
}

impl AccessClaims {
    /// The caller's client id (`appid` in v1, `azp` in v2).
    pub fn client_id(&self) -> &str {
        self.appid.as_deref().or(self.azp.as_deref()).unwrap_or("")
    }
}

/// The public keys of one tenant, by `kid`.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, DecodingKey>,
    /// Tenant id the keys belong to.
    pub tenant_id: String,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .field("tenant_id", &self.tenant_id)
            .finish()
    }
}

impl KeySet {
    /// An empty set for `tenant_id`.
    pub fn new(tenant_id: impl Into<String>) -> Self {
        Self {
            keys: HashMap::new(),
            tenant_id: tenant_id.into(),
        }
    }

    /// Adds an RSA key from its big-endian modulus and exponent.
    pub fn add_rsa(&mut self, kid: &str, modulus: &[u8], exponent: &[u8]) {
        self.keys.insert(
            kid.to_owned(),
            DecodingKey::from_rsa_raw_components(modulus, exponent),
        );
    }

    /// True when the set holds `kid`.
    pub fn contains(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The `kid` of a token's header, without verifying anything.
pub fn peek_kid(token: &str) -> Result<Option<String>, TokenError> {
    let h = jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
    Ok(h.kid.or(h.x5t))
}

/// Verifies an access token: RS256 signature by a key of `keys`, `tid` and
/// `iss` of that tenant (v1 or v2 issuer), lifetime against `clock`, and an
/// audience accepted by `accept_aud`.
pub fn verify_access_token(
    token: &str,
    keys: &KeySet,
    issuers: &[&str],
    clock: &dyn Clock,
    accept_aud: impl Fn(&str) -> bool,
) -> Result<AccessClaims, TokenError> {
    let kid = peek_kid(token)?.ok_or_else(|| TokenError::Signature("token has no kid".into()))?;
    let key = keys
        .keys
        .get(&kid)
        .ok_or_else(|| TokenError::Signature(format!("unknown signing key {kid}")))?;
    let mut v = Validation::new(Algorithm::RS256);
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    let data =
        jsonwebtoken::decode::<AccessClaims>(token, key, &v).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                TokenError::Signature(e.to_string())
            }
            _ => TokenError::Malformed(e.to_string()),
        })?;
    let c = data.claims;
    if c.tid != keys.tenant_id {
        return Err(TokenError::Claim {
            claim: "tid",
            reason: format!("token is for tenant {}, expected {}", c.tid, keys.tenant_id),
        });
    }
    if !issuers.iter().any(|i| *i == c.iss) {
        return Err(TokenError::Claim {
            claim: "iss",
            reason: format!("issuer {} is not trusted", c.iss),
        });
    }
    check_lifetime(clock.unix(), Some(c.nbf), c.exp)?;
    if !accept_aud(&c.aud) {
        return Err(TokenError::Claim {
            claim: "aud",
            reason: format!("audience {} is not accepted", c.aud),
        });
    }
    Ok(c)
}

fn check_lifetime(now: i64, nbf: Option<i64>, exp: i64) -> Result<(), TokenError> {
    // Saturating: `exp` may be any number a client put in its assertion.
    if now.saturating_sub(exp) > SKEW_SECS {
        return Err(TokenError::Lifetime(format!("expired at {exp}, now {now}")));
    }
    if let Some(nbf) = nbf
        && now.saturating_add(SKEW_SECS) < nbf
    {
        return Err(TokenError::Lifetime(format!(
            "not valid before {nbf}, now {now}"
        )));
    }
    Ok(())
}

/// What a client assertion's header says about its signing certificate.
#[derive(Debug, Clone)]
pub struct AssertionHeader {
    /// SHA-1 thumbprint from `x5t`, decoded.
    pub x5t: Option<Vec<u8>>,
    /// SHA-256 thumbprint from `x5t#S256`, decoded.
    pub x5t_s256: Option<Vec<u8>>,
    /// RS256 or PS256.
    pub alg: Algorithm,
}

/// Reads an assertion's header. Accepts RS256 and PS256 and either thumbprint
/// in any base64 spelling (clients differ: docs/azure-protocol.md, Entra: client assertions).
pub fn assertion_header(token: &str) -> Result<AssertionHeader, TokenError> {
    let h = jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
    if !matches!(h.alg, Algorithm::RS256 | Algorithm::PS256) {
        return Err(TokenError::Malformed(format!(
            "unsupported alg {:?}",
            h.alg
        )));
    }
    let x5t = h.x5t.as_deref().and_then(crate::b64_lenient);
    let x5t_s256 = h.x5t_s256.as_deref().and_then(crate::b64_lenient);
    if x5t.is_none() && x5t_s256.is_none() {
        return Err(TokenError::Malformed(
            "assertion names no certificate (x5t)".into(),
        ));
    }
    Ok(AssertionHeader {
        x5t,
        x5t_s256,
        alg: h.alg,
    })
}

/// Verifies a client assertion signed with the key of a registered certificate
/// whose PKCS#1 public key is `rsa_public_key`: signature, `iss == sub ==
/// client_id`, an accepted `aud`, and lifetime. `nbf`/`iat` are optional and
/// NumericDates may be floats (MSAL sends them so).
pub fn verify_client_assertion(
    token: &str,
    header: &AssertionHeader,
    rsa_public_key: &[u8],
    client_id: &str,
    now: i64,
    accept_aud: impl Fn(&str) -> bool,
) -> Result<(), TokenError> {
    let key = DecodingKey::from_rsa_der(rsa_public_key);
    let mut v = Validation::new(header.alg);
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    let data =
        jsonwebtoken::decode::<serde_json::Value>(token, &key, &v).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                TokenError::Signature(e.to_string())
            }
            _ => TokenError::Malformed(e.to_string()),
        })?;
    let c = data.claims;
    let s = |name: &'static str| c.get(name).and_then(|v| v.as_str());
    // NumericDates may be floats (MSAL); `as` saturates out-of-range values,
    // and NaN becomes 0, so hostile numbers cannot overflow the checks below.
    let n = |name: &'static str| c.get(name).and_then(|v| v.as_f64()).map(|f| f as i64);
    for claim in ["iss", "sub"] {
        if s(claim) != Some(client_id) {
            return Err(TokenError::Claim {
                claim: if claim == "iss" { "iss" } else { "sub" },
                reason: format!("must equal the client id {client_id}"),
            });
        }
    }
    let aud_ok = match c.get("aud") {
        Some(serde_json::Value::String(a)) => accept_aud(a),
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|x| x.as_str()).any(&accept_aud),
        _ => false,
    };
    if !aud_ok {
        return Err(TokenError::Claim {
            claim: "aud",
            reason: "must be this tenant's token endpoint".into(),
        });
    }
    let exp = n("exp").ok_or(TokenError::Claim {
        claim: "exp",
        reason: "missing".into(),
    })?;
    check_lifetime(now, n("nbf"), exp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RsaSigner, cert};
    use misim_types::ManualClock;
    use std::time::{Duration, UNIX_EPOCH};

    const NOW: u64 = 1_767_139_199;

    fn signer() -> (RsaSigner, cert::GeneratedCert) {
        let nb = UNIX_EPOCH + Duration::from_secs(NOW - 10);
        let g = cert::generate_rsa_cert("k", nb, nb + Duration::from_secs(86400 * 90)).unwrap();
        (
            RsaSigner::new(&g.private_key_der, &g.certificate_der).unwrap(),
            g,
        )
    }

    fn clock_at_start() -> ManualClock {
        ManualClock::at_unix(NOW)
    }

    fn claims(aud: &str, exp: i64) -> serde_json::Value {
        serde_json::json!({"aud": aud, "iss": "https://sts.windows.net/t1/", "iat": NOW, "nbf": NOW,
            "exp": exp, "appid": "app", "oid": "o1", "sub": "o1", "tid": "t1", "ver": "1.0"})
    }

    #[test]
    fn access_token_checks() {
        let (s, _) = signer();
        let mut keys = KeySet::new("t1");
        let (n, e) = s.public_components();
        keys.add_rsa(s.kid(), &n, &e);
        let clock = ManualClock::at_unix(NOW);
        let iss = ["https://sts.windows.net/t1/"];
        let arm = |a: &str| misim_types::audiences::is_arm(a);

        let good = s
            .sign(&claims("https://management.azure.com", NOW as i64 + 3600))
            .unwrap();
        let c = verify_access_token(&good, &keys, &iss, &clock, arm).unwrap();
        assert_eq!(c.client_id(), "app");

        let wrong_aud = s
            .sign(&claims("https://vault.azure.net", NOW as i64 + 3600))
            .unwrap();
        assert!(matches!(
            verify_access_token(&wrong_aud, &keys, &iss, &clock, arm),
            Err(TokenError::Claim { claim: "aud", .. })
        ));

        clock.advance(Duration::from_secs(3600 + SKEW_SECS as u64 + 1));
        assert!(matches!(
            verify_access_token(&good, &keys, &iss, &clock, arm),
            Err(TokenError::Lifetime(_))
        ));

        // Same header and claims, one signature character changed.
        let mut tampered = good.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        assert!(matches!(
            verify_access_token(&tampered, &keys, &iss, &clock_at_start(), arm),
            Err(TokenError::Signature(_) | TokenError::Malformed(_))
        ));
        let other = signer().0;
        let forged = other
            .sign(&claims("https://management.azure.com", NOW as i64 + 3600))
            .unwrap();
        assert!(verify_access_token(&forged, &keys, &iss, &clock, arm).is_err());
        assert!(verify_access_token("not.a.jwt", &keys, &iss, &clock, arm).is_err());
    }

    #[test]
    fn client_assertion_accepts_float_dates_and_checks_identity() {
        let (s, g) = signer();
        let info = cert::parse_rsa_cert(&g.certificate_der).unwrap();
        let aud = "https://login.sim/t1/oauth2/v2.0/token";
        let a = s
            .sign(
                &serde_json::json!({"aud": aud, "iss": "c1", "sub": "c1", "jti": "j",
                "exp": NOW as f64 + 600.5, "iat": NOW as f64 + 0.25}),
            )
            .unwrap();
        let h = assertion_header(&a).unwrap();
        assert_eq!(h.x5t.as_deref(), Some(info.sha1.as_slice()));
        verify_client_assertion(&a, &h, &info.rsa_public_key, "c1", NOW as i64, |x| x == aud)
            .unwrap();
        assert!(
            verify_client_assertion(&a, &h, &info.rsa_public_key, "c2", NOW as i64, |x| x == aud)
                .is_err()
        );
        assert!(
            verify_client_assertion(&a, &h, &info.rsa_public_key, "c1", NOW as i64, |_| false)
                .is_err()
        );
        assert!(matches!(
            verify_client_assertion(&a, &h, &info.rsa_public_key, "c1", NOW as i64 + 2000, |x| x
                == aud),
            Err(TokenError::Lifetime(_))
        ));
        let other = cert::parse_rsa_cert(&signer().1.certificate_der).unwrap();
        assert!(matches!(
            verify_client_assertion(&a, &h, &other.rsa_public_key, "c1", NOW as i64, |x| x
                == aud),
            Err(TokenError::Signature(_))
        ));
    }
}
