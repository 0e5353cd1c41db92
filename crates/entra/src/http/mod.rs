//! Entra's HTTP surface: the OAuth2 token endpoints (v1 and v2), OIDC
//! discovery, JWKS, MSAL instance discovery and the applications and service
//! principals of Microsoft Graph (`/v1.0`).

mod discovery;
mod error;
mod graph;
mod token;

use axum::Router;
use axum::routing::{get, post};

use crate::{Entra, EntraError};

/// Builds the router; `state` is the service handle.
pub(crate) fn router(state: Entra) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/token", post(token::token_v1))
        .route("/{tenant}/oauth2/v2.0/token", post(token::token_v2))
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(discovery::openid_v2),
        )
        .route(
            "/{tenant}/.well-known/openid-configuration",
            get(discovery::openid_v1),
        )
        .route("/{tenant}/discovery/v2.0/keys", get(discovery::keys_v2))
        .route("/{tenant}/discovery/keys", get(discovery::keys_v1))
        .route("/common/discovery/keys", get(discovery::common_keys_v1))
        .route(
            "/common/discovery/v2.0/keys",
            get(discovery::common_keys_v2),
        )
        .route("/common/discovery/instance", get(discovery::instance))
        .merge(graph::routes())
        .layer(axum::middleware::from_fn(
            misim_runtime::serve::run_to_completion,
        ))
        .layer(misim_runtime::telemetry::http_trace_layer("entra"))
        .with_state(state)
}

impl Entra {
    /// Fails with `TenantNotFound` unless `tenant` is this tenant's id.
    pub(crate) fn check_tenant(&self, tenant: &str) -> Result<(), EntraError> {
        if tenant.eq_ignore_ascii_case(&self.inner.config.tenant_id) {
            Ok(())
        } else {
            Err(EntraError::TenantNotFound {
                tenant: tenant.to_owned(),
            })
        }
    }
}
