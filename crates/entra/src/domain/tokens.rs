//! Token issuance: client authentication (secret or certificate assertion), resource check and the
//! v1 access-token claims (docs/azure-protocol.md, Entra: managed-identity access tokens).

use std::collections::HashMap;

use misim_token::TokenError;
use misim_token::verify::{
    AccessClaims as VerifiedClaims, assertion_header, check_assertion_claims,
    verified_assertion_claims, verify_access_token, verify_assertion_signature,
};
use misim_types::{SharedClock, SharedIds, audiences};
use serde::Serialize;

use super::directory::{Directory, hash_secret};
use super::federation::{self, ExternalClaims, TOKEN_EXCHANGE_AUDIENCE};
use super::principal::{KeyCredential, Principal, PrincipalKind};
use super::signing::KeyRing;
use crate::EntraError;

/// Lifetime of managed-identity tokens (docs/azure-protocol.md, Entra: managed-identity access
/// tokens).
pub const MI_LIFETIME_SECS: i64 = 86400;
/// Lifetime of application tokens.
pub const APP_LIFETIME_SECS: i64 = 3600;

/// How the client proves who it is.
#[derive(Clone, Copy)]
pub(crate) enum ClientCredential<'a> {
    /// A client secret (`appidacr` "1").
    Secret(&'a str),
    /// A certificate-signed client assertion (`appidacr` "2").
    Assertion(&'a str),
}

/// The outcome of client authentication.
#[derive(Debug)]
pub(crate) enum Authenticated {
    /// Authenticated: the principal and its `appidacr`.
    Done(Box<Principal>, &'static str),
    /// An external token that matches one of the principal's federated
    /// credentials and is within its lifetime; its signature is still to be
    /// verified with its issuer's keys.
    Federated(Box<PendingFederation>),
}

/// An external token waiting for its issuer's keys.
#[derive(Debug)]
pub(crate) struct PendingFederation {
    pub(crate) principal: Principal,
    pub(crate) claims: ExternalClaims,
    pub(crate) token: String,
    /// `kid` (or `x5t`) of the token's header.
    pub(crate) kid: Option<String>,
}

/// The payload of a compact JWT, unverified.
fn peek_payload(token: &str) -> Option<serde_json::Value> {
    let payload = token.split('.').nth(1)?;
    serde_json::from_slice(&misim_token::b64_lenient(payload)?).ok()
}

/// The claims the exchange reads; `iss` and `sub` must be strings.
fn external_claims(c: &serde_json::Value) -> Result<ExternalClaims, EntraError> {
    let malformed = |what: &str| EntraError::MalformedAssertion {
        reason: format!("the assertion has no {what} claim"),
    };
    let s = |name: &str| c.get(name).and_then(|v| v.as_str()).map(str::to_owned);
    // NumericDates may be floats; `as` saturates hostile values.
    let n = |name: &str| c.get(name).and_then(|v| v.as_f64()).map(|f| f as i64);
    let aud = match c.get("aud") {
        Some(serde_json::Value::String(a)) => vec![a.clone()],
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    if aud.is_empty() {
        return Err(malformed("aud"));
    }
    Ok(ExternalClaims {
        iss: s("iss").ok_or_else(|| malformed("iss"))?,
        sub: s("sub").ok_or_else(|| malformed("sub"))?,
        aud,
        exp: n("exp"),
        nbf: n("nbf"),
        iat: n("iat"),
    })
}

/// An issued access token.
#[derive(Debug, Clone)]
pub(crate) struct Issued {
    pub(crate) access_token: String,
    pub(crate) iat: i64,
    pub(crate) nbf: i64,
    pub(crate) exp: i64,
    pub(crate) resource: String,
}

#[derive(Serialize)]
struct AccessClaims<'a> {
    aud: &'a str,
    iss: &'a str,
    iat: i64,
    nbf: i64,
    exp: i64,
    aio: &'a str,
    appid: &'a str,
    appidacr: &'a str,
    idp: &'a str,
    idtyp: &'a str,
    oid: &'a str,
    rh: &'a str,
    sub: &'a str,
    tid: &'a str,
    uti: &'a str,
    ver: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    xms_mirid: Option<String>,
}

/// Client assertions whose signature has been verified, each with the
/// SHA-256 thumbprint of the certificate that verified it: a signature check
/// is a pure function of the assertion's bytes and the key, so a client that
/// sends the same assertion again (MSAL reuses one for minutes) pays for it
/// once. Bounded: emptied when full. Claims (lifetime, audience, client) are
/// checked on every use.
#[derive(Default)]
struct VerifiedAssertions(parking_lot::Mutex<HashMap<String, String>>);

/// Entries kept before [`VerifiedAssertions`] starts over.
const VERIFIED_ASSERTIONS_MAX: usize = 1024;

impl VerifiedAssertions {
    fn contains(&self, assertion: &str, thumbprint_sha256: &str) -> bool {
        self.0.lock().get(assertion).map(String::as_str) == Some(thumbprint_sha256)
    }

    fn insert(&self, assertion: &str, thumbprint_sha256: &str) {
        let mut m = self.0.lock();
        if m.len() >= VERIFIED_ASSERTIONS_MAX {
            m.clear();
        }
        m.insert(assertion.to_owned(), thumbprint_sha256.to_owned());
    }
}

impl std::fmt::Debug for VerifiedAssertions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The assertions are credentials: count them, never print them.
        write!(f, "VerifiedAssertions({})", self.0.lock().len())
    }
}

/// Issues tokens for one tenant.
#[derive(Debug)]
pub(crate) struct Issuer {
    tenant_id: String,
    issuer_v1: String,
    issuer_v2: String,
    /// Normalised extra resources.
    extra_resources: Vec<String>,
    /// Accepted client-assertion audiences, normalised ([`normalize_url`]):
    /// the v2 and v1 token endpoints of this tenant under the public URL.
    assertion_audiences: [String; 2],
    /// Normalised audiences of the Graph API Entra serves: its own URL and Microsoft Graph's.
    graph_audiences: [String; 2],
    /// [`TOKEN_EXCHANGE_AUDIENCE`] normalised, and the `rh` claim: both fixed for the
    /// tenant, so computed once rather than on every token.
    exchange_audience: String,
    rh: String,
    /// The signing keys (their public halves also verify Graph bearer tokens).
    pub(crate) keys: KeyRing,
    /// Lifetimes of the tokens it signs.
    lifetimes: crate::TokenPolicy,
    /// Client assertions whose signature verified, with the certificate that verified each.
    verified: VerifiedAssertions,
    clock: SharedClock,
    ids: SharedIds,
}

/// A URL for comparing audiences: lower-case (hosts, the tenant GUID and
/// Entra's paths are case-insensitive), without the scheme's default port
/// and trailing slashes, so `https://Host:443/T/oauth2/v2.0/token/` matches
/// `https://host/t/oauth2/v2.0/token` (clients such as the Rust
/// `azure_identity` crate build the URL with a URL parser that drops
/// default ports).
fn normalize_url(url: &str) -> String {
    let lower = url.trim().to_ascii_lowercase();
    let (scheme, rest) = match lower.split_once("://") {
        Some(parts) => parts,
        None => return lower.trim_end_matches('/').to_owned(),
    };
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = match scheme {
        "https" => host.strip_suffix(":443").unwrap_or(host),
        "http" => host.strip_suffix(":80").unwrap_or(host),
        _ => host,
    };
    format!("{scheme}://{host}{}", path.trim_end_matches('/'))
}

impl Issuer {
    pub(crate) fn new(
        config: &crate::Config,
        keys: KeyRing,
        clock: SharedClock,
        ids: SharedIds,
    ) -> Self {
        Self {
            tenant_id: config.tenant_id.clone(),
            issuer_v1: config.issuer_v1(),
            issuer_v2: config.issuer_v2(),
            extra_resources: config
                .extra_resources
                .iter()
                .map(|r| audiences::normalize(r))
                .collect(),
            // Entra accepts its token endpoint as `aud`, v2 (what MSAL and the
            // Azure SDKs send) or v1 (ADAL's), of this tenant at this host:
            // https://learn.microsoft.com/entra/identity-platform/certificate-credentials.
            // misim's authority host is its public URL.
            assertion_audiences: [
                normalize_url(&format!(
                    "{}/{}/oauth2/v2.0/token",
                    config.public_url, config.tenant_id
                )),
                normalize_url(&format!(
                    "{}/{}/oauth2/token",
                    config.public_url, config.tenant_id
                )),
            ],
            graph_audiences: [
                audiences::normalize(&config.public_url),
                audiences::normalize(audiences::GRAPH),
            ],
            exchange_audience: audiences::normalize(TOKEN_EXCHANGE_AUDIENCE),
            rh: format!("0.A{}", misim_token::b64url(config.tenant_id.as_bytes())),
            keys,
            lifetimes: config.tokens,
            verified: VerifiedAssertions::default(),
            clock,
            ids,
        }
    }

    /// Fails with `UnknownResource` unless tokens may be issued for `resource`.
    pub(crate) fn check_resource(&self, resource: &str) -> Result<(), EntraError> {
        let norm = audiences::normalize(resource);
        if !resource.is_empty()
            && (audiences::known(resource).is_some()
                || norm == self.exchange_audience
                || self.extra_resources.contains(&norm)
                || self.graph_audiences.contains(&norm))
        {
            Ok(())
        } else {
            Err(EntraError::UnknownResource {
                resource: resource.to_owned(),
                tenant: self.tenant_id.clone(),
            })
        }
    }

    /// True when `aud` names the Graph API this tenant serves.
    pub(crate) fn is_graph_audience(&self, aud: &str) -> bool {
        self.graph_audiences.contains(&audiences::normalize(aud))
    }

    /// Verifies a bearer token presented to the Graph API: our signature,
    /// this tenant, the v1 issuer, its lifetime and a Graph audience.
    pub(crate) fn verify_graph_token(&self, token: &str) -> Result<VerifiedClaims, TokenError> {
        verify_access_token(
            token,
            &self.keys.snapshot().verify,
            &[self.issuer_v1.as_str()],
            self.clock.as_ref(),
            |aud| self.is_graph_audience(aud),
        )
    }

    /// The token endpoint under the public URL, or the same path on a
    /// loopback host: one Entra is reached under several names (compose
    /// publishes `https://entra:8444` to VMs and `https://localhost:{port}`
    /// to the host), and clients that build the endpoint themselves sign
    /// the name they used.
    fn assertion_aud_ok(&self, aud: &str) -> bool {
        let aud = normalize_url(aud);
        if self.assertion_audiences.contains(&aud) {
            return true;
        }
        let Some(rest) = aud.strip_prefix("https://") else {
            return false;
        };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        matches!(host, "localhost" | "127.0.0.1" | "[::1]")
            && self.assertion_audiences.iter().any(|a| {
                a.strip_prefix("https://")
                    .and_then(|r| r.find('/').map(|i| &r[i..]))
                    == Some(path)
            })
    }

    /// Authenticates the client: its principal and `appidacr`, or an external
    /// token still to be verified with its issuer's keys.
    pub(crate) fn authenticate(
        &self,
        dir: &Directory,
        client_id: &str,
        credential: ClientCredential<'_>,
    ) -> Result<Authenticated, EntraError> {
        let p = dir
            .get_by_app(client_id)?
            .ok_or_else(|| EntraError::UnknownApplication {
                client_id: client_id.to_owned(),
                tenant: self.tenant_id.clone(),
            })?;
        // The service principal of a Graph application authenticates with
        // the application's credentials.
        let app = dir.application_of(&p)?;
        let now = self.clock.unix();
        match credential {
            ClientCredential::Secret(secret) => {
                let hash = hash_secret(secret);
                let own = p
                    .secret_sha256
                    .as_deref()
                    .is_some_and(|h| misim_token::constant_time_eq(h.as_bytes(), hash.as_bytes()));
                let matching: Vec<_> = app
                    .as_ref()
                    .map(|a| {
                        a.password_credentials
                            .iter()
                            .filter(|c| {
                                misim_token::constant_time_eq(
                                    c.secret_sha256.as_bytes(),
                                    hash.as_bytes(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let from_app = matching
                    .iter()
                    .any(|c| now >= c.start_unix && now <= c.end_unix);
                // The right secret, past its end date: Entra says so (AADSTS7000222).
                if p.kind == PrincipalKind::Application
                    && !own
                    && !from_app
                    && matching.iter().any(|c| now > c.end_unix)
                {
                    return Err(EntraError::ExpiredSecret {
                        client_id: client_id.to_owned(),
                    });
                }
                if p.kind != PrincipalKind::Application || !(own || from_app) {
                    return Err(EntraError::InvalidSecret {
                        client_id: client_id.to_owned(),
                    });
                }
                Ok(Authenticated::Done(Box::new(p), "1"))
            }
            ClientCredential::Assertion(assertion) => {
                let creds: Vec<&KeyCredential> = p
                    .key_credentials
                    .iter()
                    .chain(app.iter().flat_map(|a| a.key_credentials.iter()))
                    .collect();
                // Decoded once: `external` reads it to tell an external token from the
                // client's own assertion, and an assertion verified before has its claims
                // checked from it (decoding it twice was a tenth of the handler's cost
                // beside signing).
                let payload = peek_payload(assertion);
                if let Some((claims, kid)) =
                    Self::external(client_id, assertion, payload.as_ref(), &creds)?
                {
                    let fics = dir.federated_for(&p)?;
                    federation::match_credential(&fics, &claims)?;
                    federation::check_lifetime(&claims, now, misim_token::verify::SKEW_SECS)?;
                    return Ok(Authenticated::Federated(Box::new(PendingFederation {
                        principal: p,
                        claims,
                        token: assertion.to_owned(),
                        kid,
                    })));
                }
                self.verify_assertion(&creds, client_id, assertion, payload)?;
                Ok(Authenticated::Done(Box::new(p), "2"))
            }
        }
    }

    /// The claims and key id of `assertion` (whose decoded payload is
    /// `payload`) when it is an external token: not the client's own
    /// certificate assertion (whose `iss` is the client id and whose header
    /// names one of its certificates). `None` leaves the assertion to the
    /// certificate path and its errors.
    fn external(
        client_id: &str,
        assertion: &str,
        payload: Option<&serde_json::Value>,
        creds: &[&KeyCredential],
    ) -> Result<Option<(ExternalClaims, Option<String>)>, EntraError> {
        // The client's own assertion is told by its payload alone, before the
        // header is decoded (the certificate path decodes it again, its own way).
        let Some(payload) = payload else {
            return Ok(None);
        };
        if payload.get("iss").and_then(|v| v.as_str()) == Some(client_id) {
            return Ok(None);
        }
        let Ok(header) = jsonwebtoken::decode_header(assertion) else {
            return Ok(None);
        };
        let thumb = |t: &Option<String>| {
            t.as_deref()
                .and_then(misim_token::b64_lenient)
                .map(|b| misim_token::hex_upper(&b))
        };
        let (sha1, sha256) = (thumb(&header.x5t), thumb(&header.x5t_s256));
        if creds.iter().any(|k| {
            sha1.as_deref() == Some(&k.thumbprint_sha1)
                || sha256.as_deref() == Some(&k.thumbprint_sha256)
        }) {
            return Ok(None);
        }
        let claims = external_claims(payload)?;
        Ok(Some((claims, header.kid.or(header.x5t))))
    }

    /// True when `iss` is this tenant's own (v1 or v2) issuer.
    pub(crate) fn is_own_issuer(&self, iss: &str) -> bool {
        iss == self.issuer_v1 || iss == self.issuer_v2
    }

    /// Verifies a token this tenant issued and presented as a federated
    /// credential: only a managed identity's token may be (its `sub` the
    /// identity's object id), signed with this tenant's key.
    pub(crate) fn verify_own_token(
        &self,
        dir: &Directory,
        pending: &PendingFederation,
    ) -> Result<(), EntraError> {
        let claims = verify_access_token(
            &pending.token,
            &self.keys.snapshot().verify,
            &[self.issuer_v1.as_str(), self.issuer_v2.as_str()],
            self.clock.as_ref(),
            |_| true,
        )
        .map_err(|e| match e {
            TokenError::Lifetime(_) => EntraError::FederatedTokenTimeRange {
                now: self.clock.unix(),
                nbf: pending.claims.nbf.unwrap_or(0),
                exp: pending.claims.exp.unwrap_or(0),
            },
            other => EntraError::InvalidAssertion {
                reason: other.to_string(),
            },
        })?;
        let is_mi = dir
            .get(&claims.oid)?
            .is_some_and(|p| p.kind == PrincipalKind::ManagedIdentity && p.object_id == claims.sub);
        if !is_mi {
            return Err(EntraError::EntraIssuedToken);
        }
        Ok(())
    }

    /// Verifies the client's own certificate assertion; `payload` is its payload as
    /// [`peek_payload`] decoded it.
    fn verify_assertion(
        &self,
        creds: &[&KeyCredential],
        client_id: &str,
        assertion: &str,
        payload: Option<serde_json::Value>,
    ) -> Result<(), EntraError> {
        let invalid = |reason: String| EntraError::InvalidAssertion { reason };
        let header = assertion_header(assertion).map_err(|e| EntraError::MalformedAssertion {
            reason: e.to_string(),
        })?;
        let sha1 = header.x5t.as_deref().map(misim_token::hex_upper);
        let sha256 = header.x5t_s256.as_deref().map(misim_token::hex_upper);
        let cred = creds
            .iter()
            .find(|k| {
                sha1.as_deref() == Some(&k.thumbprint_sha1)
                    || sha256.as_deref() == Some(&k.thumbprint_sha256)
            })
            .ok_or_else(|| {
                invalid(format!(
                    "no certificate registered for {client_id} matches the assertion's x5t"
                ))
            })?;
        let now = self.clock.unix();
        if now > cred.end_unix {
            return Err(EntraError::ExpiredKey {
                thumbprint: cred.thumbprint_sha1.clone(),
                start: cred.start_unix,
                end: cred.end_unix,
            });
        }
        if now < cred.start_unix {
            return Err(EntraError::AssertionExpired {
                reason: format!(
                    "certificate {} is outside its validity window",
                    cred.thumbprint_sha1
                ),
            });
        }
        // The signature of these exact bytes under this certificate was
        // checked before (clients reuse an assertion: MSAL for minutes, see
        // misim_token's verify_client_assertion): only its claims are checked
        // again, at `now`.
        let claims = if self.verified.contains(assertion, &cred.thumbprint_sha256) {
            // `peek_payload` decodes exactly as `verified_assertion_claims` does; the
            // fallback only keeps the error of a payload that does not decode.
            payload.map_or_else(|| verified_assertion_claims(assertion), Ok)
        } else {
            verify_assertion_signature(assertion, &header, &cred.rsa_public_key).inspect(|_| {
                self.verified.insert(assertion, &cred.thumbprint_sha256);
            })
        };
        claims
            .and_then(|c| {
                check_assertion_claims(&c, client_id, now, |aud| self.assertion_aud_ok(aud))
            })
            .map_err(|e| match e {
                TokenError::Lifetime(r) => EntraError::AssertionExpired { reason: r },
                TokenError::Claim {
                    claim: "iss" | "sub",
                    ..
                } => EntraError::AssertionClientMismatch,
                TokenError::Claim { claim: "aud", .. } => EntraError::AssertionAudience,
                TokenError::Signature(r) => invalid(r),
                other => EntraError::MalformedAssertion {
                    reason: other.to_string(),
                },
            })
    }

    /// Signs a v1 access token for `p`. A token for
    /// `api://AzureADTokenExchange` (a managed identity's token used as an
    /// application's federated credential) carries the v2 issuer and
    /// `ver` 2.0, which the credential names (docs/workload-identity.md).
    pub(crate) fn sign_for(
        &self,
        p: &Principal,
        appidacr: &str,
        resource: &str,
    ) -> Result<Issued, EntraError> {
        let iat = self.clock.unix();
        let lifetime = match p.kind {
            PrincipalKind::ManagedIdentity => self.lifetimes.managed_identity_lifetime_secs,
            PrincipalKind::Application => self.lifetimes.application_lifetime_secs,
        };
        let exp = iat + lifetime;
        let exchange = audiences::normalize(resource) == self.exchange_audience;
        let (iss, ver) = if exchange {
            (self.issuer_v2.as_str(), "2.0")
        } else {
            (self.issuer_v1.as_str(), "1.0")
        };
        let opaque = |g: String| misim_token::b64url(g.as_bytes());
        let uti = opaque(self.ids.guid());
        let aio = opaque(self.ids.guid());
        let claims = AccessClaims {
            aud: resource,
            iss,
            iat,
            nbf: iat,
            exp,
            aio: &aio,
            appid: &p.app_id,
            appidacr,
            idp: iss,
            idtyp: "app",
            oid: &p.object_id,
            rh: &self.rh,
            sub: &p.object_id,
            tid: &self.tenant_id,
            uti: &uti,
            ver,
            xms_mirid: p.xms_mirid(),
        };
        let access_token = self.keys.snapshot().current.signer.sign(&claims)?;
        Ok(Issued {
            access_token,
            iat,
            nbf: iat,
            exp,
            resource: resource.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_normalise_for_audience_comparison() {
        assert_eq!(
            normalize_url("HTTPS://Login.Sim:443/T1/oauth2/v2.0/token/"),
            "https://login.sim/t1/oauth2/v2.0/token"
        );
        assert_eq!(normalize_url("http://h:80/a"), "http://h/a");
        assert_eq!(normalize_url("https://h:8443/a"), "https://h:8443/a");
        assert_eq!(normalize_url("https://h:4430/a"), "https://h:4430/a");
        assert_eq!(normalize_url("/t/oauth2/token/"), "/t/oauth2/token");
    }
}
