//! `POST /{tenant}/oauth2/token` (v1) and `/{tenant}/oauth2/v2.0/token` (v2):
//! the client-credentials grant with a secret, a certificate assertion or an
//! external token matching a federated identity credential.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use serde::Serialize;

use super::error::oauth_error;
use crate::domain::tokens::{ClientCredential, Issued};
use crate::{Entra, EntraError};

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// The form fields we read; MSAL's extras (`client_info`, ...) are ignored.
struct Form(Vec<(String, String)>);

impl Form {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    fn require(&self, name: &'static str) -> Result<&str, EntraError> {
        self.get(name).ok_or(EntraError::MissingParameter(name))
    }
}

/// The pairs of an `application/x-www-form-urlencoded` body, exactly as
/// `serde_urlencoded` reads them (pairs split at the first `=`, empty ones
/// skipped, `+` a space, bad escapes kept, invalid UTF-8 replaced): its
/// byte-by-byte decoding was most of the cost of reading the form, whose
/// longest value, a client assertion, needs no decoding at all.
fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    body.split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|piece| {
            let (name, value) = match piece.iter().position(|&b| b == b'=') {
                Some(i) => (&piece[..i], &piece[i + 1..]),
                None => (piece, &[][..]),
            };
            (form_decode(name), form_decode(value))
        })
        .collect()
}

/// One name or value of a form: `+` is a space, `%XX` a byte (a `%` without two
/// hex digits stays as it is), then UTF-8 with invalid sequences replaced.
fn form_decode(input: &[u8]) -> String {
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while let Some(&b) = input.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let escaped = input.get(i + 1).copied().and_then(hex).and_then(|hi| {
                    let lo = input.get(i + 2).copied().and_then(hex)?;
                    u8::try_from(hi * 16 + lo).ok()
                });
                match escaped {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// `<resource>/.default` → `<resource>`; OIDC scopes that MSAL may add are ignored.
fn resource_from_scope(scope: &str) -> Result<&str, EntraError> {
    let mut resources = scope
        .split_whitespace()
        .filter(|s| !matches!(*s, "openid" | "profile" | "offline_access"));
    match (resources.next(), resources.next()) {
        (Some(s), None) => s
            .strip_suffix("/.default")
            .filter(|r| !r.is_empty())
            .ok_or_else(|| EntraError::InvalidScope(scope.to_owned())),
        _ => Err(EntraError::InvalidScope(scope.to_owned())),
    }
}

/// `client_secret_basic` (RFC 6749 §2.3.1): `Authorization: Basic
/// base64(urlencode(client_id) ":" urlencode(secret))`, which the discovery
/// document advertises. Returns the pair as form fields.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<[(String, String); 2]>, EntraError> {
    use base64::Engine;
    let Some(v) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let bad = || EntraError::InvalidRequest("malformed Basic authorization header".into());
    let v = v.to_str().map_err(|_| bad())?;
    let Some(b64) = v
        .strip_prefix("Basic ")
        .or_else(|| v.strip_prefix("basic "))
    else {
        return Ok(None);
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (id, secret) = text.split_once(':').ok_or_else(bad)?;
    let decode = |s: &str| -> Result<String, EntraError> {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(&format!("v={s}")).map_err(|_| bad())?;
        Ok(pairs.into_iter().next().map(|(_, v)| v).unwrap_or_default())
    };
    Ok(Some([
        ("client_id".to_owned(), decode(id)?),
        ("client_secret".to_owned(), decode(secret)?),
    ]))
}

async fn handle(
    entra: &Entra,
    headers: &HeaderMap,
    tenant: &str,
    body: &[u8],
    version: Version,
) -> Result<Issued, EntraError> {
    entra.check_tenant(tenant)?;
    let mut form = Form(parse_form(body));
    if let Some([(_, id), (_, secret)]) = basic_credentials(headers)? {
        if form.get("client_id").is_some_and(|f| f != id) {
            return Err(EntraError::InvalidRequest(
                "client_id in the form differs from the Basic authorization header".into(),
            ));
        }
        if form.get("client_secret").is_some() {
            return Err(EntraError::InvalidRequest(
                "the client secret was sent both in the form and as Basic authorization".into(),
            ));
        }
        form.0.retain(|(k, _)| k != "client_id");
        form.0.push(("client_id".into(), id));
        form.0.push(("client_secret".into(), secret));
    }
    let grant = form.require("grant_type")?;
    if grant != "client_credentials" {
        return Err(EntraError::UnsupportedGrantType(grant.to_owned()));
    }
    let client_id = form.require("client_id")?;
    let resource = match version {
        Version::V1 => form.require("resource")?,
        Version::V2 => resource_from_scope(form.require("scope")?)?,
    };
    let credential = match (form.get("client_secret"), form.get("client_assertion")) {
        (Some(secret), None) => ClientCredential::Secret(secret),
        (None, Some(assertion)) => {
            let ty = form.require("client_assertion_type")?;
            if ty != JWT_BEARER {
                return Err(EntraError::InvalidRequest(format!(
                    "client_assertion_type must be {JWT_BEARER}"
                )));
            }
            ClientCredential::Assertion(assertion)
        }
        (Some(_), Some(_)) => {
            return Err(EntraError::InvalidRequest(
                "only one of client_secret and client_assertion may be sent".into(),
            ));
        }
        (None, None) => {
            return Err(EntraError::MissingParameter(
                "client_assertion' or 'client_secret",
            ));
        }
    };
    entra
        .issue_access_token(client_id, credential, resource)
        .await
}

/// The v1 endpoint's answer (numbers as strings, as Entra's v1 endpoint sends
/// them). Typed rather than a `serde_json::Value`, which cost a map and a copy
/// of the token per response; the fields are in the alphabetical order the
/// `Value` map serialised them in, so the bytes on the wire are unchanged.
#[derive(Serialize)]
struct V1Response<'a> {
    access_token: &'a str,
    expires_in: &'a str,
    expires_on: &'a str,
    ext_expires_in: &'a str,
    not_before: &'a str,
    resource: &'a str,
    token_type: &'static str,
}

/// The v2 endpoint's answer; see [`V1Response`].
#[derive(Serialize)]
struct V2Response<'a> {
    access_token: &'a str,
    expires_in: i64,
    ext_expires_in: i64,
    token_type: &'static str,
}

async fn respond(
    entra: &Entra,
    headers: &HeaderMap,
    tenant: &str,
    body: &[u8],
    version: Version,
) -> Response {
    match handle(entra, headers, tenant, body, version).await {
        Ok(t) => {
            let expires_in = t.exp - entra.inner.clock.unix();
            let no_store = [(http::header::CACHE_CONTROL, "no-store, no-cache")];
            match version {
                Version::V1 => {
                    let (expires_in, exp, nbf) =
                        (expires_in.to_string(), t.exp.to_string(), t.nbf.to_string());
                    let body = V1Response {
                        access_token: &t.access_token,
                        expires_in: &expires_in,
                        expires_on: &exp,
                        ext_expires_in: &expires_in,
                        not_before: &nbf,
                        resource: &t.resource,
                        token_type: "Bearer",
                    };
                    (no_store, Json(body)).into_response()
                }
                Version::V2 => {
                    let body = V2Response {
                        access_token: &t.access_token,
                        expires_in,
                        ext_expires_in: expires_in,
                        token_type: "Bearer",
                    };
                    (no_store, Json(body)).into_response()
                }
            }
        }
        Err(e) => {
            // Refusals are the client's business, so INFO; the message never holds a secret.
            tracing::info!(tenant, error = %e, "token request refused");
            oauth_error(entra, headers, &e)
        }
    }
}

pub(crate) async fn token_v1(
    State(entra): State<Entra>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(&entra, &headers, &tenant, &body, Version::V1).await
}

pub(crate) async fn token_v2(
    State(entra): State<Entra>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(&entra, &headers, &tenant, &body, Version::V2).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The typed answers serialise exactly as the `serde_json::json!` maps they
    /// replaced (keys in alphabetical order).
    #[test]
    fn answers_serialise_as_the_maps_did() {
        let v1 = V1Response {
            access_token: "a.b.c",
            expires_in: "86399",
            expires_on: "1800086400",
            ext_expires_in: "86399",
            not_before: "1800000000",
            resource: "https://vault.azure.net",
            token_type: "Bearer",
        };
        let map = serde_json::json!({
            "token_type": "Bearer",
            "expires_in": "86399",
            "ext_expires_in": "86399",
            "expires_on": "1800086400",
            "not_before": "1800000000",
            "resource": "https://vault.azure.net",
            "access_token": "a.b.c",
        });
        assert_eq!(
            serde_json::to_string(&v1).unwrap(),
            serde_json::to_string(&map).unwrap()
        );
        let v2 = V2Response {
            access_token: "a.b.c",
            expires_in: 3599,
            ext_expires_in: 3599,
            token_type: "Bearer",
        };
        let map = serde_json::json!({
            "token_type": "Bearer",
            "expires_in": 3599,
            "ext_expires_in": 3599,
            "access_token": "a.b.c",
        });
        assert_eq!(
            serde_json::to_string(&v2).unwrap(),
            serde_json::to_string(&map).unwrap()
        );
    }

    #[test]
    fn forms_read_as_serde_urlencoded_reads_them() {
        for body in [
            "",
            "&&",
            "a=1&b=2",
            "a&=b&c=",
            "a=1=2&b",
            "grant_type=client_credentials&client_assertion=eyJ.eyJ.sig_-",
            "scope=https%3A%2F%2Fvault.azure.net%2F.default&x=a+b",
            "k=%ZZ&%E2%82%AC=%FF",
            "%2+=%2B&%=%4&%%41&a+b=c%20d",
        ] {
            let ours = parse_form(body.as_bytes());
            let theirs: Vec<(String, String)> =
                serde_urlencoded::from_bytes(body.as_bytes()).unwrap();
            assert_eq!(ours, theirs, "{body:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_form_reads_as_serde_urlencoded_reads_it(
            body in proptest::collection::vec(
                proptest::sample::select(b"ab=&%+2F\xff\xc3\xa9".to_vec()),
                0..40,
            )
        ) {
            let theirs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap();
            proptest::prop_assert_eq!(parse_form(&body), theirs);
        }
    }

    #[test]
    fn scopes() {
        assert_eq!(
            resource_from_scope("https://vault.azure.net/.default").unwrap(),
            "https://vault.azure.net"
        );
        assert_eq!(
            resource_from_scope("https://management.azure.com//.default offline_access").unwrap(),
            "https://management.azure.com/"
        );
        assert!(resource_from_scope("https://vault.azure.net").is_err());
        assert!(resource_from_scope("a/.default b/.default").is_err());
    }
}
