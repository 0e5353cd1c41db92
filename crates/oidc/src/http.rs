//! The issuers over HTTP: each one's OIDC discovery document and JWKS, in
//! the shapes AKS and GitHub serve them.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::StatusCode;
use misim_token::jwks::Jwks;
use serde_json::json;

use crate::{IssuerKind, IssuerRef, Oidc};

pub(crate) fn router(state: Oidc) -> Router {
    Router::new()
        .route(
            "/github/.well-known/openid-configuration",
            get(github_discovery),
        )
        .route("/github/.well-known/jwks", get(github_jwks))
        .route(
            "/kubernetes/{cluster}/.well-known/openid-configuration",
            get(cluster_discovery),
        )
        .route("/kubernetes/{cluster}/openid/v1/jwks", get(cluster_jwks))
        .layer(misim_runtime::telemetry::http_trace_layer("oidc"))
        .with_state(state)
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": "not_found", "error_description": "no such issuer"})),
    )
        .into_response()
}

async fn discovery(o: &Oidc, r: IssuerRef) -> Response {
    if o.inner.issuers.get(&r).await.is_none() {
        return not_found();
    }
    let base = &o.inner.config.public_base;
    let (issuer, jwks_uri) = (r.url(base), r.jwks_uri(base));
    let doc = match r.kind {
        // What a Kubernetes API server (and AKS's issuer) publishes.
        IssuerKind::Kubernetes => json!({
            "issuer": issuer,
            "jwks_uri": jwks_uri,
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }),
        IssuerKind::GitHub => json!({
            "issuer": issuer,
            "jwks_uri": jwks_uri,
            "subject_types_supported": ["public", "pairwise"],
            "response_types_supported": ["id_token"],
            "claims_supported": ["sub", "aud", "exp", "iat", "iss", "jti", "nbf", "ref", "sha",
                "repository", "repository_id", "repository_owner", "repository_owner_id", "run_id",
                "run_number", "run_attempt", "actor", "actor_id", "workflow", "workflow_ref",
                "workflow_sha", "head_ref", "base_ref", "event_name", "ref_type", "ref_protected",
                "environment", "job_workflow_ref", "job_workflow_sha", "repository_visibility",
                "runner_environment"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid"],
        }),
    };
    Json(doc).into_response()
}

async fn jwks(o: &Oidc, r: IssuerRef) -> Response {
    match o.inner.issuers.get(&r).await {
        Some(i) => Json(Jwks {
            keys: vec![i.jwk.clone()],
        })
        .into_response(),
        None => not_found(),
    }
}

async fn github_discovery(State(o): State<Oidc>) -> Response {
    discovery(&o, IssuerRef::github()).await
}

async fn github_jwks(State(o): State<Oidc>) -> Response {
    jwks(&o, IssuerRef::github()).await
}

async fn cluster_discovery(State(o): State<Oidc>, Path(cluster): Path<String>) -> Response {
    match IssuerRef::kubernetes(&cluster) {
        Ok(r) => discovery(&o, r).await,
        Err(_) => not_found(),
    }
}

async fn cluster_jwks(State(o): State<Oidc>, Path(cluster): Path<String>) -> Response {
    match IssuerRef::kubernetes(&cluster) {
        Ok(r) => jwks(&o, r).await,
        Err(_) => not_found(),
    }
}
