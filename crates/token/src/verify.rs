//! Verifying tokens: access tokens at resource servers, client assertions at Entra.
//!
//! Lifetimes are checked against an injected [`Clock`], never the system time,
//! so jsonwebtoken's own `exp`/`nbf` checks are switched off.

use std::collections::HashMap;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use misim_types::Clock;
use serde::Deserialize;

use crate::TokenError;
use crate::cert::KeyAlg;

/// Clock skew tolerated on `nbf`/`exp`, as Entra and ARM allow (5 minutes).
pub const SKEW_SECS: i64 = 300;

/// The longest a client assertion may be valid: its `exp` at most this long
/// after the earliest of its `nbf`, its `iat` and now. Entra documents no
/// limit ("Microsoft Entra ID currently doesn't place restrictions on the exp
/// time", https://learn.microsoft.com/entra/identity-platform/certificate-credentials)
/// but asks for 5-10 minutes; MSAL signs 10 minutes, the Rust `azure_identity`
/// crate 5 and misim's IMDS 10. misim bounds how long a leaked assertion can
/// be replayed at one hour, generous for every client (a deviation from Azure).
pub const MAX_ASSERTION_LIFETIME_SECS: i64 = 3600;

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
    /// RS256 or PS256 (RSA certificates), ES256 (P-256 certificates).
    pub alg: Algorithm,
}

/// Reads an assertion's header. Accepts RS256, PS256 and ES256 and either thumbprint
/// in any base64 spelling (clients differ: docs/azure-protocol.md, Entra: client assertions).
pub fn assertion_header(token: &str) -> Result<AssertionHeader, TokenError> {
    let h = jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
    if !matches!(
        h.alg,
        Algorithm::RS256 | Algorithm::PS256 | Algorithm::ES256
    ) {
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
/// whose subject public key is `public_key` (PKCS#1 for RSA, the SEC1 point
/// for P-256; the header's alg must fit the key's kind): signature, `iss == sub ==
/// client_id`, an accepted `aud`, and lifetime (at most
/// [`MAX_ASSERTION_LIFETIME_SECS`]). `nbf`/`iat` are optional and
/// NumericDates may be floats (MSAL sends them so). `jti` is not checked:
/// Entra accepts an assertion more than once within its lifetime (MSAL.NET
/// reused one for 5 minutes:
/// https://github.com/AzureAD/microsoft-authentication-library-for-dotnet/issues/2288).
pub fn verify_client_assertion(
    token: &str,
    header: &AssertionHeader,
    public_key: &[u8],
    client_id: &str,
    now: i64,
    accept_aud: impl Fn(&str) -> bool,
) -> Result<(), TokenError> {
    let claims = verify_assertion_signature(token, header, public_key)?;
    check_assertion_claims(&claims, client_id, now, accept_aud)
}

/// The signature half of [`verify_client_assertion`]: the assertion's claims
/// once its signature is verified with `public_key`.
pub fn verify_assertion_signature(
    token: &str,
    header: &AssertionHeader,
    public_key: &[u8],
) -> Result<serde_json::Value, TokenError> {
    // The key's kind, not the header, picks the verifier: an assertion cannot
    // ask for an RSA key to be read as an EC one or the other way round.
    let key = match (KeyAlg::of_public_key(public_key), header.alg) {
        (Some(KeyAlg::Rsa), Algorithm::RS256 | Algorithm::PS256) => {
            DecodingKey::from_rsa_der(public_key)
        }
        (Some(KeyAlg::EcP256), Algorithm::ES256) => DecodingKey::from_ec_der(public_key),
        (kind, alg) => {
            return Err(TokenError::Signature(format!(
                "alg {alg:?} does not fit the certificate's key ({kind:?})"
            )));
        }
    };
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
    Ok(data.claims)
}

/// The claims of a compact JWT whose signature was verified before (the same
/// text: [`verify_assertion_signature`] accepted it), without verifying again.
pub fn verified_assertion_claims(token: &str) -> Result<serde_json::Value, TokenError> {
    let payload = token
        .split('.')
        .nth(1)
        .and_then(crate::b64_lenient)
        .ok_or_else(|| TokenError::Malformed("the assertion has no payload".into()))?;
    serde_json::from_slice(&payload).map_err(|e| TokenError::Malformed(e.to_string()))
}

/// The claims half of [`verify_client_assertion`]: `iss == sub == client_id`,
/// an accepted `aud`, and the lifetime at `now`.
pub fn check_assertion_claims(
    c: &serde_json::Value,
    client_id: &str,
    now: i64,
    accept_aud: impl Fn(&str) -> bool,
) -> Result<(), TokenError> {
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
    let nbf = n("nbf");
    check_lifetime(now, nbf, exp)?;
    let start = [nbf, n("iat")].into_iter().flatten().fold(now, i64::min);
    if exp.saturating_sub(start) > MAX_ASSERTION_LIFETIME_SECS {
        return Err(TokenError::Lifetime(format!(
            "expiry {exp} is more than {MAX_ASSERTION_LIFETIME_SECS} seconds after {start}"
        )));
    }
    Ok(())
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
        let info = cert::parse_cert(&g.certificate_der).unwrap();
        let aud = "https://login.sim/t1/oauth2/v2.0/token";
        let a = s
            .sign(
                &serde_json::json!({"aud": aud, "iss": "c1", "sub": "c1", "jti": "j",
                "exp": NOW as f64 + 600.5, "iat": NOW as f64 + 0.25}),
            )
            .unwrap();
        let h = assertion_header(&a).unwrap();
        assert_eq!(h.x5t.as_deref(), Some(info.sha1.as_slice()));
        verify_client_assertion(&a, &h, &info.public_key, "c1", NOW as i64, |x| x == aud).unwrap();
        assert!(
            verify_client_assertion(&a, &h, &info.public_key, "c2", NOW as i64, |x| x == aud)
                .is_err()
        );
        assert!(
            verify_client_assertion(&a, &h, &info.public_key, "c1", NOW as i64, |_| false).is_err()
        );
        assert!(matches!(
            verify_client_assertion(&a, &h, &info.public_key, "c1", NOW as i64 + 2000, |x| x
                == aud),
            Err(TokenError::Lifetime(_))
        ));
        let other = cert::parse_cert(&signer().1.certificate_der).unwrap();
        assert!(matches!(
            verify_client_assertion(&a, &h, &other.public_key, "c1", NOW as i64, |x| x == aud),
            Err(TokenError::Signature(_))
        ));
    }

    #[test]
    fn es256_assertions_verify_against_p256_certificates_only() {
        let nb = UNIX_EPOCH + Duration::from_secs(NOW - 10);
        let ec = cert::generate_ec_cert("mi", nb, nb + Duration::from_secs(86400)).unwrap();
        let s = crate::CertSigner::new(&ec.private_key_der, &ec.certificate_der).unwrap();
        assert!(matches!(s, crate::CertSigner::Ec(_)));
        let info = cert::parse_cert(&ec.certificate_der).unwrap();
        let aud = "https://login.sim/t1/oauth2/v2.0/token";
        let claims = serde_json::json!({"aud": aud, "iss": "c1", "sub": "c1", "exp": NOW + 600});
        let a = s.sign(&claims).unwrap();
        let h = assertion_header(&a).unwrap();
        assert_eq!(h.alg, Algorithm::ES256);
        assert_eq!(h.x5t.as_deref(), Some(info.sha1.as_slice()));
        let now = NOW as i64;
        verify_client_assertion(&a, &h, &info.public_key, "c1", now, |x| x == aud).unwrap();
        // Another P-256 key, an RSA key, and a header claiming RS256 over the EC key all fail.
        let other = cert::generate_ec_cert("mi", nb, nb + Duration::from_secs(86400)).unwrap();
        let other = cert::parse_cert(&other.certificate_der).unwrap();
        assert!(matches!(
            verify_client_assertion(&a, &h, &other.public_key, "c1", now, |x| x == aud),
            Err(TokenError::Signature(_))
        ));
        let rsa = cert::parse_cert(&signer().1.certificate_der).unwrap();
        assert!(matches!(
            verify_client_assertion(&a, &h, &rsa.public_key, "c1", now, |x| x == aud),
            Err(TokenError::Signature(_))
        ));
        let confused = AssertionHeader {
            alg: Algorithm::RS256,
            ..h.clone()
        };
        assert!(matches!(
            verify_client_assertion(&a, &confused, &info.public_key, "c1", now, |x| x == aud),
            Err(TokenError::Signature(_))
        ));
        // An RSA assertion (old identities) still verifies through CertSigner.
        let g = signer().1;
        let rs = crate::CertSigner::new(&g.private_key_der, &g.certificate_der).unwrap();
        let a = rs.sign(&claims).unwrap();
        let h = assertion_header(&a).unwrap();
        let key = cert::parse_cert(&g.certificate_der).unwrap().public_key;
        verify_client_assertion(&a, &h, &key, "c1", now, |x| x == aud).unwrap();
    }

    #[test]
    fn client_assertion_lifetime_is_bounded() {
        let (s, g) = signer();
        let info = cert::parse_cert(&g.certificate_der).unwrap();
        let aud = "https://login.sim/t1/oauth2/v2.0/token";
        let now = NOW as i64;
        let check = |claims: serde_json::Value| {
            let a = s.sign(&claims).unwrap();
            let h = assertion_header(&a).unwrap();
            verify_client_assertion(&a, &h, &info.public_key, "c1", now, |x| x == aud)
        };
        let claims = |nbf: Option<i64>, iat: Option<i64>, exp: i64| {
            let mut c = serde_json::json!({"aud": aud, "iss": "c1", "sub": "c1", "exp": exp});
            if let Some(n) = nbf {
                c["nbf"] = n.into();
            }
            if let Some(i) = iat {
                c["iat"] = i.into();
            }
            c
        };
        let max = MAX_ASSERTION_LIFETIME_SECS;
        check(claims(Some(now), Some(now), now + max)).unwrap();
        check(claims(None, None, now + max)).unwrap();
        for c in [
            claims(None, None, now + max + 1),
            claims(Some(now), None, now + max + 1),
            // An early nbf or iat makes the lifetime longer, not the check looser.
            claims(Some(now - 100), None, now + max - 99),
            claims(None, Some(now - 100), now + max - 99),
            claims(None, None, i64::MAX),
        ] {
            assert!(
                matches!(check(c.clone()), Err(TokenError::Lifetime(_))),
                "{c}"
            );
        }
    }

    mod props {
        //! Garbled and hostile JWTs: every verifier answers with an error, never a panic.

        use super::*;
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};
        use serde_json::Value;

        const CASES: u32 = 256;

        fn json_value() -> impl Strategy<Value = Value> {
            prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(
                    |f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
                ),
                Just(Value::from(1e300)),
                Just(Value::from(-1e300)),
                Just(Value::from(NOW as i64)),
                ".{0,40}".prop_map(Value::from),
                Just(Value::from("c1")),
                Just(Value::from("https://login.sim/t1/oauth2/v2.0/token")),
                prop::collection::vec(".{0,10}".prop_map(Value::from), 0..3).prop_map(Value::from),
            ]
        }

        fn object(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
            prop::collection::btree_map(
                prop::sample::select(keys).prop_map(str::to_owned),
                json_value(),
                0..keys.len(),
            )
            .prop_map(|m| Value::Object(m.into_iter().collect()))
        }

        fn claims() -> impl Strategy<Value = Value> {
            object(&[
                "aud", "iss", "sub", "exp", "nbf", "iat", "jti", "tid", "oid", "appid", "azp",
                "ver",
            ])
        }

        fn header() -> impl Strategy<Value = Value> {
            let alg = prop::sample::select(vec!["RS256", "PS256", "HS256", "none", "ES256", ""]);
            (object(&["typ", "kid", "x5t", "x5t#S256", "crit"]), alg).prop_map(|(mut h, alg)| {
                h["alg"] = alg.into();
                h
            })
        }

        /// Random text, JWT-shaped garbage, and tokens our key really signed
        /// around random claims.
        fn tokens(s: &'static RsaSigner) -> impl Strategy<Value = String> {
            let b64 = |v: &Value| crate::b64url(v.to_string().as_bytes());
            prop_oneof![
                ".{0,120}",
                "[A-Za-z0-9_.-]{0,200}",
                (header(), claims(), "[A-Za-z0-9_-]{0,80}").prop_map(move |(h, c, sig)| format!(
                    "{}.{}.{sig}",
                    b64(&h),
                    b64(&c)
                )),
                claims().prop_map(move |c| s.sign(&c).unwrap()),
                (claims(), 0usize..400, any::<u8>()).prop_map(move |(c, at, byte)| {
                    let mut t = s.sign(&c).unwrap().into_bytes();
                    let i = at % t.len();
                    t[i] = byte % 0x7f;
                    String::from_utf8_lossy(&t).into_owned()
                }),
            ]
        }

        fn fixture() -> &'static (RsaSigner, Vec<u8>) {
            static F: std::sync::OnceLock<(RsaSigner, Vec<u8>)> = std::sync::OnceLock::new();
            F.get_or_init(|| {
                let (s, g) = signer();
                let info = cert::parse_cert(&g.certificate_der).unwrap();
                (s, info.public_key)
            })
        }

        #[test]
        fn garbled_tokens_never_panic_the_verifiers() {
            let (s, public_key) = fixture();
            let mut keys = KeySet::new("t1");
            let (n, e) = s.public_components();
            keys.add_rsa(s.kid(), &n, &e);
            let clock = ManualClock::at_unix(NOW);
            let iss = ["https://sts.windows.net/t1/"];
            let mut runner = TestRunner::new(Config {
                cases: CASES,
                ..Config::default()
            });
            let accepted = std::cell::Cell::new(0u32);
            runner
                .run(&tokens(s), |token| {
                    let _ = peek_kid(&token);
                    let _ = verify_access_token(&token, &keys, &iss, &clock, |_| true);
                    if let Ok(h) = assertion_header(&token)
                        && verify_client_assertion(&token, &h, public_key, "c1", NOW as i64, |a| {
                            a.ends_with("/oauth2/v2.0/token")
                        })
                        .is_ok()
                    {
                        accepted.set(accepted.get() + 1);
                    }
                    Ok(())
                })
                .unwrap();
            println!(
                "garbled_tokens_never_panic_the_verifiers: {CASES} cases, {} assertions accepted",
                accepted.get()
            );
        }
    }
}
