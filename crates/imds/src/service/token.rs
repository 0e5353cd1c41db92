//! The token path (step 6 of the flow): the cache, then a client assertion
//! signed with the identity's key, redeemed with Entra.

use std::sync::Arc;

use super::Imds;
use crate::domain::cache::CachedToken;
use crate::domain::{ASSERTION_LIFETIME, AssertionClaims, LiveIdentity};
use crate::error::IssueError;

impl Imds {
    /// A token for `identity` and `resource`: from the cache while the reuse
    /// policy allows, else from Entra with a fresh client assertion.
    pub(crate) async fn token(
        &self,
        identity: &LiveIdentity,
        resource: &str,
    ) -> Result<Arc<CachedToken>, IssueError> {
        let client_id = identity.record.client_id.as_str();
        self.inner
            .cache
            .get_or_fetch(
                client_id,
                resource,
                || self.inner.clock.unix(),
                |now| self.fetch_token(identity, resource, now),
            )
            .await
    }

    /// Asks Entra for a token with a fresh client assertion.
    async fn fetch_token(
        &self,
        identity: &LiveIdentity,
        resource: &str,
        now: i64,
    ) -> Result<CachedToken, IssueError> {
        let client_id = identity.record.client_id.as_str();
        let claims = AssertionClaims {
            aud: &self.inner.assertion_aud,
            iss: client_id,
            sub: client_id,
            jti: self.inner.ids.guid(),
            nbf: now,
            iat: now,
            exp: now + ASSERTION_LIFETIME,
        };
        let signer = identity.signer().map_err(|e| {
            IssueError::Internal(format!(
                "the stored key of identity {client_id} is unusable: {e}"
            ))
        })?;
        let assertion = signer
            .sign(&claims)
            .map_err(|e| IssueError::Internal(e.to_string()))?;
        self.inner
            .entra
            .issue_token(client_id, assertion, resource)
            .await
    }
}
