//! The HTTP layer every service's router is wrapped in: it finds who is
//! asking, applies IMDS's limits and the fault rules before the service
//! sees the request, and records every refusal the service answers.

use std::sync::{Arc, OnceLock};

use axum::body::{Body, Bytes, HttpBody as _};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use http::header;

use crate::log::{Decision, Kind};
use crate::rules::Facts;
use crate::shapes::{self, Cx};
use crate::{Chaos, Explanation, Service, VmKey, throttle};

/// Bodies read to find a client id (token requests) or a refusal's reason
/// (error bodies) are at most this long; longer ones are passed untouched.
const MAX_PEEK: u64 = 64 * 1024;

/// Who is asking, as far as the request tells (never verified: it only
/// matches rules and labels log entries; the service authenticates).
#[derive(Debug, Default)]
struct Who {
    /// Object id from a bearer token.
    object_id: Option<String>,
    /// Client (application) id: a token's `appid`/`azp`, a token request's
    /// `client_id`, or IMDS's `client_id` selector.
    client_id: Option<String>,
    /// Further ids the request names (IMDS's other selectors).
    others: Vec<String>,
}

impl Who {
    fn ids(&self) -> Vec<String> {
        self.object_id
            .iter()
            .chain(&self.client_id)
            .chain(&self.others)
            .cloned()
            .collect()
    }
}

fn from_query(q: &str, who: &mut Who) {
    let Ok(pairs) = serde_urlencoded::from_str::<Vec<(String, String)>>(q) else {
        return;
    };
    for (k, v) in pairs {
        match k.as_str() {
            "client_id" | "clientid" => who.client_id = Some(v),
            "object_id" | "principal_id" | "msi_res_id" | "mi_res_id" => who.others.push(v),
            _ => {}
        }
    }
}

/// A bearer token's claims (from the `Authorization` header's value), read
/// without verifying the signature: only to say who the token claims to be.
fn from_bearer(authorization: Option<&http::HeaderValue>, who: &mut Who) {
    let Some(token) = authorization.and_then(|v| v.to_str().ok()).and_then(|v| {
        v.strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
    }) else {
        return;
    };
    let Some(payload) = token.split('.').nth(1) else {
        return;
    };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload) else {
        return;
    };
    let Ok(claims) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return;
    };
    let s = |k: &str| claims.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    who.object_id = s("oid");
    who.client_id = s("appid").or_else(|| s("azp"));
}

fn is_small_form(req: &Request) -> bool {
    let form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let length = req.body().size_hint().exact().or(declared);
    form && length.is_some_and(|n| n <= MAX_PEEK)
}

/// Finds who asks; a small form body (a token request) is read and put back.
async fn identify(req: Request) -> (Request, Who) {
    let mut who = Who::default();
    from_query(req.uri().query().unwrap_or(""), &mut who);
    from_bearer(req.headers().get(header::AUTHORIZATION), &mut who);
    if !is_small_form(&req) {
        return (req, who);
    }
    let (parts, body) = req.into_parts();
    match axum::body::to_bytes(body, usize::try_from(MAX_PEEK).unwrap_or(usize::MAX)).await {
        Ok(bytes) => {
            // Borrowed pairs: only the client id is copied, not the rest of
            // the form (a client assertion is a kilobyte; decoding the whole
            // form into owned pairs was a quarter of Entra's cost per token
            // beside signing).
            if let Some((_, id)) = form_urlencoded::parse(&bytes).find(|(k, _)| k == "client_id") {
                who.client_id = Some(id.into_owned());
            }
            (Request::from_parts(parts, Body::from(bytes)), who)
        }
        // The body broke or lied about its length: the service would fail
        // reading it too; let it answer an empty body in its own way.
        Err(_) => (Request::from_parts(parts, Body::empty()), who),
    }
}

/// What one request is, for rules and the log.
///
/// Built for every request, but read only when a rule fires or the answer is
/// a refusal: so it keeps the request's URI and `Authorization` value (both
/// reference-counted, cloned without copying) and works out [`Who`] from them
/// on first use, rather than parsing the query on the hot path.
struct Seen {
    service: &'static str,
    method: http::Method,
    uri: http::Uri,
    vm: Option<Arc<str>>,
    authorization: Option<http::HeaderValue>,
    /// Set up front when the body had to be read (Entra, identity rules).
    who: OnceLock<Who>,
}

impl Seen {
    fn path(&self) -> &str {
        self.uri.path()
    }

    fn who(&self) -> &Who {
        self.who.get_or_init(|| {
            let mut who = Who::default();
            from_query(self.uri.query().unwrap_or(""), &mut who);
            from_bearer(self.authorization.as_ref(), &mut who);
            who
        })
    }

    fn principal(&self) -> String {
        if let Some(o) = &self.who().object_id {
            return o.clone();
        }
        if let Some(vm) = &self.vm {
            return vm.rsplit('/').next().unwrap_or(vm).to_owned();
        }
        self.who().client_id.clone().unwrap_or_default()
    }

    fn decision(&self, chaos: &Chaos, kind: Kind, status: u16) -> Decision {
        Decision {
            seq: 0,
            time_unix_ms: chaos.now_ms(),
            service: self.service.to_owned(),
            kind,
            method: self.method.as_str().to_owned(),
            path: self.path().to_owned(),
            status,
            principal: self.principal(),
            client_id: self.who().client_id.clone().unwrap_or_default(),
            code: String::new(),
            reason: String::new(),
            fault_id: String::new(),
        }
    }
}

fn is_identity_endpoint(path: &str) -> bool {
    path.starts_with("/metadata/identity/") || path == "/msi/token"
}

fn cx<'a>(
    chaos: &Chaos,
    seen: &'a Seen,
    principal: Option<&'a str>,
    challenge: Option<&'a str>,
) -> Cx<'a> {
    let secs = chaos.now_ms().div_euclid(1000);
    let dt = misim_types::time::UtcDateTime::from_unix(secs);
    Cx {
        method: seen.method.as_str(),
        path: seen.path(),
        principal,
        challenge,
        timestamp: format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
            dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second
        ),
        guid: uuid::Uuid::new_v4().to_string(),
    }
}

/// The middleware (see [`Chaos::wrap`]).
pub(crate) async fn intercept(State(chaos): State<Chaos>, req: Request, next: Next) -> Response {
    around(&chaos, req, |req| next.run(req)).await
}

/// [`intercept`]'s work around `inner`, the service's own handling (for a
/// service that calls it from its handler rather than as a layer).
pub(crate) async fn around<F, Fut>(chaos: &Chaos, req: Request, inner: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let uri = req.uri().clone();
    let service = match chaos.service() {
        Service::Entra if shapes::is_graph(uri.path()) => "graph",
        s => s.as_str(),
    };
    let vm = req.extensions().get::<VmKey>().map(|v| v.0.clone());
    let method = req.method().clone();
    // Entra's token requests carry the client id in the body; elsewhere the
    // query and the bearer token say all there is, read when needed.
    let who = OnceLock::new();
    let req = if chaos.service() == Service::Entra || chaos.needs_identity() {
        let (req, found) = identify(req).await;
        let _ = who.set(found);
        req
    } else {
        req
    };
    let seen = Seen {
        service,
        method,
        uri,
        vm,
        authorization: req.headers().get(header::AUTHORIZATION).cloned(),
        who,
    };
    if let Some(res) = throttled(chaos, &seen) {
        return res;
    }
    // Held until the answer is ready: an injected latency counts as time in
    // flight, as a slow IMDS would on Azure.
    let _slot = match admitted(chaos, &seen) {
        Ok(slot) => slot,
        Err(limit) => {
            let why =
                format!("over IMDS's limit of {limit} concurrent identity requests for this VM");
            return too_many(chaos, &seen, why);
        }
    };
    if chaos.armed()
        && let Some(res) = fault(chaos, &seen).await
    {
        return res;
    }
    let res = inner(req).await;
    if res.status().as_u16() >= 400 {
        return record_refusal(chaos, &seen, res).await;
    }
    res
}

fn is_throttled_endpoint(chaos: &Chaos, seen: &Seen) -> bool {
    chaos.service() == Service::Imds && is_identity_endpoint(seen.path())
}

fn throttled(chaos: &Chaos, seen: &Seen) -> Option<Response> {
    if !is_throttled_endpoint(chaos, seen) {
        return None;
    }
    let key = seen.vm.as_deref().unwrap_or("");
    let limit = chaos.inner.throttle.over(key)?;
    Some(too_many(
        chaos,
        seen,
        format!("over IMDS's limit of {limit} identity requests per second for this VM"),
    ))
}

/// A slot among the VM's identity requests in flight (`None` where no
/// concurrency limit applies), or the limit the VM has no slot free under.
fn admitted(chaos: &Chaos, seen: &Seen) -> Result<Option<throttle::Slot>, u32> {
    if !is_throttled_endpoint(chaos, seen) {
        return Ok(None);
    }
    chaos.inner.throttle.enter(seen.vm.as_deref().unwrap_or(""))
}

/// IMDS's 429 (`Retry-After: 1`), logged as throttled with `reason`.
fn too_many(chaos: &Chaos, seen: &Seen, reason: String) -> Response {
    let ans = shapes::answer(
        Service::Imds,
        429,
        None,
        Some(1),
        &cx(chaos, seen, None, None),
    );
    let mut d = seen.decision(chaos, Kind::Throttled, 429);
    d.code = ans.code.clone();
    d.reason = reason;
    chaos.log().record(d);
    ans.into_response()
}

async fn fault(chaos: &Chaos, seen: &Seen) -> Option<Response> {
    let facts = Facts {
        path: seen.path().to_owned(),
        vm: seen.vm.as_deref().map(str::to_owned),
        identities: seen.who().ids(),
    };
    let firing = chaos.fire(&facts)?;
    if !firing.latency.is_zero() {
        tokio::time::sleep(firing.latency).await;
    }
    let mut d = seen.decision(chaos, Kind::Fault, firing.status.unwrap_or(0));
    d.fault_id = firing.rule_id.clone();
    let Some(status) = firing.status else {
        d.reason = format!("delayed {} ms", firing.latency.as_millis());
        chaos.log().record(d);
        return None;
    };
    let challenge = chaos.inner.challenge.read().clone();
    let who = seen.who();
    let principal = who.object_id.as_deref().or(who.client_id.as_deref());
    let c = cx(chaos, seen, principal, challenge.as_deref());
    let ans = shapes::answer(
        chaos.service(),
        status,
        firing.aadsts,
        firing.retry_after,
        &c,
    );
    d.code = ans.code.clone();
    d.reason = format!("injected by fault rule {}: {}", firing.rule_id, ans.message);
    chaos.log().record(d);
    Some(ans.into_response())
}

/// Azure's error code and message from an error body in any of the
/// services' shapes.
fn code_and_message(body: &[u8]) -> (String, String) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return (
            String::new(),
            String::from_utf8_lossy(body).chars().take(512).collect(),
        );
    };
    let s = |v: Option<&serde_json::Value>| v.and_then(|x| x.as_str()).unwrap_or("").to_owned();
    match v.get("error") {
        Some(e) if e.is_object() => (s(e.get("code")), s(e.get("message"))),
        Some(e) => (s(Some(e)), s(v.get("error_description"))),
        None => (s(v.get("code")), s(v.get("message"))),
    }
}

async fn record_refusal(chaos: &Chaos, seen: &Seen, res: Response) -> Response {
    let status = res.status().as_u16();
    let mut d = seen.decision(chaos, Kind::Denied, status);
    let explanation = res.extensions().get::<Explanation>().map(|e| e.0.clone());
    let small = res
        .body()
        .size_hint()
        .exact()
        .is_some_and(|n| n <= MAX_PEEK);
    let res = if small {
        let (parts, body) = res.into_parts();
        let bytes = axum::body::to_bytes(body, usize::try_from(MAX_PEEK).unwrap_or(usize::MAX))
            .await
            .unwrap_or_else(|_| Bytes::new());
        (d.code, d.reason) = code_and_message(&bytes);
        Response::from_parts(parts, Body::from(bytes))
    } else {
        res
    };
    if let Some(e) = explanation {
        d.reason = if d.reason.is_empty() {
            e
        } else {
            format!("{} ({e})", d.reason)
        };
    }
    chaos.log().record(d);
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_of_every_shape() {
        let arm = br#"{"error":{"code":"AuthorizationFailed","message":"no"}}"#;
        assert_eq!(
            code_and_message(arm),
            ("AuthorizationFailed".into(), "no".into())
        );
        let oauth = br#"{"error":"invalid_client","error_description":"AADSTS7000215: bad"}"#;
        assert_eq!(
            code_and_message(oauth),
            ("invalid_client".into(), "AADSTS7000215: bad".into())
        );
        assert_eq!(code_and_message(b"plain").1, "plain");
    }

    #[test]
    fn who_from_query_and_token() {
        let mut who = Who::default();
        from_query("resource=x&client_id=C1&msi_res_id=/r", &mut who);
        assert_eq!(who.client_id.as_deref(), Some("C1"));
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"oid":"O1","appid":"A1"}"#);
        let mut h = http::HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer x.{claims}.y").parse().unwrap(),
        );
        from_bearer(h.get(header::AUTHORIZATION), &mut who);
        assert_eq!(who.ids(), vec!["O1", "A1", "/r"]);
    }
}
