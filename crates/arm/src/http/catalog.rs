//! The subscription and its catalogs: subscriptions, resource providers,
//! locations, VM sizes, compute SKUs and the VM image catalog. Visibility
//! follows access anywhere in the subscription, as on Azure.

use axum::response::Response;
use serde_json::{Value, json};

use super::{Req, list, ok, query};
use crate::domain::{catalog, model};
use crate::error::ArmError;

const PROVIDERS_READ: &str = "Microsoft.Resources/subscriptions/providers/read";

/// `GET /subscriptions`: as on Azure, a principal sees the subscriptions it
/// holds any role assignment in (at, above or below the subscription).
pub(super) fn subscriptions(r: &Req<'_>) -> Result<Response, ArmError> {
    r.only_get()?;
    let core = r.core;
    let visible: Vec<Value> = if core.has_access_in(&r.principal, &core.config.subscription_id)? {
        vec![model::subscription(&core.config)]
    } else {
        Vec::new()
    };
    Ok(ok(json!({
        "count": {"type": "Total", "value": visible.len()},
        "value": visible,
    })))
}

/// `GET /subscriptions/{sub}`.
pub(super) fn subscription(r: &Req<'_>, sub: &str) -> Result<Response, ArmError> {
    r.only_get()?;
    r.core
        .require_access_in(&r.principal, "Microsoft.Resources/subscriptions/read", sub)?;
    Ok(ok(model::subscription(&r.core.config)))
}

/// `GET /subscriptions/{sub}/providers`.
pub(super) fn providers(r: &Req<'_>, sub: &str) -> Result<Response, ArmError> {
    r.only_get()?;
    r.core
        .require_access_in(&r.principal, PROVIDERS_READ, sub)?;
    Ok(list(catalog::providers(sub)))
}

/// `GET /subscriptions/{sub}/providers/{namespace}`.
pub(super) fn provider(r: &Req<'_>, sub: &str, namespace: String) -> Result<Response, ArmError> {
    r.only_get()?;
    r.core
        .require_access_in(&r.principal, PROVIDERS_READ, sub)?;
    catalog::provider(sub, &namespace)
        .map(ok)
        .ok_or(ArmError::InvalidResourceNamespace(namespace))
}

/// `GET /subscriptions/{sub}/locations`.
pub(super) fn locations(r: &Req<'_>, sub: &str) -> Result<Response, ArmError> {
    r.only_get()?;
    r.core.require_access_in(
        &r.principal,
        "Microsoft.Resources/subscriptions/locations/read",
        sub,
    )?;
    Ok(list(catalog::locations(sub)))
}

/// `GET …/Microsoft.Compute/locations/{loc}/vmSizes`.
pub(super) fn vm_sizes(r: &Req<'_>, sub: &str) -> Result<Response, ArmError> {
    r.only_get()?;
    r.core.authorize_subscription_read(
        &r.principal,
        "Microsoft.Compute/locations/vmSizes/read",
        sub,
    )?;
    Ok(list(catalog::vm_sizes()))
}

/// `GET …/Microsoft.Compute/skus`: resource SKUs are read like providers (any
/// access in the subscription); `az vm create` lists them to pick defaults.
pub(super) fn compute_skus(r: &Req<'_>, sub: &str) -> Result<Response, ArmError> {
    r.only_get()?;
    r.core
        .require_access_in(&r.principal, "Microsoft.Compute/skus/read", sub)?;
    let filter = r.param("$filter").unwrap_or("");
    let location = query::quoted_after(filter, "location eq");
    Ok(list(catalog::compute_skus(location.as_deref())))
}

/// What a VM image catalog path asks for.
pub(super) struct ImageQuery<'a> {
    pub location: &'a str,
    pub publisher: &'a str,
    /// Absent: list offers.
    pub offer: Option<&'a str>,
    /// Absent: list SKUs.
    pub sku: Option<&'a str>,
    /// Absent: list versions.
    pub version: Option<&'a str>,
    /// The path ends in `versions` (or a version) rather than `skus/{s}`.
    pub versions: bool,
}

/// The image catalog: bare JSON arrays for lists (as Compute answers), one
/// object for a version. Lists honour `$orderby=name desc` and `$top`.
pub(super) fn vm_images(r: &Req<'_>, sub: &str, q: &ImageQuery<'_>) -> Result<Response, ArmError> {
    r.only_get()?;
    let level = match (q.offer, q.sku, q.versions) {
        (None, _, _) => "offers",
        (Some(_), None, _) | (Some(_), Some(_), false) => "offers/skus",
        (Some(_), Some(_), true) => "offers/skus/versions",
    };
    r.core.authorize_subscription_read(
        &r.principal,
        &format!("Microsoft.Compute/locations/publishers/artifacttypes/{level}/read"),
        sub,
    )?;
    let (location, publisher) = (q.location, q.publisher);
    let (offer, sku) = match (q.offer, q.sku, q.versions) {
        (None, _, _) => {
            return Ok(ok(Value::Array(catalog::list_names(
                sub, location, publisher, None,
            ))));
        }
        (Some(o), None, _) | (Some(o), Some(_), false) => {
            return Ok(ok(Value::Array(catalog::list_names(
                sub,
                location,
                publisher,
                Some(o),
            ))));
        }
        (Some(o), Some(s), true) => (o, s),
    };
    let image = catalog::image(publisher, offer, sku);
    match q.version {
        Some(v) => {
            let i = image.ok_or(ArmError::ImageNotFound)?;
            let v = i.version(v).ok_or(ArmError::ImageNotFound)?;
            Ok(ok(i.version_json(sub, location, v)))
        }
        None => {
            let Some(i) = image else {
                return Ok(ok(json!([])));
            };
            let mut names = i.versions_desc();
            let desc = r
                .param("$orderby")
                .is_some_and(|o| o.to_ascii_lowercase().contains("desc"));
            if !desc {
                names.reverse();
            }
            if let Some(top) = r.param("$top").and_then(|t| t.parse::<usize>().ok()) {
                names.truncate(top);
            }
            Ok(ok(Value::Array(
                names
                    .into_iter()
                    .map(|v| i.version_entry(sub, location, v))
                    .collect(),
            )))
        }
    }
}
