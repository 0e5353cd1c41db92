//! The metadata endpoints: `/metadata/instance` (docs/azure-protocol.md,
//! IMDS: instance metadata), `/metadata/versions` and
//! `/metadata/identity/info`.

use std::sync::Arc;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode, header};
use serde_json::{Value, json};

use super::token::MIN_IDENTITY_API;
use super::{Query, api_version_ok, bad_request, has_metadata, json_response, oauth_error};
use crate::service::{Imds, LiveVm};

/// Oldest api-version of the whole service.
const MIN_API: &str = "2017-03-01";
/// api-versions IMDS advertises, newest first
/// (<https://learn.microsoft.com/azure/virtual-machines/instance-metadata-service#supported-api-versions>).
const API_VERSIONS: &[&str] = &[
    "2025-04-07",
    "2024-07-17",
    "2024-03-15",
    "2023-11-15",
    "2023-07-01",
    "2021-12-13",
    "2021-11-15",
    "2021-11-01",
    "2021-10-01",
    "2021-05-01",
    "2021-03-01",
    "2021-02-01",
    "2021-01-01",
    "2020-12-01",
    "2020-10-01",
    "2020-09-01",
    "2020-07-15",
    "2020-06-01",
    "2019-11-01",
    "2019-08-15",
    "2019-08-01",
    "2019-06-04",
    "2019-06-01",
    "2019-04-30",
    "2019-03-11",
    "2019-02-01",
    "2018-10-01",
    "2018-04-02",
    "2018-02-01",
    "2017-12-01",
    "2017-10-01",
    "2017-08-01",
    "2017-04-02",
    "2017-03-01",
];

pub(super) fn identity_info(imds: &Imds, method: &Method, h: &HeaderMap, q: &str) -> Response {
    let bad = |d: &str| oauth_error(StatusCode::BAD_REQUEST, "invalid_request", d);
    if method != Method::GET {
        return oauth_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "The request method is not supported",
        );
    }
    if !has_metadata(h) {
        return bad("Required metadata header not specified");
    }
    match Query::parse(q) {
        Ok(q) if api_version_ok(q.get("api-version"), MIN_IDENTITY_API) => {
            json_response(StatusCode::OK, &json!({"tenantId": imds.tenant_id()}))
        }
        Ok(_) => bad(
            "api-version is invalid or was not specified in the request. For more information refer to aka.ms/azureimds",
        ),
        Err(e) => bad(&e),
    }
}

pub(super) fn versions(method: &Method, h: &HeaderMap) -> Response {
    if method != Method::GET {
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "Method not allowed"}),
        );
    }
    if !has_metadata(h) {
        return bad_request("Required metadata header not specified");
    }
    json_response(StatusCode::OK, &json!({"apiVersions": API_VERSIONS}))
}

/// The instance document: every leaf a string, missing values `""` (docs/azure-protocol.md, IMDS:
/// instance metadata).
fn instance_doc(vm: &LiveVm) -> Value {
    let m = &vm.record.meta;
    let tags: Vec<String> = m.tags.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    let tags_list: Vec<Value> = m
        .tags
        .iter()
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect();
    json!({
        "compute": {
            "azEnvironment": "AzurePublicCloud",
            "location": m.location,
            "name": m.name,
            "offer": m.offer,
            "osProfile": {"adminUsername": m.admin_username, "computerName": m.computer_name, "disablePasswordAuthentication": "true"},
            "osType": m.os_type,
            "platformFaultDomain": "0",
            "platformUpdateDomain": "0",
            "priority": "",
            "provider": "Microsoft.Compute",
            "publisher": m.publisher,
            "resourceGroupName": m.resource_group,
            "resourceId": m.resource_id,
            "sku": m.sku,
            "storageProfile": {"imageReference": {"offer": m.offer, "publisher": m.publisher, "sku": m.sku, "version": m.version, "id": ""}},
            "subscriptionId": m.subscription_id,
            "tags": tags.join(";"),
            "tagsList": tags_list,
            "userData": "",
            "version": m.version,
            "vmId": m.vm_id,
            "vmScaleSetName": "",
            "vmSize": m.vm_size,
            "zone": "",
        },
        "network": {
            "interface": [{
                "ipv4": {"ipAddress": [{"privateIpAddress": m.private_ip, "publicIpAddress": ""}], "subnet": [{"address": "", "prefix": ""}]},
                "ipv6": {"ipAddress": []},
                "macAddress": "",
            }],
        },
    })
}

pub(super) fn instance(
    vm: Option<Arc<LiveVm>>,
    sub: &str,
    method: &Method,
    h: &HeaderMap,
    q: &str,
) -> Response {
    if method != Method::GET {
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "Method not allowed"}),
        );
    }
    if h.contains_key("x-forwarded-for") {
        return bad_request("Requests with X-Forwarded-For are not allowed");
    }
    if !has_metadata(h) {
        return bad_request("Required metadata header not specified");
    }
    let q = match Query::parse(q) {
        Ok(q) => q,
        Err(e) => return bad_request(&e),
    };
    if !api_version_ok(q.get("api-version"), MIN_API) {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({
                "error": "Bad request. api-version is invalid or was not specified in the request. For more information refer to aka.ms/azureimds",
                "newest-versions": &API_VERSIONS[..3],
            }),
        );
    }
    let text = match q.get("format") {
        None | Some("json") => false,
        Some("text") => true,
        Some(_) => return bad_request("Invalid format; use json or text"),
    };
    let Some(vm) = vm else {
        return json_response(StatusCode::NOT_FOUND, &json!({"error": "Not found"}));
    };
    let doc = instance_doc(&vm);
    let mut node = &doc;
    for seg in sub.split('/').filter(|s| !s.is_empty()) {
        let next = match node {
            Value::Object(m) => m.get(seg),
            Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => return json_response(StatusCode::NOT_FOUND, &json!({"error": "Not found"})),
        }
    }
    match (node, text) {
        (Value::String(s), true) => text_response(s.clone()),
        (Value::String(_), false) => bad_request("Leaf nodes are only supported with format=text"),
        (Value::Object(m), true) => text_response(
            m.iter()
                .map(|(k, v)| {
                    if v.is_string() {
                        k.clone()
                    } else {
                        format!("{k}/")
                    }
                })
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        (Value::Array(a), true) => text_response(
            (0..a.len())
                .map(|i| format!("{i}/"))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        (n, _) => json_response(StatusCode::OK, n),
    }
}

fn text_response(s: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from(s),
    )
        .into_response()
}
