//! Microsoft Graph v1.0 JSON: applications and service principals as Graph
//! returns them, and the request bodies the Azure CLI and SDKs send.

use serde_json::{Map, Value, json};

use crate::Config;
use crate::EntraError;
use crate::domain::application::{AppChanges, Application, KeyCredentialInput, PasswordCredential};
use crate::domain::datetime::{format_iso, parse_iso};
use crate::domain::federation::{CredentialInput, FederatedCredential};
use crate::domain::principal::{KeyCredential, Principal, PrincipalKind};

/// The tenant that owns Microsoft's first-party (managed identity) applications.
const MICROSOFT_SERVICES_TENANT: &str = "f8cdef31-a31e-4b4a-93e4-5f571e91255a";

/// Properties the service sets; a client's values for them are ignored.
const READ_ONLY: &[&str] = &[
    "id",
    "appId",
    "createdDateTime",
    "deletedDateTime",
    "publisherDomain",
    "passwordCredentials",
];

/// `{public_url}/v1.0/$metadata#{what}`.
pub(crate) fn context(c: &Config, what: &str) -> String {
    format!("{}/v1.0/$metadata#{what}", c.public_url)
}

fn publisher_domain() -> &'static str {
    "misim.onmicrosoft.com"
}

pub(crate) fn key_credential_json(k: &KeyCredential) -> Value {
    json!({
        "customKeyIdentifier": k.thumbprint_sha1,
        "displayName": k.display_name,
        "endDateTime": format_iso(k.end_unix),
        "key": null,
        "keyId": k.key_id,
        "startDateTime": format_iso(k.start_unix),
        "type": "AsymmetricX509Cert",
        "usage": "Verify",
    })
}

pub(crate) fn password_credential_json(p: &PasswordCredential, secret: Option<&str>) -> Value {
    json!({
        "customKeyIdentifier": null,
        "displayName": p.display_name,
        "endDateTime": format_iso(p.end_unix),
        "hint": p.hint,
        "keyId": p.key_id,
        "secretText": secret,
        "startDateTime": format_iso(p.start_unix),
    })
}

/// An application as `GET /v1.0/applications/{id}` returns it.
pub(crate) fn application_json(a: &Application) -> Value {
    let mut obj = json!({
        "id": a.object_id,
        "deletedDateTime": null,
        "appId": a.app_id,
        "applicationTemplateId": null,
        "disabledByMicrosoftStatus": null,
        "createdDateTime": format_iso(a.created_unix),
        "displayName": a.display_name,
        "description": null,
        "groupMembershipClaims": null,
        "identifierUris": a.identifier_uris,
        "isDeviceOnlyAuthSupported": null,
        "isFallbackPublicClient": null,
        "nativeAuthenticationApisEnabled": null,
        "notes": null,
        "publisherDomain": publisher_domain(),
        "serviceManagementReference": null,
        "signInAudience": a.sign_in_audience.as_deref().unwrap_or("AzureADMyOrg"),
        "tags": [],
        "tokenEncryptionKeyId": null,
        "uniqueName": null,
        "samlMetadataUrl": null,
        "defaultRedirectUri": null,
        "certification": null,
        "optionalClaims": null,
        "servicePrincipalLockConfiguration": null,
        "requestSignatureVerification": null,
        "addIns": [],
        "api": {
            "acceptMappedClaims": null,
            "knownClientApplications": [],
            "requestedAccessTokenVersion": null,
            "oauth2PermissionScopes": [],
            "preAuthorizedApplications": [],
        },
        "appRoles": [],
        "info": {
            "logoUrl": null,
            "marketingUrl": null,
            "privacyStatementUrl": null,
            "supportUrl": null,
            "termsOfServiceUrl": null,
        },
        "keyCredentials": a.key_credentials.iter().map(key_credential_json).collect::<Vec<_>>(),
        "parentalControlSettings": {"countriesBlockedForMinors": [], "legalAgeGroupRule": "Allow"},
        "passwordCredentials": a.password_credentials.iter().map(|p| password_credential_json(p, None)).collect::<Vec<_>>(),
        "publicClient": {"redirectUris": []},
        "requiredResourceAccess": [],
        "verifiedPublisher": {"displayName": null, "verifiedPublisherId": null, "addedDateTime": null},
        "web": {
            "homePageUrl": null,
            "logoutUrl": null,
            "redirectUris": [],
            "implicitGrantSettings": {"enableAccessTokenIssuance": false, "enableIdTokenIssuance": false},
            "redirectUriSettings": [],
        },
        "spa": {"redirectUris": []},
    });
    if let Some(map) = obj.as_object_mut() {
        for (k, v) in &a.properties {
            map.insert(k.clone(), v.clone());
        }
    }
    obj
}

/// A service principal as `GET /v1.0/servicePrincipals/{id}` returns it.
pub(crate) fn service_principal_json(
    c: &Config,
    p: &Principal,
    app: Option<&Application>,
) -> Value {
    let mi = p.kind == PrincipalKind::ManagedIdentity;
    let mut names = vec![p.app_id.clone()];
    match (&p.managed_identity_resource_id, app) {
        (Some(rid), _) if mi => names.push(rid.clone()),
        (_, Some(a)) => names.extend(a.identifier_uris.iter().cloned()),
        _ => {}
    }
    let (owner_org, audience, app_display_name, sp_type) = if mi {
        (
            MICROSOFT_SERVICES_TENANT,
            "AzureADMultipleOrgs".to_owned(),
            None,
            "ManagedIdentity",
        )
    } else {
        (
            c.tenant_id.as_str(),
            app.and_then(|a| a.sign_in_audience.clone())
                .unwrap_or_else(|| "AzureADMyOrg".to_owned()),
            Some(app.map_or(p.display_name.as_str(), |a| a.display_name.as_str())),
            "Application",
        )
    };
    json!({
        "id": p.object_id,
        "deletedDateTime": null,
        "accountEnabled": true,
        "alternativeNames": p.alternative_names,
        "appDisplayName": app_display_name,
        "appDescription": null,
        "appId": p.app_id,
        "applicationTemplateId": null,
        "appOwnerOrganizationId": owner_org,
        "appRoleAssignmentRequired": false,
        "createdDateTime": format_iso(p.created_unix),
        "description": null,
        "disabledByMicrosoftStatus": null,
        "displayName": p.display_name,
        "homepage": null,
        "loginUrl": null,
        "logoutUrl": null,
        "notes": null,
        "notificationEmailAddresses": [],
        "preferredSingleSignOnMode": null,
        "preferredTokenSigningKeyThumbprint": null,
        "replyUrls": [],
        "servicePrincipalNames": names,
        "servicePrincipalType": sp_type,
        "signInAudience": audience,
        "tags": [],
        "tokenEncryptionKeyId": null,
        "info": null,
        "samlSingleSignOnSettings": null,
        "addIns": [],
        "appRoles": [],
        "keyCredentials": p.key_credentials.iter().map(key_credential_json).collect::<Vec<_>>(),
        "oauth2PermissionScopes": [],
        "passwordCredentials": [],
        "resourceSpecificApplicationPermissions": [],
        "verifiedPublisher": {"displayName": null, "verifiedPublisherId": null, "addedDateTime": null},
    })
}

fn bad(m: String) -> EntraError {
    EntraError::InvalidRequest(m)
}

fn opt_string(obj: &Map<String, Value>, name: &str) -> Result<Option<String>, EntraError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad(format!("Property '{name}' must be a string."))),
    }
}

pub(crate) fn opt_datetime(
    obj: &Map<String, Value>,
    name: &str,
) -> Result<Option<i64>, EntraError> {
    match opt_string(obj, name)? {
        None => Ok(None),
        Some(s) => parse_iso(&s).map(Some).ok_or_else(|| {
            bad(format!(
                "Cannot convert the literal '{s}' of property '{name}' to a date-time."
            ))
        }),
    }
}

/// Standard base64 (line breaks allowed, as the Azure CLI sends a PEM body).
fn decode_key(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    misim_token::b64_lenient(&compact).filter(|b| !b.is_empty())
}

fn key_credential_input(i: usize, v: &Value) -> Result<KeyCredentialInput, EntraError> {
    let obj = v
        .as_object()
        .ok_or_else(|| bad(format!("keyCredentials[{i}] must be an object.")))?;
    if let Some(t) = opt_string(obj, "type")?
        && t != "AsymmetricX509Cert"
    {
        return Err(bad(format!(
            "keyCredentials[{i}]: key credential type '{t}' is not supported; use AsymmetricX509Cert."
        )));
    }
    if let Some(u) = opt_string(obj, "usage")?
        && u != "Verify"
    {
        return Err(bad(format!(
            "keyCredentials[{i}]: key credential usage '{u}' is not supported; use Verify."
        )));
    }
    let der = match opt_string(obj, "key")? {
        None => None,
        Some(k) => Some(
            decode_key(&k)
                .ok_or_else(|| bad(format!("keyCredentials[{i}]: 'key' is not base64.")))?,
        ),
    };
    Ok(KeyCredentialInput {
        key_id: opt_string(obj, "keyId")?,
        der,
        display_name: opt_string(obj, "displayName")?,
        start_unix: opt_datetime(obj, "startDateTime")?,
        end_unix: opt_datetime(obj, "endDateTime")?,
    })
}

/// The writable properties of an application from a POST or PATCH body.
pub(crate) fn app_changes(body: &Map<String, Value>) -> Result<AppChanges, EntraError> {
    let mut changes = AppChanges::default();
    for (k, v) in body {
        match k.as_str() {
            "displayName" => match v {
                Value::String(s) => changes.display_name = Some(s.clone()),
                _ => return Err(bad("Property 'displayName' must be a string.".into())),
            },
            "identifierUris" => {
                let uris = v
                    .as_array()
                    .and_then(|a| {
                        a.iter()
                            .map(|u| u.as_str().map(str::to_owned))
                            .collect::<Option<Vec<_>>>()
                    })
                    .ok_or_else(|| {
                        bad("Property 'identifierUris' must be an array of strings.".into())
                    })?;
                changes.identifier_uris = Some(uris);
            }
            "signInAudience" => {
                changes.sign_in_audience = opt_string(body, k)?;
            }
            "keyCredentials" => {
                let list = match v {
                    Value::Null => Vec::new(),
                    Value::Array(a) => a
                        .iter()
                        .enumerate()
                        .map(|(i, e)| key_credential_input(i, e))
                        .collect::<Result<_, _>>()?,
                    _ => return Err(bad("Property 'keyCredentials' must be an array.".into())),
                };
                changes.key_credentials = Some(list);
            }
            k if READ_ONLY.contains(&k) || k.starts_with('@') => {}
            _ => {
                changes.properties.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(changes)
}

/// A federatedIdentityCredential as Graph returns it.
pub(crate) fn federated_credential_json(c: &FederatedCredential) -> Value {
    json!({
        "id": c.id,
        "name": c.name,
        "issuer": c.issuer,
        "subject": c.subject,
        "description": c.description,
        "audiences": c.audiences,
    })
}

/// The properties of a federatedIdentityCredential POST or PATCH body;
/// `id` and OData annotations are ignored, unknown properties refused.
pub(crate) fn federated_credential_input(
    body: &Map<String, Value>,
) -> Result<CredentialInput, EntraError> {
    let mut input = CredentialInput::default();
    for (k, v) in body {
        match k.as_str() {
            "name" => input.name = opt_string(body, k)?,
            "issuer" => input.issuer = opt_string(body, k)?,
            "subject" => input.subject = opt_string(body, k)?,
            "description" => input.description = opt_string(body, k)?,
            "audiences" => {
                let list = v
                    .as_array()
                    .and_then(|a| {
                        a.iter()
                            .map(|u| u.as_str().map(str::to_owned))
                            .collect::<Option<Vec<_>>>()
                    })
                    .ok_or_else(|| {
                        bad("Property 'audiences' must be an array of strings.".into())
                    })?;
                input.audiences = Some(list);
            }
            "id" => {}
            k if k.starts_with('@') => {}
            other => {
                return Err(bad(format!(
                    "Property '{other}' does not exist on type 'microsoft.graph.federatedIdentityCredential'."
                )));
            }
        }
    }
    Ok(input)
}
