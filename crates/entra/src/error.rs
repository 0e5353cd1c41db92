//! Entra's errors, mapped to the shared [`ErrorCode`] vocabulary (gRPC) and to
//! OAuth2/AADSTS codes (the token endpoints).

use misim_store::StoreError;
use misim_token::TokenError;
use misim_types::ErrorCode;

/// Everything that can go wrong in Entra. Messages never contain secrets.
#[derive(Debug, thiserror::Error)]
pub enum EntraError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A token or discovery URL names another tenant.
    #[error(
        "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
    )]
    TenantNotFound {
        /// The tenant as requested.
        tenant: String,
    },
    /// A required request parameter is missing.
    #[error("The request body must contain the following parameter: '{0}'.")]
    MissingParameter(&'static str),
    /// The request is malformed in another way.
    #[error("{0}")]
    InvalidRequest(String),
    /// Only the client-credentials grant is supported.
    #[error("The app requested an unsupported grant type '{0}'.")]
    UnsupportedGrantType(String),
    /// The v2 scope is not `<resource>/.default`.
    #[error(
        "The provided value for the input parameter 'scope' is not valid. The scope {0} is not valid."
    )]
    InvalidScope(String),
    /// No principal has this client id.
    #[error(
        "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant."
    )]
    UnknownApplication {
        /// The client id as sent.
        client_id: String,
        /// The tenant id.
        tenant: String,
    },
    /// The client secret does not match (or the principal has none, as
    /// managed identities never do).
    #[error(
        "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
    )]
    InvalidSecret {
        /// The client id.
        client_id: String,
    },
    /// The client assertion does not verify.
    #[error(
        "Client assertion failed signature validation or names no registered certificate: {reason}."
    )]
    InvalidAssertion {
        /// Why.
        reason: String,
    },
    /// The client assertion is not a well-formed JWT (or lacks a claim Entra needs).
    #[error("JWT token is invalid or malformed: {reason}.")]
    MalformedAssertion {
        /// Why.
        reason: String,
    },
    /// The client assertion's `iss` or `sub` is not the `client_id` of the request.
    #[error(
        "Client assertion application identifier doesn't match 'client_id' parameter. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials ."
    )]
    AssertionClientMismatch,
    /// The client assertion's `aud` is not this tenant's token endpoint.
    #[error(
        "Client assertion audience claim does not match Realm issuer. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials ."
    )]
    AssertionAudience,
    /// The client assertion or its certificate is outside its validity window.
    #[error("Client assertion is not within its valid time range: {reason}.")]
    AssertionExpired {
        /// Why.
        reason: String,
    },
    /// The resource is not one this tenant issues tokens for.
    #[error(
        "The resource principal named {resource} was not found in the tenant named {tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."
    )]
    UnknownResource {
        /// The resource as requested.
        resource: String,
        /// The tenant id.
        tenant: String,
    },
    /// No principal with this id.
    #[error("service principal {0} not found")]
    PrincipalNotFound(String),
    /// No application with this id.
    #[error("application {0} not found")]
    ApplicationNotFound(String),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The object exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// A certificate could not be parsed.
    #[error("invalid certificate: {0}")]
    BadCertificate(String),
    /// The request conflicts with an existing principal.
    #[error("{0}")]
    Conflict(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Signing or key handling failed.
    #[error("signing failed: {0}")]
    Signing(#[from] TokenError),
}

impl EntraError {
    /// The error class.
    pub fn code(&self) -> ErrorCode {
        use EntraError::*;
        match self {
            Config(_)
            | MissingParameter(_)
            | InvalidRequest(_)
            | UnsupportedGrantType(_)
            | InvalidScope(_)
            | UnknownResource { .. }
            | BadCertificate(_) => ErrorCode::InvalidArgument,
            TenantNotFound { .. } | PrincipalNotFound(_) | ApplicationNotFound(_) => {
                ErrorCode::NotFound
            }
            Forbidden(_) => ErrorCode::PermissionDenied,
            AlreadyExists(_) => ErrorCode::AlreadyExists,
            UnknownApplication { .. }
            | InvalidSecret { .. }
            | InvalidAssertion { .. }
            | MalformedAssertion { .. }
            | AssertionClientMismatch
            | AssertionAudience
            | AssertionExpired { .. } => ErrorCode::Unauthenticated,
            Conflict(_) => ErrorCode::FailedPrecondition,
            Store(_) | Signing(_) => ErrorCode::Internal,
        }
    }

    /// The OAuth2 `error` string and AADSTS code this error has at the token
    /// endpoints (docs/azure-protocol.md, Entra: errors). The client-assertion
    /// codes are those Azure's SDK troubleshooting guide lists (700021, 700023,
    /// 700027:
    /// https://learn.microsoft.com/azure/developer/java/sdk/troubleshooting-authentication-service-principal),
    /// 700024 for lifetimes (https://github.com/MicrosoftDocs/azure-docs/issues/65990)
    /// and 50027 "JWT token is invalid or malformed"
    /// (https://learn.microsoft.com/entra/identity-platform/reference-error-codes).
    pub fn oauth(&self) -> (&'static str, u32) {
        use EntraError::*;
        match self {
            TenantNotFound { .. } => ("invalid_request", 90002),
            MissingParameter(_) => ("invalid_request", 900144),
            InvalidRequest(_)
            | Config(_)
            | BadCertificate(_)
            | PrincipalNotFound(_)
            | ApplicationNotFound(_)
            | Forbidden(_)
            | AlreadyExists(_)
            | Conflict(_) => ("invalid_request", 90014),
            UnsupportedGrantType(_) => ("unsupported_grant_type", 70003),
            InvalidScope(_) => ("invalid_scope", 70011),
            UnknownApplication { .. } => ("unauthorized_client", 700016),
            InvalidSecret { .. } => ("invalid_client", 7000215),
            InvalidAssertion { .. } => ("invalid_client", 700027),
            AssertionExpired { .. } => ("invalid_client", 700024),
            AssertionClientMismatch => ("invalid_client", 700021),
            AssertionAudience => ("invalid_client", 700023),
            MalformedAssertion { .. } => ("invalid_request", 50027),
            UnknownResource { .. } => ("invalid_resource", 500011),
            Store(_) | Signing(_) => ("server_error", 90033),
        }
    }
}

impl From<EntraError> for tonic::Status {
    /// The AADSTS code travels as the status's `ErrorInfo` reason (domain
    /// [`ENTRA_DOMAIN`](misim_proto::status::ENTRA_DOMAIN)): that is what
    /// peers (IMDS) map to the OAuth2 error their own clients expect. The
    /// message starts with the code too, as Entra's `error_description` does,
    /// for people and logs; an internal failure's details stay in Entra's log.
    fn from(e: EntraError) -> Self {
        let (_, aadsts) = e.oauth();
        let reason = format!("AADSTS{aadsts}");
        let message = match e.code() {
            ErrorCode::Internal => format!("{reason}: internal error"),
            _ => format!("{reason}: {e}"),
        };
        misim_proto::status::with_reason(
            misim_proto::code_to_status(e.code(), message),
            misim_proto::status::ENTRA_DOMAIN,
            &reason,
        )
    }
}

impl From<misim_proto::ProtocolError> for EntraError {
    fn from(e: misim_proto::ProtocolError) -> Self {
        EntraError::InvalidRequest(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use misim_proto::status::{ENTRA_DOMAIN, reason_of};

    #[test]
    fn every_status_carries_its_aadsts_code_as_the_reason() {
        let e = EntraError::UnknownResource {
            resource: "https://nope.example".into(),
            tenant: "t".into(),
        };
        let s = tonic::Status::from(e);
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert!(
            s.message()
                .starts_with("AADSTS500011: The resource principal named https://nope.example"),
            "{}",
            s.message()
        );
        assert_eq!(reason_of(&s, ENTRA_DOMAIN).as_deref(), Some("AADSTS500011"));
        let s = tonic::Status::from(EntraError::AssertionAudience);
        assert_eq!(s.code(), tonic::Code::Unauthenticated);
        assert_eq!(reason_of(&s, ENTRA_DOMAIN).as_deref(), Some("AADSTS700023"));
    }

    #[test]
    fn internal_failures_cross_grpc_without_their_details() {
        let e = EntraError::Signing(TokenError::Key("secret detail".into()));
        let s = tonic::Status::from(e);
        assert_eq!(s.code(), tonic::Code::Internal);
        assert_eq!(s.message(), "AADSTS90033: internal error");
        assert_eq!(reason_of(&s, ENTRA_DOMAIN).as_deref(), Some("AADSTS90033"));
    }
}
