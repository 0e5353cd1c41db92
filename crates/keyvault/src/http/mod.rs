//! The Key Vault secrets data plane over HTTP (docs/azure-protocol.md, Key Vault).
//!
//! Every request goes: vault from `Host` → `api-version` → route → bearer
//! token (else a 401 challenge) → `CheckVaultAccess` at ARM → the operation.

use std::collections::BTreeMap;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode, header};
use misim_proto::arm::v1::CheckVaultAccessRequest;
use misim_proto::keys::KeysError;
use misim_token::TokenError;
use misim_token::verify::AccessClaims;
use misim_types::audiences;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::KeyVault;
use crate::domain::{SecretVersion, valid_name};
use crate::error::KvError;

const GET_SECRET: &str = "Microsoft.KeyVault/vaults/secrets/getSecret/action";
const SET_SECRET: &str = "Microsoft.KeyVault/vaults/secrets/setSecret/action";
const LIST_SECRETS: &str = "Microsoft.KeyVault/vaults/secrets/readMetadata/action";
const DELETE_SECRET: &str = "Microsoft.KeyVault/vaults/secrets/delete";
/// Largest accepted request body (Key Vault secrets are at most 25 KB).
const MAX_BODY: usize = 256 * 1024;

pub(crate) fn router(kv: KeyVault) -> Router {
    Router::new()
        .fallback(handle)
        .with_state(kv)
        .layer(misim_runtime::telemetry::http_trace_layer("keyvault"))
}

/// What a request asks for.
enum Op {
    List,
    Get {
        name: String,
        version: Option<String>,
    },
    Set {
        name: String,
    },
    Delete {
        name: String,
    },
}

impl Op {
    fn action(&self) -> &'static str {
        match self {
            Op::List => LIST_SECRETS,
            Op::Get { .. } => GET_SECRET,
            Op::Set { .. } => SET_SECRET,
            Op::Delete { .. } => DELETE_SECRET,
        }
    }

    fn name(&self) -> Option<&str> {
        match self {
            Op::List => None,
            Op::Get { name, .. } | Op::Set { name } | Op::Delete { name } => Some(name),
        }
    }
}

fn route(method: &Method, path: &str) -> Result<Op, KvError> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let not_allowed = || KvError::MethodNotAllowed(method.to_string());
    let op = match segs.as_slice() {
        ["secrets"] | ["secrets", ""] => match *method {
            Method::GET => Op::List,
            _ => return Err(not_allowed()),
        },
        ["secrets", name] | ["secrets", name, ""] => match *method {
            Method::GET => Op::Get {
                name: (*name).to_owned(),
                version: None,
            },
            Method::PUT if segs.len() == 2 => Op::Set {
                name: (*name).to_owned(),
            },
            Method::DELETE if segs.len() == 2 => Op::Delete {
                name: (*name).to_owned(),
            },
            _ => return Err(not_allowed()),
        },
        ["secrets", name, version] => match *method {
            Method::GET => Op::Get {
                name: (*name).to_owned(),
                version: Some((*version).to_owned()),
            },
            _ => return Err(not_allowed()),
        },
        _ => return Err(KvError::NotFound(path.to_owned())),
    };
    if let Some(name) = op.name().filter(|n| !valid_name(n)) {
        return Err(KvError::BadParameter(format!(
            "The secret name '{name}' is invalid: names are 1-127 characters of letters, digits and dashes"
        )));
    }
    Ok(op)
}

/// Azure's public vault DNS suffix: served besides the configured one, so a
/// sandbox whose DNS sends `{vault}.vault.azure.net` here (the compose
/// sandbox's misim-dns) serves vaults under their Azure URLs too.
const AZURE_DNS_SUFFIX: &str = "vault.azure.net";

/// The vault name and the base URL (`https://{vault}.{suffix}[:port]`) from `Host`.
fn vault_of(kv: &KeyVault, req: &http::request::Parts) -> Result<(String, String), KvError> {
    let host = req
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or("")
        .to_ascii_lowercase();
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            (n.to_owned(), Some(p.to_owned()))
        }
        _ => (host.clone(), None),
    };
    let suffix = format!(
        ".{}",
        kv.inner
            .config
            .dns_suffix
            .trim_matches('.')
            .to_ascii_lowercase()
    );
    let azure = format!(".{AZURE_DNS_SUFFIX}");
    let vault_under = |suffix: &str| {
        name.strip_suffix(suffix)
            .and_then(|v| v.split('.').next())
            .filter(|v| !v.is_empty())
            .map(|v| (v.to_owned(), suffix.to_owned()))
    };
    let (vault, suffix) = vault_under(&suffix)
        .or_else(|| vault_under(&azure))
        .ok_or_else(|| {
            KvError::BadParameter(format!("host {host:?} is not a vault host (*{suffix})"))
        })?;
    let base = match port {
        Some(p) => format!("https://{vault}{suffix}:{p}"),
        None => format!("https://{vault}{suffix}"),
    };
    Ok((vault, base))
}

/// The challenge's `resource` for a vault at `base`: Azure's own for a vault
/// under Azure's suffix (as on Azure, so SDKs verify it against the vault's
/// host unchanged), else the configured one.
fn challenge_resource<'a>(kv: &'a KeyVault, base: &str) -> &'a str {
    let host = base.trim_start_matches("https://");
    let host = host.split(':').next().unwrap_or(host);
    if host.ends_with(&format!(".{AZURE_DNS_SUFFIX}")) {
        audiences::KEY_VAULT
    } else {
        &kv.inner.config.challenge_resource
    }
}

fn api_version(query: &str) -> Result<(), KvError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    match pairs.iter().find(|(k, _)| k == "api-version") {
        Some((_, v)) if !v.is_empty() => Ok(()),
        _ => Err(KvError::BadParameter(
            "The 'api-version' query parameter is missing or empty".into(),
        )),
    }
}

/// The `WWW-Authenticate` value naming the authority and `resource`.
fn challenge_value(c: &crate::Config, resource: &str) -> String {
    format!(
        "Bearer authorization=\"{}/{}\", resource=\"{}\"",
        c.authority.trim_end_matches('/'),
        c.tenant_id,
        resource
    )
}

/// The challenge of injected 401s (`misim fault`): the configured resource.
pub(crate) fn challenge_header(c: &crate::Config) -> String {
    challenge_value(c, &c.challenge_resource)
}

/// A 401 with the bearer challenge clients use to find the authority.
fn challenge(kv: &KeyVault, resource: &str, err: KvError) -> Response {
    let value = challenge_value(&kv.inner.config, resource);
    let mut resp = err.into_response();
    if let Ok(v) = HeaderValue::from_str(&value) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

async fn authenticate(
    kv: &KeyVault,
    req: &http::request::Parts,
    resource: &str,
) -> Result<AccessClaims, Response> {
    let Some(auth) = req.headers.get(header::AUTHORIZATION) else {
        return Err(challenge(
            kv,
            resource,
            KvError::Unauthorized("AKV10000: Request is missing a Bearer or PoP token.".into()),
        ));
    };
    let token = auth.to_str().ok().and_then(misim_token::bearer_token);
    let Some(token) = token else {
        return Err(challenge(
            kv,
            resource,
            KvError::Unauthorized("AKV10001: Authorization header is not a Bearer token.".into()),
        ));
    };
    let challenge_aud = audiences::normalize(&kv.inner.config.challenge_resource);
    let accept = |aud: &str| {
        let a = audiences::normalize(aud);
        a == challenge_aud || audiences::is_key_vault(&a)
    };
    match kv
        .inner
        .keys
        .verify(token, kv.inner.clock.as_ref(), accept)
        .await
    {
        Ok(c) => Ok(c),
        Err(KeysError::Unavailable(e)) => {
            Err(KvError::Unavailable(format!("cannot verify the token: {e}")).into_response())
        }
        Err(KeysError::Token(e)) => {
            let msg = match &e {
                TokenError::Claim { claim: "aud", .. } => format!(
                    "AKV10022: Invalid audience. Expected {} or {}. {e}",
                    audiences::KEY_VAULT,
                    kv.inner.config.challenge_resource
                ),
                // Key Vault's own words for an expired token (docs/azure-protocol.md,
                // "Key Vault: expired tokens"); misim's lifetime errors start "expired".
                TokenError::Lifetime(why) if why.starts_with("expired") => {
                    "[TokenExpired] Error validating token: 'S2S12086'.".to_owned()
                }
                TokenError::Lifetime(_) => format!("Token not yet valid. {e}"),
                TokenError::Claim {
                    claim: "iss" | "tid",
                    ..
                } => format!("AKV10032: Invalid issuer. {e}"),
                _ => format!("AKV10021: Invalid token. {e}"),
            };
            Err(challenge(kv, resource, KvError::Unauthorized(msg)))
        }
    }
}

/// Checks the data action with ARM; returns the key the vault's secrets are
/// stored under: the vault's immutable uid, so a vault re-created under the
/// same name starts empty (the name, for vaults ARM recorded without a uid).
async fn authorize(
    kv: &KeyVault,
    vault: &str,
    op: &Op,
    claims: &AccessClaims,
) -> Result<String, Response> {
    let action = op.action();
    let mut authz = kv.inner.authz.clone();
    let d = authz
        .check_vault_access(CheckVaultAccessRequest {
            vault_name: vault.to_owned(),
            principal_id: claims.oid.clone(),
            data_action: action.to_owned(),
        })
        .await
        .map_err(|s| {
            KvError::Unavailable(format!("cannot check access: {}", s.message())).into_response()
        })?
        .into_inner();
    if !d.vault_exists {
        // Deviation: real Azure cannot route a request to a vault that does not
        // exist (DNS fails). Here every vault shares one listener, so an unknown
        // vault gets a 404 VaultNotFound instead.
        return Err(KvError::VaultNotFound(vault.to_owned()).into_response());
    }
    if d.allowed {
        return Ok(if d.vault_uid.is_empty() {
            vault.to_owned()
        } else {
            d.vault_uid
        });
    }
    let resource = match op.name() {
        Some(n) => format!("{}/secrets/{}", d.vault_resource_id, n).to_ascii_lowercase(),
        None => d.vault_resource_id.to_ascii_lowercase(),
    };
    let mut refused = KvError::Forbidden(format!(
        "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: appid={};oid={};iss={}\r\nAction: '{action}'\r\nResource: '{resource}'\r\nAssignment: (not found)\r\nDecisionReason: 'DeniedWithNoValidRBAC' \r\nVault: {vault};location={}\r\n",
        claims.client_id(),
        claims.oid,
        claims.iss,
        d.location
    ))
    .into_response();
    // The decision log (misim log) records ARM's RBAC reasoning with the refusal.
    refused
        .extensions_mut()
        .insert(misim_chaos::Explanation(d.reason));
    Err(refused)
}

async fn handle(State(kv): State<KeyVault>, req: Request) -> Response {
    match handle_inner(&kv, req).await {
        Ok(r) => r,
        Err(r) => r,
    }
}

async fn handle_inner(kv: &KeyVault, req: Request) -> Result<Response, Response> {
    let (req, body) = req.into_parts();
    let (vault, base) = vault_of(kv, &req).map_err(IntoResponse::into_response)?;
    api_version(req.uri.query().unwrap_or("")).map_err(IntoResponse::into_response)?;
    let op = route(&req.method, req.uri.path()).map_err(IntoResponse::into_response)?;
    let claims = authenticate(kv, &req, challenge_resource(kv, &base)).await?;
    tracing::Span::current().record("principal", claims.oid.as_str());
    let storage_key = authorize(kv, &vault, &op, &claims).await?;
    let body = axum::body::to_bytes(body, MAX_BODY).await.map_err(|e| {
        KvError::BadParameter(format!("cannot read the request body: {e}")).into_response()
    })?;
    execute(kv, &storage_key, &base, op, &body)
        .await
        .map_err(IntoResponse::into_response)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SetBody {
    value: Option<String>,
    content_type: Option<String>,
    #[serde(default)]
    tags: Option<BTreeMap<String, String>>,
    #[serde(default)]
    attributes: Option<SetAttributes>,
}

#[derive(Deserialize)]
struct SetAttributes {
    enabled: Option<bool>,
}

fn attributes(s: &SecretVersion) -> Value {
    json!({
        "enabled": s.enabled,
        "created": s.created,
        "updated": s.updated,
        "recoveryLevel": "Recoverable+Purgeable",
        "recoverableDays": 90,
    })
}

fn bundle(base: &str, s: &SecretVersion, with_value: bool) -> Value {
    let mut b = json!({
        "id": format!("{base}/secrets/{}/{}", s.name, s.version),
        "attributes": attributes(s),
        "tags": s.tags,
    });
    if with_value {
        b["value"] = json!(s.value);
    }
    if let Some(ct) = &s.content_type {
        b["contentType"] = json!(ct);
    }
    b
}

fn ok_json(v: &Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        Body::from(v.to_string()),
    )
        .into_response()
}

async fn execute(
    kv: &KeyVault,
    // The vault's storage key (its uid), not its name.
    vault_key: &str,
    base: &str,
    op: Op,
    body: &[u8],
) -> Result<Response, KvError> {
    let secrets = &kv.inner.secrets;
    match op {
        Op::List => {
            let items: Vec<Value> = secrets
                .list(vault_key)?
                .iter()
                .map(|s| {
                    let mut b = bundle(base, s, false);
                    b["id"] = json!(format!("{base}/secrets/{}", s.name));
                    b
                })
                .collect();
            Ok(ok_json(&json!({"value": items, "nextLink": null})))
        }
        Op::Get { name, version } => {
            let s = secrets
                .get(vault_key, &name, version.as_deref())?
                .ok_or(KvError::SecretNotFound(name))?;
            Ok(ok_json(&bundle(base, &s, true)))
        }
        Op::Set { name } => {
            let b: SetBody = serde_json::from_slice(body).map_err(|e| {
                KvError::BadParameter(format!("The request body is not a valid secret: {e}"))
            })?;
            let value = b
                .value
                .ok_or_else(|| KvError::BadParameter("Property 'value' is required".into()))?;
            let now = kv.inner.clock.unix();
            // Keep the name as first created: Key Vault names are case-insensitive.
            let stored_name = secrets
                .get(vault_key, &name, None)?
                .map(|s| s.name)
                .unwrap_or(name);
            let s = SecretVersion {
                name: stored_name,
                version: kv.inner.ids.hex32(),
                value,
                content_type: b.content_type,
                tags: b.tags.unwrap_or_default(),
                enabled: b.attributes.and_then(|a| a.enabled).unwrap_or(true),
                created: now,
                updated: now,
            };
            secrets.set(vault_key, s.clone()).await?;
            Ok(ok_json(&bundle(base, &s, true)))
        }
        Op::Delete { name } => {
            let s = secrets
                .delete(vault_key, &name)
                .await?
                .ok_or(KvError::SecretNotFound(name))?;
            let now = kv.inner.clock.unix();
            let mut b = bundle(base, &s, false);
            b["recoveryId"] = json!(format!("{base}/deletedsecrets/{}", s.name));
            b["deletedDate"] = json!(now);
            b["scheduledPurgeDate"] = json!(now + 90 * 86400);
            Ok(ok_json(&b))
        }
    }
}
