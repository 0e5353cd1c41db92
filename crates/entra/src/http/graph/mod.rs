//! The part of Microsoft Graph v1.0 that the Azure CLI and SDKs use for
//! applications and service principals, served under `/v1.0`.
//!
//! Every request carries a bearer token that Entra issued itself for one of
//! the Graph audiences (`{public_url}/` or `https://graph.microsoft.com`).
//! Reads need the Graph permission `Application.Read.All` and writes
//! `Application.ReadWrite.All` ([`GraphPermission`], granted with
//! [`Entra::set_graph_permission`]); the bootstrap administrator has both, and
//! every other principal, managed identities included, starts with neither,
//! as on Azure. Managed-identity principals are read-only here: their Azure
//! resource owns them.

mod model;

use std::collections::HashMap;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{Map, Value, json};

use crate::domain::graph_permission::GraphPermission;
use crate::domain::odata::Filter;
use crate::domain::principal::{Principal, PrincipalKind};
use crate::{Entra, EntraError};

use model::{
    app_changes, application_json, context, federated_credential_input, federated_credential_json,
    opt_datetime, password_credential_json, service_principal_json,
};

use crate::domain::federation::Owner;

/// A Graph error: status, code and message.
#[derive(Debug)]
pub(crate) struct GraphError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl GraphError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Request_BadRequest", message)
    }

    fn not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            format!(
                "Resource '{id}' does not exist or one of its queried reference-property objects are not present."
            ),
        )
    }

    fn denied(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            message,
        )
    }

    fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            message,
        )
    }
}

impl From<EntraError> for GraphError {
    fn from(e: EntraError) -> Self {
        use misim_types::ErrorCode;
        match (&e, e.code()) {
            (EntraError::PrincipalNotFound(id) | EntraError::ApplicationNotFound(id), _) => {
                Self::not_found(id)
            }
            (_, ErrorCode::PermissionDenied) => Self::denied(e.to_string()),
            (_, ErrorCode::AlreadyExists | ErrorCode::FailedPrecondition) => Self::new(
                StatusCode::CONFLICT,
                "Request_MultipleObjectsWithSameKeyValue",
                e.to_string(),
            ),
            (_, ErrorCode::Internal | ErrorCode::Unavailable) => {
                tracing::error!(error = %e, "graph request failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Service_InternalServerError",
                    "Encountered an internal server error.",
                )
            }
            _ => Self::bad_request(e.to_string()),
        }
    }
}

type GraphResult = Result<Response, GraphError>;

const INSUFFICIENT: &str = "Insufficient privileges to complete the operation.";

/// The Graph routes, to be merged into Entra's router.
pub(crate) fn routes() -> Router<Entra> {
    Router::new()
        .route(
            "/v1.0/applications",
            get(list_applications).post(create_application),
        )
        .route(
            "/v1.0/applications/{id}",
            get(get_application)
                .patch(patch_application)
                .delete(delete_application),
        )
        .route("/v1.0/applications/{id}/addPassword", post(add_password))
        .route(
            "/v1.0/applications/{id}/federatedIdentityCredentials",
            get(list_federated).post(create_federated),
        )
        .route(
            "/v1.0/applications/{id}/federatedIdentityCredentials/{fic}",
            get(get_federated)
                .patch(patch_federated)
                .delete(delete_federated),
        )
        .route(
            "/beta/applications/{id}/federatedIdentityCredentials",
            get(list_federated).post(create_federated),
        )
        .route(
            "/beta/applications/{id}/federatedIdentityCredentials/{fic}",
            get(get_federated)
                .patch(patch_federated)
                .delete(delete_federated),
        )
        .route(
            "/v1.0/applications/{id}/removePassword",
            post(remove_password),
        )
        .route(
            "/v1.0/servicePrincipals",
            get(list_service_principals).post(create_service_principal),
        )
        .route(
            "/v1.0/servicePrincipals/{id}",
            get(get_service_principal).delete(delete_service_principal),
        )
        .route("/v1.0/directoryObjects/getByIds", post(get_by_ids))
        .route("/v1.0/directoryObjects/{id}", get(get_directory_object))
        .route("/v1.0/me", any(me))
        .route("/v1.0/me/{*rest}", any(me))
        .route("/v1.0/organization", get(organization))
        .route("/v1.0/{*rest}", any(unknown_segment))
}

/// The authenticated caller and its Graph permission.
struct Caller {
    principal: Principal,
    permission: Option<GraphPermission>,
}

impl Caller {
    fn refuse(&self, what: &str) -> GraphError {
        tracing::info!(caller = %self.principal.object_id, "graph {what} refused");
        GraphError::denied(INSUFFICIENT)
    }

    /// Application.Read.All (or more).
    fn require_read(&self) -> Result<(), GraphError> {
        match self.permission {
            Some(_) => Ok(()),
            None => Err(self.refuse("read")),
        }
    }

    /// Application.ReadWrite.All.
    fn require_write(&self) -> Result<(), GraphError> {
        match self.permission {
            Some(p) if p.can_write() => Ok(()),
            _ => Err(self.refuse("write")),
        }
    }
}

/// The caller of a request that needs at least read permission: every
/// route but `/me` and unknown segments, which Graph refuses for what they
/// are whatever the caller may do.
fn authenticate(e: &Entra, headers: &HeaderMap) -> Result<Caller, GraphError> {
    let caller = identify(e, headers)?;
    caller.require_read()?;
    Ok(caller)
}

/// The caller behind the bearer token, whatever it may do.
fn identify(e: &Entra, headers: &HeaderMap) -> Result<Caller, GraphError> {
    let token = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(misim_token::bearer_token)
        .ok_or_else(|| GraphError::unauthenticated("Access token is empty."))?;
    let claims = e.inner.issuer.verify_graph_token(token).map_err(|err| {
        tracing::info!(error = %err, "graph token refused");
        GraphError::unauthenticated(format!("Access token validation failure. {err}"))
    })?;
    let principal = e
        .inner
        .directory
        .get(&claims.oid)?
        .filter(|p| p.app_id.eq_ignore_ascii_case(claims.client_id()))
        .ok_or_else(|| {
            GraphError::unauthenticated(
                "Access token validation failure: the calling principal no longer exists.",
            )
        })?;
    let is_admin = e
        .inner
        .config
        .admin
        .as_ref()
        .is_some_and(|a| a.object_id.eq_ignore_ascii_case(&principal.object_id));
    let permission = if is_admin {
        Some(GraphPermission::ApplicationReadWriteAll)
    } else {
        e.inner.directory.graph_permission(&principal.object_id)?
    };
    Ok(Caller {
        principal,
        permission,
    })
}

fn request_ids(e: &Entra, headers: &HeaderMap) -> (String, String) {
    let request_id = e.inner.ids.guid();
    let client = headers
        .get("client-request-id")
        .or_else(|| headers.get("x-ms-client-request-id"))
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| request_id.clone(), str::to_owned);
    (request_id, client)
}

fn error_response(e: &Entra, headers: &HeaderMap, err: GraphError) -> Response {
    let (request_id, client_request_id) = request_ids(e, headers);
    let date = crate::domain::datetime::format_iso(e.inner.clock.unix());
    let body = json!({
        "error": {
            "code": err.code,
            "message": err.message,
            "innerError": {
                "date": date.trim_end_matches('Z'),
                "request-id": request_id,
                "client-request-id": client_request_id,
            },
        }
    });
    let mut resp = (err.status, Json(body)).into_response();
    if err.status == StatusCode::UNAUTHORIZED {
        let challenge = format!(
            "Bearer realm=\"\", authorization_uri=\"{}/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\"",
            e.inner.config.public_url
        );
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            resp.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
        }
    }
    resp
}

/// Authenticates a caller allowed to read, runs `f` and renders its error in Graph's shape.
fn run(e: &Entra, headers: &HeaderMap, f: impl FnOnce(Caller) -> GraphResult) -> Response {
    let result = authenticate(e, headers).and_then(f);
    finish(e, headers, result)
}

/// [`run`] for any authenticated caller, whatever its permission.
fn run_any(e: &Entra, headers: &HeaderMap, f: impl FnOnce(Caller) -> GraphResult) -> Response {
    let result = identify(e, headers).and_then(f);
    finish(e, headers, result)
}

fn finish(e: &Entra, headers: &HeaderMap, result: GraphResult) -> Response {
    let mut resp = result.unwrap_or_else(|err| error_response(e, headers, err));
    let (request_id, client_request_id) = request_ids(e, headers);
    for (name, value) in [
        ("request-id", request_id),
        ("client-request-id", client_request_id),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert(name, v);
        }
    }
    resp
}

fn json_body(body: &[u8]) -> Result<Map<String, Value>, GraphError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(GraphError::bad_request(
            "The request body must be a JSON object.",
        )),
        Err(err) => Err(GraphError::bad_request(format!(
            "Unable to read JSON request payload: {err}"
        ))),
    }
}

fn filter_of(q: &HashMap<String, String>) -> Result<Option<Filter>, GraphError> {
    match q.get("$filter").map(|f| f.trim()).filter(|f| !f.is_empty()) {
        None => Ok(None),
        Some(text) => Filter::parse(text)
            .map(Some)
            .map_err(|m| GraphError::bad_request(format!("Invalid filter clause: {m}"))),
    }
}

fn list_response(e: &Entra, what: &str, items: Vec<Value>, filter: Option<&Filter>) -> Response {
    let value: Vec<Value> = items
        .into_iter()
        .filter(|v| filter.is_none_or(|f| f.matches(v)))
        .collect();
    Json(json!({"@odata.context": context(&e.inner.config, what), "value": value})).into_response()
}

fn entity(e: &Entra, what: &str, mut v: Value) -> Value {
    if let Some(m) = v.as_object_mut() {
        let mut out = Map::new();
        out.insert(
            "@odata.context".into(),
            Value::String(context(&e.inner.config, what)),
        );
        out.append(m);
        return Value::Object(out);
    }
    v
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

// ---- applications ----

fn load_app(e: &Entra, id: &str) -> Result<crate::domain::application::Application, GraphError> {
    e.inner
        .directory
        .get_application(id)?
        .ok_or_else(|| GraphError::not_found(id))
}

async fn list_applications(
    State(e): State<Entra>,
    Query(q): Query<HashMap<String, String>>,
    h: HeaderMap,
) -> Response {
    run(&e, &h, |_| {
        let filter = filter_of(&q)?;
        let apps = e.inner.directory.list_applications()?;
        let items = apps.iter().map(application_json).collect();
        Ok(list_response(&e, "applications", items, filter.as_ref()))
    })
}

async fn create_application(State(e): State<Entra>, h: HeaderMap, body: Bytes) -> Response {
    let result = async {
        let caller = authenticate(&e, &h)?;
        caller.require_write()?;
        let changes = app_changes(&json_body(&body)?)?;
        let app = e.inner.directory.create_application(changes).await?;
        tracing::info!(app_id = %app.app_id, object_id = %app.object_id, "application created");
        let v = entity(&e, "applications/$entity", application_json(&app));
        Ok((StatusCode::CREATED, Json(v)).into_response())
    }
    .await;
    finish(&e, &h, result)
}

async fn get_application(State(e): State<Entra>, Path(id): Path<String>, h: HeaderMap) -> Response {
    run(&e, &h, |_| {
        let app = load_app(&e, &id)?;
        Ok(Json(entity(&e, "applications/$entity", application_json(&app))).into_response())
    })
}

async fn patch_application(
    State(e): State<Entra>,
    Path(id): Path<String>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let caller = authenticate(&e, &h)?;
        load_app(&e, &id)?;
        caller.require_write()?;
        let changes = app_changes(&json_body(&body)?)?;
        e.inner.directory.update_application(&id, changes).await?;
        Ok(no_content())
    }
    .await;
    finish(&e, &h, result)
}

async fn delete_application(
    State(e): State<Entra>,
    Path(id): Path<String>,
    h: HeaderMap,
) -> Response {
    let result = async {
        let caller = authenticate(&e, &h)?;
        load_app(&e, &id)?;
        caller.require_write()?;
        if !e.inner.directory.delete_application(&id).await? {
            return Err(GraphError::not_found(&id));
        }
        tracing::info!(object_id = %id, "application deleted");
        Ok(no_content())
    }
    .await;
    finish(&e, &h, result)
}

async fn add_password(
    State(e): State<Entra>,
    Path(id): Path<String>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let caller = authenticate(&e, &h)?;
        load_app(&e, &id)?;
        caller.require_write()?;
        let body = if body.is_empty() {
            Map::new()
        } else {
            json_body(&body)?
        };
        let cred = match body.get("passwordCredential") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => {
                return Err(GraphError::bad_request(
                    "Property 'passwordCredential' must be an object.",
                ));
            }
        };
        let display_name = cred
            .get("displayName")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let start = opt_datetime(&cred, "startDateTime")?;
        let end = opt_datetime(&cred, "endDateTime")?;
        let new = e
            .inner
            .directory
            .add_password(&id, display_name, start, end)
            .await?;
        let v = entity(
            &e,
            "microsoft.graph.passwordCredential",
            password_credential_json(&new.credential, Some(&new.secret_text)),
        );
        Ok(Json(v).into_response())
    }
    .await;
    finish(&e, &h, result)
}

async fn remove_password(
    State(e): State<Entra>,
    Path(id): Path<String>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let caller = authenticate(&e, &h)?;
        load_app(&e, &id)?;
        caller.require_write()?;
        let body = json_body(&body)?;
        let key_id = body
            .get("keyId")
            .and_then(Value::as_str)
            .ok_or_else(|| GraphError::bad_request("Property 'keyId' is required."))?;
        e.inner.directory.remove_password(&id, key_id).await?;
        Ok(no_content())
    }
    .await;
    finish(&e, &h, result)
}

// ---- federated identity credentials ----
//
// `applications/{id}/federatedIdentityCredentials[/{id or name}]`, under
// v1.0 and beta (the Azure CLI used beta until 2.40). Reads need
// Application.Read.All, writes Application.ReadWrite.All, as for the
// application itself.

/// The Graph version the request was made under (`v1.0` or `beta`).
fn version_of(uri: &http::Uri) -> &'static str {
    if uri.path().starts_with("/beta/") {
        "beta"
    } else {
        "v1.0"
    }
}

fn fic_context(e: &Entra, version: &str, app: &str, entity: bool) -> String {
    format!(
        "{}/{version}/$metadata#applications('{app}')/federatedIdentityCredentials{}",
        e.inner.config.public_url,
        if entity { "/$entity" } else { "" }
    )
}

fn with_context(context: String, v: Value) -> Value {
    let mut out = Map::new();
    out.insert("@odata.context".into(), Value::String(context));
    if let Value::Object(mut m) = v {
        out.append(&mut m);
    }
    Value::Object(out)
}

fn fic_not_found(id: &str) -> GraphError {
    GraphError::new(
        StatusCode::NOT_FOUND,
        "Request_ResourceNotFound",
        format!("FederatedIdentityCredential with identifier '{id}' not found."),
    )
}

async fn list_federated(
    State(e): State<Entra>,
    uri: http::Uri,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    h: HeaderMap,
) -> Response {
    run(&e, &h, |_| {
        let version = version_of(&uri);
        let app = load_app(&e, &id)?;
        let filter = filter_of(&q)?;
        let value: Vec<Value> = e
            .inner
            .directory
            .list_federated(Owner::Application(&app.object_id))?
            .iter()
            .map(federated_credential_json)
            .filter(|v| filter.as_ref().is_none_or(|f| f.matches(v)))
            .collect();
        Ok(Json(json!({
            "@odata.context": fic_context(&e, version, &app.object_id, false),
            "value": value,
        }))
        .into_response())
    })
}

async fn create_federated(
    State(e): State<Entra>,
    uri: http::Uri,
    Path(id): Path<String>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let caller = authenticate(&e, &h)?;
        let version = version_of(&uri);
        let app = load_app(&e, &id)?;
        caller.require_write()?;
        let input = federated_credential_input(&json_body(&body)?)?;
        let c = e
            .inner
            .directory
            .add_federated(Owner::Application(&app.object_id), input)
            .await?;
        tracing::info!(app_id = %app.app_id, name = %c.name, issuer = %c.issuer, subject = %c.subject,
            "federated identity credential created");
        let v = with_context(
            fic_context(&e, version, &app.object_id, true),
            federated_credential_json(&c),
        );
        Ok((StatusCode::CREATED, Json(v)).into_response())
    }
    .await;
    finish(&e, &h, result)
}

async fn get_federated(
    State(e): State<Entra>,
    uri: http::Uri,
    Path((id, fic)): Path<(String, String)>,
    h: HeaderMap,
) -> Response {
    run(&e, &h, |_| {
        let version = version_of(&uri);
        let app = load_app(&e, &id)?;
        let c = e
            .inner
            .directory
            .list_federated(Owner::Application(&app.object_id))?
            .into_iter()
            .find(|c| c.id.eq_ignore_ascii_case(&fic) || c.name.eq_ignore_ascii_case(&fic))
            .ok_or_else(|| fic_not_found(&fic))?;
        Ok(Json(with_context(
            fic_context(&e, version, &app.object_id, true),
            federated_credential_json(&c),
        ))
        .into_response())
    })
}

async fn patch_federated(
    State(e): State<Entra>,
    Path((id, fic)): Path<(String, String)>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let caller = authenticate(&e, &h)?;
        let app = load_app(&e, &id)?;
        caller.require_write()?;
        let patch = federated_credential_input(&json_body(&body)?)?;
        e.inner
            .directory
            .update_federated(Owner::Application(&app.object_id), &fic, patch)
            .await?
            .ok_or_else(|| fic_not_found(&fic))?;
        Ok(no_content())
    }
    .await;
    finish(&e, &h, result)
}

async fn delete_federated(
    State(e): State<Entra>,
    Path((id, fic)): Path<(String, String)>,
    h: HeaderMap,
) -> Response {
    let result = async {
        let caller = authenticate(&e, &h)?;
        let app = load_app(&e, &id)?;
        caller.require_write()?;
        if !e
            .inner
            .directory
            .delete_federated(Owner::Application(&app.object_id), &fic)
            .await?
        {
            return Err(fic_not_found(&fic));
        }
        tracing::info!(app_id = %app.app_id, credential = %fic, "federated identity credential deleted");
        Ok(no_content())
    }
    .await;
    finish(&e, &h, result)
}

// ---- service principals ----

fn sp_json(e: &Entra, p: &Principal) -> Result<Value, GraphError> {
    let app = e.inner.directory.application_of(p)?;
    Ok(service_principal_json(&e.inner.config, p, app.as_ref()))
}

fn load_sp(e: &Entra, id: &str) -> Result<Principal, GraphError> {
    e.inner
        .directory
        .get(id)?
        .ok_or_else(|| GraphError::not_found(id))
}

async fn list_service_principals(
    State(e): State<Entra>,
    Query(q): Query<HashMap<String, String>>,
    h: HeaderMap,
) -> Response {
    run(&e, &h, |_| {
        let filter = filter_of(&q)?;
        let mut all = e.inner.directory.list()?;
        all.sort_by(|a, b| (a.created_unix, &a.object_id).cmp(&(b.created_unix, &b.object_id)));
        let items = all
            .iter()
            .map(|p| sp_json(&e, p))
            .collect::<Result<_, _>>()?;
        Ok(list_response(
            &e,
            "servicePrincipals",
            items,
            filter.as_ref(),
        ))
    })
}

async fn create_service_principal(State(e): State<Entra>, h: HeaderMap, body: Bytes) -> Response {
    let result = async {
        let caller = authenticate(&e, &h)?;
        caller.require_write()?;
        let body = json_body(&body)?;
        let app_id = body
            .get("appId")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| GraphError::bad_request("Property 'appId' is required."))?;
        let p = e.inner.directory.create_app_principal(app_id).await?;
        tracing::info!(app_id = %p.app_id, object_id = %p.object_id, "service principal created");
        let v = entity(&e, "servicePrincipals/$entity", sp_json(&e, &p)?);
        Ok((StatusCode::CREATED, Json(v)).into_response())
    }
    .await;
    finish(&e, &h, result)
}

async fn get_service_principal(
    State(e): State<Entra>,
    Path(id): Path<String>,
    h: HeaderMap,
) -> Response {
    run(&e, &h, |_| {
        let p = load_sp(&e, &id)?;
        Ok(Json(entity(&e, "servicePrincipals/$entity", sp_json(&e, &p)?)).into_response())
    })
}

async fn delete_service_principal(
    State(e): State<Entra>,
    Path(id): Path<String>,
    h: HeaderMap,
) -> Response {
    let result = async {
        let caller = authenticate(&e, &h)?;
        let p = load_sp(&e, &id)?;
        if p.kind == PrincipalKind::ManagedIdentity {
            return Err(GraphError::denied(
                "Managed identities are managed by their Azure resource: disable or delete the identity there.",
            ));
        }
        caller.require_write()?;
        let is_admin = e
            .inner
            .config
            .admin
            .as_ref()
            .is_some_and(|a| a.object_id.eq_ignore_ascii_case(&p.object_id));
        if is_admin {
            return Err(GraphError::denied(
                "The bootstrap administrator is managed by the sandbox and cannot be deleted.",
            ));
        }
        if !e.inner.directory.delete(&p.object_id).await? {
            return Err(GraphError::not_found(&id));
        }
        tracing::info!(object_id = %p.object_id, "service principal deleted");
        Ok(no_content())
    }
    .await;
    finish(&e, &h, result)
}

// ---- directory objects ----

fn typed(mut v: Value, odata_type: &str) -> Value {
    if let Some(m) = v.as_object_mut() {
        let mut out = Map::new();
        out.insert("@odata.type".into(), Value::String(odata_type.into()));
        out.append(m);
        return Value::Object(out);
    }
    v
}

/// The object with `id` as a typed directory object, if any.
fn directory_object(e: &Entra, id: &str) -> Result<Option<(&'static str, Value)>, GraphError> {
    if let Some(p) = e.inner.directory.get(id)? {
        return Ok(Some((
            "serviceprincipal",
            typed(sp_json(e, &p)?, "#microsoft.graph.servicePrincipal"),
        )));
    }
    if let Some(a) = e.inner.directory.get_application(id)? {
        return Ok(Some((
            "application",
            typed(application_json(&a), "#microsoft.graph.application"),
        )));
    }
    Ok(None)
}

async fn get_by_ids(State(e): State<Entra>, h: HeaderMap, body: Bytes) -> Response {
    run(&e, &h, |_| {
        let body = json_body(&body)?;
        let strings = |name: &str| -> Result<Vec<String>, GraphError> {
            match body.get(name) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|v| v.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        GraphError::bad_request(format!(
                            "Property '{name}' must be an array of strings."
                        ))
                    }),
                Some(_) => Err(GraphError::bad_request(format!(
                    "Property '{name}' must be an array of strings."
                ))),
            }
        };
        let ids = strings("ids")?;
        if ids.is_empty() {
            return Err(GraphError::bad_request("Property 'ids' is required."));
        }
        if ids.len() > 1000 {
            return Err(GraphError::bad_request(
                "At most 1000 ids may be requested.",
            ));
        }
        let types: Vec<String> = strings("types")?
            .iter()
            .map(|t| {
                let t = t.to_ascii_lowercase();
                t.trim_start_matches('#')
                    .trim_start_matches("microsoft.graph.")
                    .to_owned()
            })
            .collect();
        let mut value = Vec::new();
        for id in &ids {
            if let Some((ty, obj)) = directory_object(&e, id)?
                && (types.is_empty() || types.iter().any(|t| t == ty || t == "directoryobject"))
            {
                value.push(obj);
            }
        }
        Ok(Json(
            json!({"@odata.context": context(&e.inner.config, "directoryObjects"), "value": value}),
        )
        .into_response())
    })
}

async fn get_directory_object(
    State(e): State<Entra>,
    Path(id): Path<String>,
    h: HeaderMap,
) -> Response {
    run(&e, &h, |_| match directory_object(&e, &id)? {
        Some((_, obj)) => Ok(Json(entity(&e, "directoryObjects/$entity", obj)).into_response()),
        None => Err(GraphError::not_found(&id)),
    })
}

// ---- the rest ----

async fn me(State(e): State<Entra>, h: HeaderMap) -> Response {
    run_any(&e, &h, |_| {
        Err(GraphError::bad_request(
            "/me request is only valid with delegated authentication flow.",
        ))
    })
}

async fn organization(State(e): State<Entra>, h: HeaderMap) -> Response {
    run(&e, &h, |_| {
        let c = &e.inner.config;
        let org = json!({
            "id": c.tenant_id,
            "deletedDateTime": null,
            "displayName": "misim",
            "tenantType": "AAD",
            "countryLetterCode": "US",
            "verifiedDomains": [{
                "capabilities": "None",
                "isDefault": true,
                "isInitial": true,
                "name": "misim.onmicrosoft.com",
                "type": "Managed",
            }],
        });
        Ok(
            Json(json!({"@odata.context": context(c, "organization"), "value": [org]}))
                .into_response(),
        )
    })
}

async fn unknown_segment(
    State(e): State<Entra>,
    Path(rest): Path<String>,
    h: HeaderMap,
) -> Response {
    run_any(&e, &h, |_| {
        let segment = rest.split('/').next().unwrap_or_default();
        Err(GraphError::bad_request(format!(
            "Resource not found for the segment '{segment}'."
        )))
    })
}

impl Entra {
    /// Grants the principal `object_id` a Microsoft Graph application
    /// permission, or (`None`) revokes the one it has. The bootstrap
    /// administrator always has `Application.ReadWrite.All`. Persisted.
    pub async fn set_graph_permission(
        &self,
        object_id: &str,
        permission: Option<GraphPermission>,
    ) -> Result<(), EntraError> {
        self.inner
            .directory
            .set_graph_permission(object_id, permission)
            .await
    }

    /// Allows (`true`: `Application.ReadWrite.All`) or stops allowing
    /// (`false`: no permission at all) the principal `object_id` to write
    /// applications and service principals through Graph.
    pub async fn set_graph_writer(&self, object_id: &str, allowed: bool) -> Result<(), EntraError> {
        let permission = allowed.then_some(GraphPermission::ApplicationReadWriteAll);
        self.set_graph_permission(object_id, permission).await
    }
}
