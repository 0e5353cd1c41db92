//! OIDC discovery (v1 and v2), JWKS and MSAL instance discovery (docs/azure-protocol.md, Entra:
//! OIDC discovery and JWKS).
//!
//! Access tokens carry the v1 issuer, so the v1 document (issuer
//! `https://sts.windows.net/{tid}/`, keys without an `issuer`) is the one a
//! generic OIDC client validates them with; the v2 document and keys carry
//! the v2 issuer consistently.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use misim_token::jwks::{Jwk, Jwks};
use serde_json::{Value, json};

use super::error::oauth_error;
use crate::Entra;

const CACHE: (http::HeaderName, &str) = (http::header::CACHE_CONTROL, "max-age=86400, private");

fn cached(v: Value) -> Response {
    ([CACHE], Json(v)).into_response()
}

fn jwks(entra: &Entra, issuer: Option<String>) -> Response {
    // Every published key: the next one (before it signs), the current one and
    // retired ones whose tokens may still be live.
    let doc = Jwks {
        keys: entra
            .inner
            .issuer
            .keys
            .published()
            .iter()
            .map(|k| {
                Jwk::rsa(
                    k.kid(),
                    &k.modulus,
                    &k.exponent,
                    &k.certificate_der,
                    issuer.clone(),
                )
            })
            .collect(),
    };
    ([CACHE], Json(doc)).into_response()
}

fn claims_supported() -> Value {
    json!([
        "sub",
        "iss",
        "cloud_instance_name",
        "cloud_instance_host_name",
        "cloud_graph_host_name",
        "msgraph_host",
        "aud",
        "exp",
        "iat",
        "auth_time",
        "acr",
        "nonce",
        "preferred_username",
        "name",
        "tid",
        "ver",
        "at_hash",
        "c_hash",
        "email"
    ])
}

fn host_of(url: &str) -> &str {
    url.split_once("://")
        .map_or(url, |(_, rest)| rest.split('/').next().unwrap_or(rest))
}

/// The multi-tenant aliases Entra serves discovery documents for. MSAL (and
/// so `az logout`) loads `{authority}/organizations/v2.0/.well-known/...`.
const TENANT_ALIASES: &[&str] = &["common", "organizations", "consumers"];

/// The tenant segment to build a discovery document for: this tenant's id, or
/// a multi-tenant alias (whose issuer then holds the literal `{tenantid}`
/// placeholder, as Entra's does).
fn discovery_tenant<'a>(entra: &'a Entra, tenant: &'a str) -> Result<&'a str, crate::EntraError> {
    match TENANT_ALIASES
        .iter()
        .find(|a| a.eq_ignore_ascii_case(tenant))
    {
        Some(alias) => Ok(alias),
        None => entra
            .check_tenant(tenant)
            .map(|()| entra.inner.config.tenant_id.as_str()),
    }
}

fn openid_document(entra: &Entra, v2: bool, tenant: &str) -> Value {
    let c = &entra.inner.config;
    let base = format!("{}/{}", c.public_url, tenant);
    let alias = !tenant.eq_ignore_ascii_case(&c.tenant_id);
    let (issuer, oauth, jwks_uri) = if v2 {
        (
            if alias {
                format!("{}/{{tenantid}}/v2.0", c.public_url)
            } else {
                c.issuer_v2()
            },
            format!("{base}/oauth2/v2.0"),
            format!("{base}/discovery/v2.0/keys"),
        )
    } else {
        (
            if alias {
                "https://sts.windows.net/{tenantid}/".to_owned()
            } else {
                c.issuer_v1()
            },
            format!("{base}/oauth2"),
            format!("{base}/discovery/keys"),
        )
    };
    let mut doc = json!({
        "token_endpoint": format!("{oauth}/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": jwks_uri,
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": issuer,
        "request_uri_parameter_supported": false,
        "userinfo_endpoint": format!("{}/oidc/userinfo", c.public_url),
        "authorization_endpoint": format!("{oauth}/authorize"),
        "device_authorization_endpoint": format!("{oauth}/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{oauth}/logout"),
        "claims_supported": claims_supported(),
        "kerberos_endpoint": format!("{base}/kerberos"),
        "tenant_region_scope": "WW",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    });
    if !v2 {
        doc["check_session_iframe"] = json!(format!("{oauth}/checksession"));
    }
    doc
}

pub(crate) async fn openid_v2(
    State(e): State<Entra>,
    Path(tenant): Path<String>,
    h: HeaderMap,
) -> Response {
    match discovery_tenant(&e, &tenant) {
        Ok(t) => cached(openid_document(&e, true, t)),
        Err(err) => oauth_error(&e, &h, &err),
    }
}

pub(crate) async fn openid_v1(
    State(e): State<Entra>,
    Path(tenant): Path<String>,
    h: HeaderMap,
) -> Response {
    match discovery_tenant(&e, &tenant) {
        Ok(t) => cached(openid_document(&e, false, t)),
        Err(err) => oauth_error(&e, &h, &err),
    }
}

pub(crate) async fn keys_v2(
    State(e): State<Entra>,
    Path(tenant): Path<String>,
    h: HeaderMap,
) -> Response {
    match discovery_tenant(&e, &tenant) {
        Ok(_) => jwks(&e, Some(e.inner.config.issuer_v2())),
        Err(err) => oauth_error(&e, &h, &err),
    }
}

pub(crate) async fn keys_v1(
    State(e): State<Entra>,
    Path(tenant): Path<String>,
    h: HeaderMap,
) -> Response {
    match discovery_tenant(&e, &tenant) {
        Ok(_) => jwks(&e, None),
        Err(err) => oauth_error(&e, &h, &err),
    }
}

pub(crate) async fn common_keys_v1(State(e): State<Entra>) -> Response {
    jwks(&e, None)
}

pub(crate) async fn common_keys_v2(State(e): State<Entra>) -> Response {
    // Like Entra's multi-tenant keys: the issuer names the tenant placeholder.
    jwks(
        &e,
        Some(format!("{}/{{tenantid}}/v2.0", e.inner.config.public_url)),
    )
}

/// `GET /common/discovery/instance?authorization_endpoint=..&api-version=1.1`.
pub(crate) async fn instance(
    State(e): State<Entra>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let c = &e.inner.config;
    let ours = host_of(&c.public_url);
    let Some(endpoint) = q.get("authorization_endpoint") else {
        let body = json!({"error": "invalid_request",
            "error_description": "AADSTS50049: The request must contain an authorization_endpoint."});
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    };
    if !host_of(endpoint).eq_ignore_ascii_case(ours) {
        let body = json!({"error": "invalid_instance",
            "error_description": format!("AADSTS50049: Unknown or invalid instance {endpoint}.")});
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    }
    cached(json!({
        "tenant_discovery_endpoint": format!("{}/{}/v2.0/.well-known/openid-configuration", c.public_url, c.tenant_id),
        "api-version": "1.1",
        "metadata": [{
            "preferred_network": ours,
            "preferred_cache": ours,
            "aliases": [ours],
        }],
    }))
}
