//! IMDS's Entra client: `Directory.IssueToken` (step 6 of the flow), and the
//! one place that decodes what Entra refused, from the status code and its
//! `ErrorInfo` reason (docs/error-handling.md), never from the message text.

use misim_proto::auth::ControlChannel;
use misim_proto::entra::v1::{IssueTokenRequest, directory_client::DirectoryClient};
use misim_proto::status::{ENTRA_DOMAIN, reason_of};
use misim_types::ErrorCode;

use crate::domain::cache::CachedToken;
use crate::error::IssueError;

/// The AADSTS code of "resource principal not found": IMDS answers it as
/// `invalid_resource` (docs/azure-protocol.md, IMDS: errors).
const RESOURCE_NOT_FOUND: &str = "AADSTS500011";

/// Entra's `Directory` service as IMDS uses it.
#[derive(Debug, Clone)]
pub(crate) struct EntraClient {
    directory: DirectoryClient<ControlChannel>,
}

impl EntraClient {
    pub(crate) fn new(directory: DirectoryClient<ControlChannel>) -> Self {
        Self { directory }
    }

    /// Redeems a signed client assertion for a token for `resource`.
    pub(crate) async fn issue_token(
        &self,
        client_id: &str,
        client_assertion: String,
        resource: &str,
    ) -> Result<CachedToken, IssueError> {
        let issued = self
            .directory
            .clone()
            .issue_token(IssueTokenRequest {
                client_id: client_id.to_owned(),
                client_assertion,
                resource: resource.to_owned(),
            })
            .await
            .map_err(refusal)?
            .into_inner();
        Ok(CachedToken::new(
            issued.access_token,
            issued.issued_at_unix,
            issued.not_before_unix,
            issued.expires_on_unix,
        ))
    }
}

/// What Entra's status means for the VM's client: Entra's text is passed on
/// for refusals (it names the AADSTS code, as Azure's IMDS does), and only
/// logged for failures.
fn refusal(status: tonic::Status) -> IssueError {
    let message = status.message().to_owned();
    if reason_of(&status, ENTRA_DOMAIN).as_deref() == Some(RESOURCE_NOT_FOUND) {
        return IssueError::InvalidResource(message);
    }
    match misim_proto::status_to_code(&status) {
        ErrorCode::InvalidArgument
        | ErrorCode::NotFound
        | ErrorCode::Unauthenticated
        | ErrorCode::PermissionDenied
        | ErrorCode::FailedPrecondition => IssueError::Rejected(message),
        ErrorCode::Unavailable | ErrorCode::TooManyRequests => IssueError::Unavailable(message),
        ErrorCode::AlreadyExists | ErrorCode::Internal => IssueError::Internal(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use misim_proto::status::with_reason;

    fn entra(code: tonic::Code, reason: &str) -> tonic::Status {
        with_reason(
            tonic::Status::new(code, format!("{reason}: text")),
            ENTRA_DOMAIN,
            reason,
        )
    }

    #[test]
    fn the_reason_not_the_text_names_an_unknown_resource() {
        assert_eq!(
            refusal(entra(tonic::Code::InvalidArgument, "AADSTS500011")),
            IssueError::InvalidResource("AADSTS500011: text".into())
        );
        // The code in the text alone means nothing.
        assert_eq!(
            refusal(tonic::Status::invalid_argument("AADSTS500011: text")),
            IssueError::Rejected("AADSTS500011: text".into())
        );
        // Another domain's reason of the same spelling is not Entra's.
        let other = with_reason(
            tonic::Status::invalid_argument("x"),
            "misim.arm",
            "AADSTS500011",
        );
        assert_eq!(refusal(other), IssueError::Rejected("x".into()));
    }

    #[test]
    fn codes_classify_the_other_refusals() {
        let class = |code| match refusal(entra(code, "AADSTS700027")) {
            IssueError::InvalidResource(_) => "resource",
            IssueError::Rejected(_) => "rejected",
            IssueError::Unavailable(_) => "unavailable",
            IssueError::Internal(_) => "internal",
        };
        assert_eq!(class(tonic::Code::Unauthenticated), "rejected");
        assert_eq!(class(tonic::Code::PermissionDenied), "rejected");
        assert_eq!(class(tonic::Code::NotFound), "rejected");
        assert_eq!(class(tonic::Code::Unavailable), "unavailable");
        assert_eq!(class(tonic::Code::DeadlineExceeded), "unavailable");
        assert_eq!(class(tonic::Code::ResourceExhausted), "unavailable");
        assert_eq!(class(tonic::Code::Internal), "internal");
        assert_eq!(class(tonic::Code::Unknown), "internal");
    }
}
