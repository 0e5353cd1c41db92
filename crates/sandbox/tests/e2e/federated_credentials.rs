//! A user-assigned identity's federated identity credentials written through
//! ARM reach Entra's `Federation` (what the token exchange matches against),
//! follow updates and deletions, and go with their identity.

use misim_proto::auth::Caller;
use misim_proto::entra::v1::ListFederatedCredentialsRequest;
use misim_proto::entra::v1::federation_client::FederationClient;
use serde_json::json;

use crate::harness::*;

/// (name, subject) of the principal's credentials in Entra.
pub(crate) async fn entra_fics(w: &World, client_id: &str) -> Vec<(String, String)> {
    let ch =
        w.sb.channel_as(Caller::Admin, &w.sb.entra_grpc_url)
            .unwrap();
    FederationClient::new(ch)
        .list_federated_credentials(ListFederatedCredentialsRequest {
            app_id: client_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .credentials
        .into_iter()
        .map(|c| (c.name, c.subject))
        .collect()
}

#[tokio::test]
async fn credentials_put_through_arm_appear_in_entra_and_go_with_their_identity() {
    let w = start().await;
    w.create_rg("rg1").await;
    let uami = w.uami_id("rg1", "ide");
    let (s, u) = w
        .admin("PUT", &uami, Some(json!({"location": "eastus"})))
        .await;
    assert_eq!(s, 201, "{u}");
    let client = u["properties"]["clientId"].as_str().unwrap().to_owned();
    let fic = format!("{uami}/federatedIdentityCredentials/fic1");
    let body = |sub: &str| {
        json!({"properties": {"issuer": "https://oidc.prod-aks.azure.com/IssuerGUID",
            "subject": sub, "audiences": ["api://AzureADTokenExchange"]}})
    };

    let (s, v) = w
        .admin("PUT", &fic, Some(body("system:serviceaccount:ns:sa")))
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        entra_fics(&w, &client).await,
        vec![("fic1".to_owned(), "system:serviceaccount:ns:sa".to_owned())]
    );
    let (s, v) = w
        .admin("PUT", &fic, Some(body("repo:o/r:ref:refs/heads/main")))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        entra_fics(&w, &client).await,
        vec![("fic1".to_owned(), "repo:o/r:ref:refs/heads/main".to_owned())]
    );
    let (s, _) = w.admin("DELETE", &fic, None).await;
    assert_eq!(s, 200);
    assert!(entra_fics(&w, &client).await.is_empty());

    let (s, v) = w
        .admin("PUT", &fic, Some(body("system:serviceaccount:ns:sa")))
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, _) = w.admin("DELETE", &uami, None).await;
    assert_eq!(s, 200);
    // The principal is gone in Entra, and its credentials with it.
    let ch =
        w.sb.channel_as(Caller::Admin, &w.sb.entra_grpc_url)
            .unwrap();
    let gone = FederationClient::new(ch)
        .list_federated_credentials(ListFederatedCredentialsRequest { app_id: client })
        .await;
    match gone {
        Ok(r) => assert!(r.into_inner().credentials.is_empty()),
        Err(s) => assert_eq!(s.code(), tonic::Code::NotFound, "{s}"),
    }
    let (s, _) = w.admin("GET", &fic, None).await;
    assert_eq!(s, 404);
}
