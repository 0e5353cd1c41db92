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
    /// Every client secret matching the one sent has expired (AADSTS7000222, docs/azure-protocol.md,
    /// "Entra: errors").
    #[error(
        "The provided client secret keys for app '{client_id}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds."
    )]
    ExpiredSecret {
        /// The client id.
        client_id: String,
    },
    /// The certificate the assertion names has expired (AADSTS700027 with Entra's reason).
    #[error(
        "Client assertion contains an invalid signature. [Reason - The key used is expired., Thumbprint of key used by client: '{thumbprint}', Found key 'Start={}, End={}']",
        crate::domain::datetime::format_us(*start), crate::domain::datetime::format_us(*end)
    )]
    ExpiredKey {
        /// SHA-1 thumbprint of the certificate (upper-case hex).
        thumbprint: String,
        /// Its validity, Unix seconds.
        start: i64,
        /// Its expiry, Unix seconds.
        end: i64,
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
    /// An external token was presented, but the principal has no federated
    /// identity credential at all.
    #[error(
        "No matching federated identity record found for presented assertion. Assertion Issuer: '{issuer}'. Assertion Subject: '{subject}'. Assertion Audience: '{audience}'. https://learn.microsoft.com/entra/workload-id/workload-identity-federation"
    )]
    NoFederatedCredential {
        /// The token's `iss`.
        issuer: String,
        /// The token's `sub`.
        subject: String,
        /// The token's `aud` (comma-separated when several).
        audience: String,
    },
    /// No federated identity credential names the token's issuer.
    #[error(
        "No matching federated identity record found for presented assertion issuer '{issuer}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation"
    )]
    FederatedIssuerMismatch {
        /// The token's `iss`.
        issuer: String,
    },
    /// Credentials name the issuer, none the subject.
    #[error(
        "No matching federated identity record found for presented assertion subject '{subject}'. Check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation"
    )]
    FederatedSubjectMismatch {
        /// The token's `sub`.
        subject: String,
    },
    /// A credential names the subject in another case only.
    #[error(
        "No matching federated identity record found for presented assertion subject '{subject}'. The subject matches with case-insensitive comparison, but not with case-sensitive comparison. Check your federated identity credential Subject, Audience and Issuer against the presented assertion. See documentation at: https://learn.microsoft.com/entra/workload-id/workload-identity-federation."
    )]
    FederatedSubjectCase {
        /// The token's `sub`.
        subject: String,
    },
    /// Credentials name issuer and subject, none the audience.
    #[error(
        "No matching federated identity record found for presented assertion audience '{audience}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation"
    )]
    FederatedAudienceMismatch {
        /// The token's `aud` (comma-separated when several).
        audience: String,
    },
    /// The external token lives longer than Entra accepts (or has no `iat`).
    #[error(
        "External OIDC Provider token must have a lifetime of less than or equal to 1.01:00:00. Token issued at {iat}. Token expires on {exp}."
    )]
    FederatedTokenTooLong {
        /// `iat` (0 when missing).
        iat: i64,
        /// `exp`.
        exp: i64,
    },
    /// The external token is expired or not yet valid.
    #[error(
        "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
        crate::domain::datetime::format_ticks(*now), crate::domain::datetime::format_ticks(*nbf), crate::domain::datetime::format_ticks(*exp)
    )]
    FederatedTokenTimeRange {
        /// Now, Unix seconds.
        now: i64,
        /// `nbf` (0 when missing).
        nbf: i64,
        /// `exp`.
        exp: i64,
    },
    /// The external issuer's discovery document or keys could not be fetched.
    #[error("Request to External OIDC endpoint failed. ({reason})")]
    IssuerUnreachable {
        /// What went wrong (misim's addition; Entra says no more).
        reason: String,
    },
    /// The issuer's keys do not include the one that signed the token.
    #[error(
        "The certificate with identifier {kid} used to sign the federated credential could not be found in the metadata of identity provider {issuer}. Please validate that your Identity Provider's metadata exposes the key used to sign the incoming token."
    )]
    IssuerKeyNotFound {
        /// The token's `kid` (or `x5t`).
        kid: String,
        /// The issuer.
        issuer: String,
    },
    /// A token Entra issued, other than a managed identity's, was presented
    /// as a federated credential.
    #[error("AAD-issued tokens may not be used for federated identity flows.")]
    EntraIssuedToken,
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
            | ExpiredSecret { .. }
            | ExpiredKey { .. }
            | InvalidAssertion { .. }
            | MalformedAssertion { .. }
            | AssertionClientMismatch
            | AssertionAudience
            | AssertionExpired { .. } => ErrorCode::Unauthenticated,
            Conflict(_) => ErrorCode::FailedPrecondition,
            NoFederatedCredential { .. }
            | FederatedIssuerMismatch { .. }
            | FederatedSubjectMismatch { .. }
            | FederatedSubjectCase { .. }
            | FederatedAudienceMismatch { .. }
            | FederatedTokenTooLong { .. }
            | FederatedTokenTimeRange { .. }
            | IssuerKeyNotFound { .. }
            | EntraIssuedToken => ErrorCode::Unauthenticated,
            IssuerUnreachable { .. } => ErrorCode::FailedPrecondition,
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
            ExpiredSecret { .. } => ("invalid_client", 7000222),
            ExpiredKey { .. } => ("invalid_client", 700027),
            InvalidAssertion { .. } => ("invalid_client", 700027),
            AssertionExpired { .. } => ("invalid_client", 700024),
            AssertionClientMismatch => ("invalid_client", 700021),
            AssertionAudience => ("invalid_client", 700023),
            MalformedAssertion { .. } => ("invalid_request", 50027),
            UnknownResource { .. } => ("invalid_resource", 500011),
            // Workload identity federation (docs/workload-identity.md).
            NoFederatedCredential { .. } => ("invalid_request", 70021),
            FederatedIssuerMismatch { .. } => ("invalid_client", 700211),
            FederatedAudienceMismatch { .. } => ("invalid_client", 700212),
            FederatedSubjectMismatch { .. } => ("invalid_client", 700213),
            FederatedSubjectCase { .. } => ("invalid_client", 7002138),
            FederatedTokenTooLong { .. } => ("invalid_request", 70023),
            FederatedTokenTimeRange { .. } => ("invalid_client", 700024),
            IssuerUnreachable { .. } => ("invalid_request", 50166),
            IssuerKeyNotFound { .. } => ("invalid_client", 7000272),
            EntraIssuedToken => ("invalid_client", 700222),
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
