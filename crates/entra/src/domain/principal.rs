//! Service principals as Entra stores them.

use serde::{Deserialize, Serialize};

/// What kind of principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum PrincipalKind {
    /// An application (people and automation); may hold a secret.
    Application,
    /// A managed identity: certificates only, never a secret.
    ManagedIdentity,
}

/// A service principal record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Principal {
    /// Object id (lower-case GUID as created): `oid`/`sub`.
    pub object_id: String,
    /// App (client) id: `appid`.
    pub app_id: String,
    /// Display name.
    pub display_name: String,
    /// Kind.
    pub kind: PrincipalKind,
    /// Graph's alternativeNames (`isExplicit=..`, resource id) for identities.
    pub alternative_names: Vec<String>,
    /// Creation time, Unix seconds.
    pub created_unix: i64,
    /// The managed identity's ARM resource id (original casing).
    pub managed_identity_resource_id: Option<String>,
    /// The idempotency key this principal was created with, so deletion can
    /// drop the index entry.
    pub request_id: Option<String>,
    /// Upper-case hex SHA-256 of the client secret (applications only).
    pub secret_sha256: Option<String>,
    /// Registered certificates.
    pub key_credentials: Vec<KeyCredential>,
    /// For the service principal of a Graph application: the application's
    /// object id. The principal then authenticates with the application's
    /// password and key credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_object_id: Option<String>,
    /// Federated identity credentials (managed identities: pushed by ARM).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub federated_credentials: Vec<super::federation::FederatedCredential>,
}

/// A registered certificate, with what verification needs pre-extracted so
/// token issuance never re-parses X.509.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct KeyCredential {
    /// Key id (GUID).
    pub key_id: String,
    /// DER certificate.
    #[serde(with = "crate::domain::b64")]
    pub certificate_der: Vec<u8>,
    /// The certificate's public key: PKCS#1 DER for RSA, the SEC1 point for
    /// P-256 (managed identities). Stored under its pre-EC name, so records
    /// written before P-256 identity certificates read back unchanged.
    #[serde(with = "crate::domain::b64")]
    pub rsa_public_key: Vec<u8>,
    /// Upper-case hex SHA-1 of the DER certificate.
    pub thumbprint_sha1: String,
    /// Upper-case hex SHA-256 of the DER certificate.
    pub thumbprint_sha256: String,
    /// Validity start, Unix seconds.
    pub start_unix: i64,
    /// Validity end, Unix seconds.
    pub end_unix: i64,
    /// Graph's `displayName` of the credential, when one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

impl Principal {
    /// The `xms_mirid` claim: the identity's resource id with a lower-case
    /// `resourcegroups` segment, as real tokens carry it.
    pub(crate) fn xms_mirid(&self) -> Option<String> {
        self.managed_identity_resource_id.as_deref().map(xms_mirid)
    }

    /// Whether a certificate with this SHA-1 (raw bytes) is registered.
    pub(crate) fn has_certificate(&self, sha1: &[u8]) -> bool {
        let hex = misim_token::hex_upper(sha1);
        self.key_credentials
            .iter()
            .any(|k| k.thumbprint_sha1.eq_ignore_ascii_case(&hex))
    }
}

/// Lower-cases the `resourceGroups` segment name of a resource id.
pub(crate) fn xms_mirid(resource_id: &str) -> String {
    resource_id
        .split('/')
        .map(|seg| {
            if seg.eq_ignore_ascii_case("resourcegroups") {
                "resourcegroups"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// `alternative_names` of a managed identity: user-assigned identities are
/// explicit, system-assigned ones (the id of the hosting resource) are not.
pub(crate) fn mi_alternative_names(resource_id: &misim_types::ResourceId) -> Vec<String> {
    let explicit = resource_id
        .resource_type()
        .eq_ignore_ascii_case("Microsoft.ManagedIdentity/userAssignedIdentities");
    vec![
        format!("isExplicit={}", if explicit { "True" } else { "False" }),
        resource_id.as_str().to_owned(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use misim_types::ResourceId;

    #[test]
    fn mirid_lowercases_resource_groups_only() {
        assert_eq!(
            xms_mirid(
                "/subscriptions/S/resourceGroups/RG1/providers/Microsoft.Compute/virtualMachines/VM1"
            ),
            "/subscriptions/S/resourcegroups/RG1/providers/Microsoft.Compute/virtualMachines/VM1"
        );
    }

    #[test]
    fn explicit_only_for_user_assigned() {
        let ua = ResourceId::parse(
            "/subscriptions/s/resourceGroups/r/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u1",
        )
        .unwrap();
        let vm = ResourceId::parse(
            "/subscriptions/s/resourceGroups/r/providers/Microsoft.Compute/virtualMachines/v",
        )
        .unwrap();
        assert_eq!(mi_alternative_names(&ua)[0], "isExplicit=True");
        assert_eq!(mi_alternative_names(&vm)[0], "isExplicit=False");
        assert_eq!(mi_alternative_names(&vm)[1], vm.as_str());
    }
}
