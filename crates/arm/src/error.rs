//! ARM's error type. Every failure a caller can see is one variant; the HTTP
//! edge (`http::error`) renders it as `{"error":{"code","message"}}` and gRPC
//! maps [`ArmError::code`] through `misim_proto::code_to_status`.

use misim_types::ErrorCode;

/// Why an ARM operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ArmError {
    /// No `api-version` query parameter.
    #[error("The api-version query parameter (?api-version=) is required for all requests.")]
    MissingApiVersion,
    /// No `Authorization` header.
    #[error("Authentication failed. The 'Authorization' header is missing.")]
    AuthenticationMissing,
    /// The header is not a bearer token, or the token is bad.
    #[error("The access token is invalid. {0}")]
    InvalidToken(String),
    /// The token's `exp` is before the injected clock's now (401 `ExpiredAuthenticationToken`).
    #[error("The access token expiry UTC time is earlier than current UTC time. {0}")]
    ExpiredToken(String),
    /// The token is for another audience.
    #[error("The access token has been obtained for wrong audience or resource. {0}")]
    WrongAudience(String),
    /// RBAC denied the action.
    #[error(
        "The client '{principal}' with object id '{principal}' does not have authorization to perform action '{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh your credentials."
    )]
    AuthorizationFailed {
        /// Caller object id.
        principal: String,
        /// The action that was checked (`Microsoft.Compute/virtualMachines/write`).
        action: String,
        /// The resource id it was checked at, as the message names it.
        scope: String,
        /// Why, as the RBAC evaluator explained it (for the decision log,
        /// never in the message: Azure does not explain).
        explanation: String,
    },
    /// The write is allowed, but an action on a resource the request links is
    /// not (a user-assigned identity attached to a VM needs its `assign/action`).
    #[error(
        "The client '{principal}' with object id '{principal}' has permission to perform action '{action}' on scope '{scope}'; however, it does not have permission to perform action(s) '{linked_actions}' on the linked scope(s) '{linked_scopes}' (respectively) or the linked scope(s) are invalid."
    )]
    LinkedAuthorizationFailed {
        /// Caller object id.
        principal: String,
        /// The allowed action.
        action: String,
        /// The resource id it was checked at, as the message names it.
        scope: String,
        /// The denied linked actions, comma-separated (one per linked scope).
        linked_actions: String,
        /// The linked scopes, comma-separated.
        linked_scopes: String,
    },
    /// Unknown subscription.
    #[error("The subscription '{0}' could not be found.")]
    SubscriptionNotFound(String),
    /// Unknown resource group.
    #[error("Resource group '{0}' could not be found.")]
    ResourceGroupNotFound(String),
    /// Unknown resource.
    #[error(
        "The Resource '{resource_type}/{name}' under resource group '{resource_group}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
    )]
    ResourceNotFound {
        /// `Namespace/type`.
        resource_type: String,
        /// The resource's name as requested (the last id segment).
        name: String,
        /// Its resource group as requested (Azure's message names both).
        resource_group: String,
    },
    /// The body is not valid JSON or not the expected shape.
    #[error("The request content was invalid and could not be deserialized: '{0}'.")]
    InvalidRequestContent(String),
    /// A parameter has a bad value.
    #[error("{0}")]
    InvalidParameter(String),
    /// A managed identity referenced by a VM does not exist or cannot be used.
    #[error("{0}")]
    FailedIdentityOperation(String),
    /// Unknown resource type in a known namespace.
    #[error(
        "The resource type '{resource_type}' could not be found in the namespace '{namespace}'."
    )]
    InvalidResourceType {
        /// The provider namespace as requested (`Microsoft.Foo`).
        namespace: String,
        /// The type below it that misim does not know.
        resource_type: String,
    },
    /// Unknown namespace.
    #[error(
        "No registered resource provider found for location '' and API version '' for type '{0}'."
    )]
    NoRegisteredProviderFound(String),
    /// The path is not an ARM path this simulator serves.
    #[error("The requested resource path '{0}' is not supported.")]
    UnknownPath(String),
    /// The method is not supported on this path.
    #[error("The http method '{0}' is not supported for this path.")]
    MethodNotAllowed(String),
    /// Same principal, role and scope exist already.
    #[error("The role assignment already exists.")]
    RoleAssignmentExists,
    /// A role assignment with this name exists with other content.
    #[error("Tenant ID, application ID, principal ID, and scope are not allowed to be updated.")]
    RoleAssignmentUpdateNotPermitted,
    /// Unknown role assignment.
    #[error("The role assignment '{0}' is not found.")]
    RoleAssignmentNotFound(String),
    /// No managed identity has this client id, object id or resource id
    /// (`misim identity renew`, over gRPC only).
    #[error("No managed identity has the client id, object id or resource id '{0}'.")]
    IdentityNotFound(String),
    /// The principal of a new assignment is unknown to the directory.
    #[error(
        "Principal {principal} does not exist in the directory {tenant}. Check that you have the correct principal ID. If you are creating this principal and then immediately assigning a role, this error might be related to a replication delay. In this case, set the role assignment principalType property to a value, such as ServicePrincipal, User, or Group.  See https://aka.ms/docs-principaltype"
    )]
    PrincipalNotFound {
        /// The object id the assignment names, which Entra does not know.
        principal: String,
        /// The tenant the subscription trusts, as Azure's message names it.
        tenant: String,
    },
    /// Unknown role definition in a role assignment body.
    #[error("The specified role definition with ID '{0}' does not exist.")]
    RoleDefinitionDoesNotExist(String),
    /// Unknown role definition on GET.
    #[error("The role definition '{0}' could not be found.")]
    RoleDefinitionNotFound(String),
    /// The assignment's scope is outside the role's `assignableScopes`.
    #[error("The role {0} is not available for assignment at the requested scope.")]
    ScopeDoesNotMatchRoleDefinition(String),
    /// Another role definition has this display name.
    #[error("A role definition cannot be updated with a name that already exists: '{0}'.")]
    RoleDefinitionWithSameNameExists(String),
    /// A custom role's action pattern is refused (too long, too many
    /// wildcards, too many patterns). Azure's code for an invalid action:
    /// https://github.com/MicrosoftDocs/azure-docs/issues/74428
    #[error("{0}")]
    InvalidActionOrNotAction(String),
    /// A custom role still has assignments.
    #[error(
        "There are existing role assignments referencing role '{0}'. Delete the role assignments before deleting the role definition."
    )]
    RoleDefinitionHasAssignments(String),
    /// The vault name is taken by another vault.
    #[error(
        "The vault name '{0}' is already in use. Vault names are globally unique so it is possible that the name is already taken."
    )]
    VaultAlreadyExists(String),
    /// The resource is being deleted (or otherwise busy).
    #[error("{0}")]
    OperationNotAllowed(String),
    /// A deployment template cannot be evaluated (syntax, unknown function, cycle, parameters).
    #[error("{0}")]
    InvalidTemplate(String),
    /// A deployment's preflight refused it (the deployer may not write some
    /// template resources); nothing was deployed.
    #[error("{0}")]
    InvalidTemplateDeployment(String),
    /// A resource refers to another that does not exist (a NIC's subnet).
    #[error(
        "Resource {reference} referenced by resource {referrer} was not found. Please make sure that the referenced resource exists, and that both resources are in the same region."
    )]
    InvalidResourceReference {
        /// The missing resource.
        reference: String,
        /// The resource being written.
        referrer: String,
    },
    /// Unknown resource provider namespace.
    #[error("The resource namespace '{0}' is invalid.")]
    InvalidResourceNamespace(String),
    /// No image matches a publisher/offer/sku/version.
    #[error("Artifact: VMImage was not found.")]
    ImageNotFound,
    /// A request Azure refuses with the generic `BadRequest` code (the
    /// managed-identity resource provider's validation).
    #[error("{0}")]
    BadRequest(String),
    /// A federated identity credential of a user-assigned identity is written
    /// while another write on the same identity is in flight: Azure refuses
    /// concurrent writes (docs/workload-identity.md, ARM).
    #[error(
        "Too many Federated Identity Credentials are written concurrently for the managed identity '{0}'. Concurrent Federated Identity Credentials writes under the same managed identity are not supported."
    )]
    ConcurrentFicWrites(String),
    /// A resource type asked for at an api-version that does not serve it.
    #[error(
        "No registered resource provider found for location '' and API version '{api_version}' for type '{resource_type}'. The supported api-versions are '{supported}'."
    )]
    ApiVersionNotSupported {
        /// `Namespace/type`.
        resource_type: String,
        /// The version asked for.
        api_version: String,
        /// The versions that serve it, comma-separated.
        supported: String,
    },
    /// A peer (Entra, IMDS) is unreachable, overloaded or too slow: worth
    /// retrying (`peers` decides, from the status code and error type, and
    /// logs the peer's own message: it never reaches ARM's callers).
    #[error(
        "The request could not be completed because {peer} is temporarily unavailable. Please retry the request later."
    )]
    PeerUnavailable {
        /// Which peer.
        peer: &'static str,
    },
    /// A peer answered with an unexpected error (logged by `peers`).
    #[error("{INTERNAL_MESSAGE}")]
    PeerFailed {
        /// Which peer.
        peer: &'static str,
    },
    /// Storage failed (the details are logged where the error is rendered).
    #[error("{INTERNAL_MESSAGE}")]
    Store(#[from] misim_store::StoreError),
    /// A bug or broken invariant (the text is logged, never sent).
    #[error("{INTERNAL_MESSAGE}")]
    Internal(String),
}

/// What every server-side failure says to the caller, as Azure's
/// `InternalServerError` does (Azure adds tracking ids; the details stay in
/// ARM's log).
pub const INTERNAL_MESSAGE: &str = "Encountered internal server error.";

impl ArmError {
    /// The shared error class.
    pub fn code(&self) -> ErrorCode {
        use ArmError as E;
        match self {
            E::MissingApiVersion
            | E::InvalidRequestContent(_)
            | E::InvalidParameter(_)
            | E::FailedIdentityOperation(_)
            | E::InvalidTemplateDeployment(_)
            | E::InvalidResourceType { .. }
            | E::NoRegisteredProviderFound(_)
            | E::MethodNotAllowed(_)
            | E::RoleAssignmentUpdateNotPermitted
            | E::PrincipalNotFound { .. }
            | E::RoleDefinitionDoesNotExist(_)
            | E::ScopeDoesNotMatchRoleDefinition(_)
            | E::InvalidTemplate(_)
            | E::InvalidActionOrNotAction(_)
            | E::InvalidResourceReference { .. }
            | E::BadRequest(_)
            | E::ApiVersionNotSupported { .. } => ErrorCode::InvalidArgument,
            E::AuthenticationMissing
            | E::InvalidToken(_)
            | E::ExpiredToken(_)
            | E::WrongAudience(_) => ErrorCode::Unauthenticated,
            E::AuthorizationFailed { .. } | E::LinkedAuthorizationFailed { .. } => {
                ErrorCode::PermissionDenied
            }
            E::SubscriptionNotFound(_)
            | E::ResourceGroupNotFound(_)
            | E::ResourceNotFound { .. }
            | E::UnknownPath(_)
            | E::RoleAssignmentNotFound(_)
            | E::IdentityNotFound(_)
            | E::RoleDefinitionNotFound(_)
            | E::InvalidResourceNamespace(_)
            | E::ImageNotFound => ErrorCode::NotFound,
            E::RoleAssignmentExists
            | E::VaultAlreadyExists(_)
            | E::RoleDefinitionWithSameNameExists(_)
            | E::RoleDefinitionHasAssignments(_)
            | E::OperationNotAllowed(_)
            | E::ConcurrentFicWrites(_) => ErrorCode::AlreadyExists,
            E::PeerUnavailable { .. } => ErrorCode::Unavailable,
            E::PeerFailed { .. } | E::Store(_) | E::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The ARM error code string of the envelope.
    pub fn arm_code(&self) -> &'static str {
        use ArmError as E;
        match self {
            E::MissingApiVersion => "MissingApiVersionParameter",
            E::AuthenticationMissing => "AuthenticationFailed",
            E::InvalidToken(_) => "InvalidAuthenticationToken",
            E::ExpiredToken(_) => "ExpiredAuthenticationToken",
            E::WrongAudience(_) => "InvalidAuthenticationTokenAudience",
            E::AuthorizationFailed { .. } => "AuthorizationFailed",
            E::LinkedAuthorizationFailed { .. } => "LinkedAuthorizationFailed",
            E::SubscriptionNotFound(_) => "SubscriptionNotFound",
            E::ResourceGroupNotFound(_) => "ResourceGroupNotFound",
            E::ResourceNotFound { .. } => "ResourceNotFound",
            E::InvalidRequestContent(_) => "InvalidRequestContent",
            E::InvalidParameter(_) => "InvalidParameter",
            E::FailedIdentityOperation(_) => "FailedIdentityOperation",
            E::InvalidResourceType { .. } => "InvalidResourceType",
            E::NoRegisteredProviderFound(_) => "NoRegisteredProviderFound",
            E::UnknownPath(_) => "NotFound",
            E::MethodNotAllowed(_) => "UnsupportedHttpMethod",
            E::RoleAssignmentExists => "RoleAssignmentExists",
            E::RoleAssignmentUpdateNotPermitted => "RoleAssignmentUpdateNotPermitted",
            E::RoleAssignmentNotFound(_) => "RoleAssignmentNotFound",
            E::PrincipalNotFound { .. } => "PrincipalNotFound",
            E::RoleDefinitionDoesNotExist(_) | E::RoleDefinitionNotFound(_) => {
                "RoleDefinitionDoesNotExist"
            }
            E::VaultAlreadyExists(_) => "VaultAlreadyExists",
            E::RoleDefinitionWithSameNameExists(_) => "RoleDefinitionWithSameNameExists",
            E::ScopeDoesNotMatchRoleDefinition(_) => "ScopeDoesNotMatchRoleDefinition",
            E::RoleDefinitionHasAssignments(_) => "RoleDefinitionHasAssignments",
            E::InvalidActionOrNotAction(_) => "InvalidActionOrNotAction",
            E::OperationNotAllowed(_) => "OperationNotAllowed",
            E::InvalidTemplate(_) => "InvalidTemplate",
            E::InvalidTemplateDeployment(_) => "InvalidTemplateDeployment",
            E::InvalidResourceReference { .. } => "InvalidResourceReference",
            E::InvalidResourceNamespace(_) => "InvalidResourceNamespace",
            E::ImageNotFound | E::IdentityNotFound(_) => "NotFound",
            E::BadRequest(_) => "BadRequest",
            E::ConcurrentFicWrites(_) => {
                "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity"
            }
            E::ApiVersionNotSupported { .. } => "NoRegisteredProviderFound",
            E::PeerUnavailable { .. } => "ServiceUnavailable",
            E::PeerFailed { .. } | E::Store(_) | E::Internal(_) => "InternalServerError",
        }
    }

    /// What a server-side failure knows beyond its fixed text, for the log
    /// line of whoever renders it (never for the caller).
    pub fn detail(&self) -> Option<String> {
        match self {
            ArmError::Store(e) => Some(e.to_string()),
            ArmError::Internal(m) => Some(m.clone()),
            _ => None,
        }
    }

    /// The ARM error envelope's inner object: `{"code","message"}`.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"code": self.arm_code(), "message": self.to_string()})
    }
}

impl From<crate::template::TemplateError> for ArmError {
    fn from(e: crate::template::TemplateError) -> Self {
        ArmError::InvalidTemplate(e.to_string())
    }
}
