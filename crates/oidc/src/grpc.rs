//! `misim.oidc.v1.Issuers`: the only module that sees the generated types.

use std::time::Duration;

use misim_proto::auth::Caller;
use misim_proto::oidc::v1 as pb;
use tonic::{Request, Response, Status};

use crate::{IssuerKind, IssuerRef, MintRequest, Oidc, OidcError};

/// No service calls the issuers: minting is for the sandbox owner (`admin`,
/// who may call everything) alone, as a token from them is a credential.
pub(crate) fn allowed(_method: &str) -> &'static [Caller] {
    &[]
}

fn kind_to_pb(k: IssuerKind) -> pb::IssuerKind {
    match k {
        IssuerKind::Kubernetes => pb::IssuerKind::Kubernetes,
        IssuerKind::GitHub => pb::IssuerKind::Github,
    }
}

fn status(e: OidcError) -> Status {
    match e.code() {
        misim_types::ErrorCode::Internal => tracing::error!(error = %e, "issuers call failed"),
        _ => tracing::info!(error = %e, "issuers call refused"),
    }
    e.into()
}

#[tonic::async_trait]
impl pb::issuers_server::Issuers for Oidc {
    async fn mint_token(
        &self,
        request: Request<pb::MintTokenRequest>,
    ) -> Result<Response<pb::MintedToken>, Status> {
        let r = request.into_inner();
        let issuer = match pb::IssuerKind::try_from(r.kind) {
            Ok(pb::IssuerKind::Kubernetes) => {
                let cluster = misim_proto::required("cluster", &r.cluster)?;
                IssuerRef::kubernetes(cluster).map_err(status)?
            }
            Ok(pb::IssuerKind::Github) if r.cluster.is_empty() => IssuerRef::github(),
            Ok(pb::IssuerKind::Github) => {
                return Err(Status::invalid_argument(
                    "cluster names a Kubernetes cluster; GitHub's issuer has none",
                ));
            }
            _ => {
                return Err(Status::invalid_argument(format!(
                    "invalid issuer kind {}",
                    r.kind
                )));
            }
        };
        let lifetime = match u64::try_from(r.lifetime_seconds) {
            Ok(0) => None,
            Ok(s) => Some(Duration::from_secs(s)),
            Err(_) => {
                return Err(Status::invalid_argument(
                    "lifetime_seconds must not be negative",
                ));
            }
        };
        let minted = self
            .mint(MintRequest {
                issuer,
                subject: r.subject,
                audience: Some(r.audience),
                lifetime,
            })
            .await
            .map_err(status)?;
        Ok(Response::new(pb::MintedToken {
            token: minted.token,
            issuer: minted.issuer,
            issued_at_unix: minted.issued_at_unix,
            expires_on_unix: minted.expires_on_unix,
        }))
    }

    async fn list_issuers(
        &self,
        _: Request<pb::ListIssuersRequest>,
    ) -> Result<Response<pb::ListIssuersResponse>, Status> {
        let issuers = self
            .issuers()
            .await
            .into_iter()
            .map(|i| pb::Issuer {
                kind: kind_to_pb(i.issuer.kind) as i32,
                cluster: i.issuer.cluster,
                url: i.url,
                discovery_url: i.discovery_url,
                jwks_uri: i.jwks_uri,
                kid: i.kid,
            })
            .collect();
        Ok(Response::new(pb::ListIssuersResponse { issuers }))
    }
}
