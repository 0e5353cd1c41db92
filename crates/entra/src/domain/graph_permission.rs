//! Microsoft Graph application permissions of a principal.
//!
//! On Azure an app-only token reaches Graph's applications and service
//! principals only with an application permission granted to the caller
//! (an app role assignment to Microsoft Graph's service principal, carried in
//! the token's `roles` claim): `Application.Read.All` to read,
//! `Application.ReadWrite.All` to write too. Without one Graph answers 403
//! `Authorization_RequestDenied` "Insufficient privileges to complete the
//! operation." with an `innerError` (the body as Graph sends it:
//! https://github.com/Azure-Samples/ms-identity-python-daemon/issues/8;
//! Application.Read.All as the least privilege for listing service principals:
//! https://github.com/microsoftgraph/microsoft-graph-docs/pull/7029 and
//! https://learn.microsoft.com/graph/api/serviceprincipal-list, "Permissions").
//! A principal made by `az ad sp create-for-rbac`, and every managed identity,
//! has none. misim stores the grant per principal and checks it on every
//! request, so a change applies at once rather than at the next token.

use serde::{Deserialize, Serialize};

/// A Graph application permission, as its Azure name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GraphPermission {
    /// `Application.Read.All`: read applications and service principals.
    #[serde(rename = "Application.Read.All")]
    ApplicationReadAll,
    /// `Application.ReadWrite.All`: read and write them.
    #[serde(rename = "Application.ReadWrite.All")]
    ApplicationReadWriteAll,
}

impl GraphPermission {
    /// True when the permission allows writes.
    pub fn can_write(self) -> bool {
        self == Self::ApplicationReadWriteAll
    }
}
