//! Federated identity credentials of user-assigned identities: the resource
//! shape azure-cli sends and reads, Azure's validation and limits, RBAC with
//! their own actions, the push to Entra's `Federation`, 409 on concurrent
//! writes, and deletion with their identity.

use super::*;

const MI_CONTRIBUTOR: &str = "e40ec5ca-96e0-45a2-b4ff-59039f2c2b59";
const AKS_ISSUER: &str = "https://oidc.prod-aks.azure.com/IssuerGUID";

fn fic_path(rg: &str, identity: &str, name: &str) -> String {
    format!(
        "{}/federatedIdentityCredentials/{name}",
        uami_path(rg, identity)
    )
}

/// What `az identity federated-credential create` sends.
fn cli_body(subject: &str) -> Value {
    json!({"properties": {"issuer": AKS_ISSUER, "subject": subject,
        "audiences": ["api://AzureADTokenExchange"]}})
}

impl Harness {
    fn entra_fics(&self, client_id: &str) -> Vec<(String, String)> {
        self.shared
            .lock()
            .federated_credentials
            .get(client_id)
            .map(|l| {
                l.iter()
                    .map(|c| (c.name.clone(), c.subject.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[tokio::test]
async fn create_show_list_update_delete_as_azure_cli_does() {
    let h = harness().await;
    h.rg("rg1").await;
    let u = h.uami("rg1", "ide").await;
    let client = u["properties"]["clientId"].as_str().unwrap().to_owned();
    let path = fic_path("rg1", "ide", "fic1");

    let (s, v) = h
        .call("PUT", &path, Some(cli_body("system:serviceaccount:ns:sa1")))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        v,
        json!({
            "id": format!("/subscriptions/{SUB}/resourcegroups/rg1/providers/Microsoft.ManagedIdentity/userAssignedIdentities/ide/federatedIdentityCredentials/fic1"),
            "name": "fic1",
            "type": "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials",
            "properties": {"issuer": AKS_ISSUER, "subject": "system:serviceaccount:ns:sa1",
                "audiences": ["api://AzureADTokenExchange"]},
        })
    );
    assert_eq!(
        h.entra_fics(&client),
        vec![("fic1".into(), "system:serviceaccount:ns:sa1".into())]
    );
    // The same PUT again changes nothing and calls nobody.
    h.clear_calls();
    let (s, _) = h
        .call("PUT", &path, Some(cli_body("system:serviceaccount:ns:sa1")))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(h.calls().is_empty(), "{:?}", h.calls());

    // Audiences default when left out; names are case-insensitive.
    let (s, v) = h
        .call(
            "PUT",
            &fic_path("rg1", "ide", "fic2"),
            Some(json!({"properties": {"issuer": AKS_ISSUER, "subject": "sa2"}})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        v["properties"]["audiences"],
        json!(["api://AzureADTokenExchange"])
    );
    let (s, v) = h.call("GET", &fic_path("rg1", "ide", "FIC2"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["name"], "fic2");

    let (s, v) = h
        .call(
            "GET",
            &format!("{}/federatedIdentityCredentials", uami_path("rg1", "ide")),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let names: Vec<&str> = v["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["fic1", "fic2"]);

    // `az identity federated-credential update` is a PUT with the new subject.
    let (s, v) = h
        .call("PUT", &path, Some(cli_body("system:serviceaccount:ns:sa3")))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["properties"]["subject"], "system:serviceaccount:ns:sa3");
    assert!(
        h.entra_fics(&client)
            .contains(&("fic1".into(), "system:serviceaccount:ns:sa3".into()))
    );

    let (s, _) = h.call("DELETE", &path, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h.entra_fics(&client), vec![("fic2".into(), "sa2".into())]);
    let (s, _) = h.call("DELETE", &path, None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = h.call("GET", &path, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["error"]["code"], "ResourceNotFound");
}

#[tokio::test]
async fn validation_limits_and_api_versions_follow_azure() {
    let h = harness().await;
    h.rg("rg1").await;
    h.uami("rg1", "ide").await;
    let bad = |v: &Value| v["error"]["code"].as_str().unwrap_or_default().to_owned();
    for (name, body) in [
        ("ab", cli_body("s")),
        ("_abc", cli_body("s")),
        (
            "fic1",
            json!({"properties": {"issuer": "http://insecure.test", "subject": "s"}}),
        ),
        ("fic1", json!({"properties": {"issuer": AKS_ISSUER}})),
        (
            "fic1",
            json!({"properties": {"issuer": AKS_ISSUER, "subject": "s", "audiences": ["a", "b"]}}),
        ),
    ] {
        let (s, v) = h
            .call("PUT", &fic_path("rg1", "ide", name), Some(body))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{name}: {v}");
        assert_eq!(bad(&v), "BadRequest");
    }
    // The identity must exist.
    let (s, v) = h
        .call("PUT", &fic_path("rg1", "nope", "fic1"), Some(cli_body("s")))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(bad(&v), "ResourceNotFound");

    // Issuer and subject are unique per identity; 20 credentials at most.
    for i in 0..20 {
        let (s, v) = h
            .call(
                "PUT",
                &fic_path("rg1", "ide", &format!("fic{i:02}")),
                Some(cli_body(&format!("s{i}"))),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let (s, v) = h
        .call(
            "PUT",
            &fic_path("rg1", "ide", "other"),
            Some(cli_body("s3")),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        v["error"]["message"],
        "Issuer and subject combination already exists for this Managed Identity."
    );
    let (s, v) = h
        .call(
            "PUT",
            &fic_path("rg1", "ide", "fic21"),
            Some(cli_body("s21")),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    // Replacing one of the 20 is not a 21st.
    let (s, _) = h
        .call(
            "PUT",
            &fic_path("rg1", "ide", "fic00"),
            Some(cli_body("s00")),
        )
        .await;
    assert_eq!(s, StatusCode::OK);

    // An api-version from before the resource type existed.
    let (s, _, v) = h
        .raw(
            "GET",
            &format!("{}?api-version=2018-11-30", fic_path("rg1", "ide", "fic00")),
            Some(&h.token(ADMIN)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(bad(&v), "NoRegisteredProviderFound");
}

#[tokio::test]
async fn rbac_uses_the_credentials_own_actions() {
    let h = harness().await;
    h.rg("rg1").await;
    h.uami("rg1", "ide").await;
    let (reader, contributor) = (
        "66666666-6666-4666-8666-666666666666",
        "55555555-5555-4555-8555-555555555555",
    );
    for (p, role) in [(reader, READER), (contributor, MI_CONTRIBUTOR)] {
        h.principal(p);
        h.assign(
            p,
            role,
            &rg_path("rg1").replace("resourcegroups", "resourceGroups"),
        )
        .await;
    }
    let path = fic_path("rg1", "ide", "fic1");
    let (s, v) = h.call_as(reader, "PUT", &path, Some(cli_body("s"))).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(
        v["error"]["message"].as_str().unwrap().contains(
            "'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write'"
        ),
        "{v}"
    );
    let (s, v) = h
        .call_as(contributor, "PUT", &path, Some(cli_body("s")))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, _) = h.call_as(reader, "GET", &path, None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = h.call_as(reader, "DELETE", &path, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = h.call_as(contributor, "DELETE", &path, None).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn a_write_while_another_is_in_flight_on_the_identity_is_409() {
    let h = harness().await;
    h.rg("rg1").await;
    h.uami("rg1", "ide").await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    h.federation.gate_puts(Some(gate.clone()));
    let req = Request::builder()
        .method("PUT")
        .uri(format!(
            "{}?api-version=2023-01-31",
            fic_path("rg1", "ide", "fic1")
        ))
        .header("authorization", format!("Bearer {}", h.token(ADMIN)))
        .body(Body::from(cli_body("s1").to_string()))
        .unwrap();
    let first = tokio::spawn(h.router.clone().oneshot(req));
    h.federation.put_arrived().await;

    let (s, v) = h
        .call("PUT", &fic_path("rg1", "ide", "fic2"), Some(cli_body("s2")))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(
        v["error"]["code"],
        "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity"
    );
    // Another identity is not held up (its push passes the gate).
    h.uami("rg1", "other").await;
    h.federation.gate_puts(None);
    let (s, _) = h
        .call(
            "PUT",
            &fic_path("rg1", "other", "fic1"),
            Some(cli_body("s1")),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);

    gate.add_permits(1);
    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::CREATED);
    let (s, _) = h
        .call("PUT", &fic_path("rg1", "ide", "fic2"), Some(cli_body("s2")))
        .await;
    assert_eq!(s, StatusCode::CREATED);
}

#[tokio::test]
async fn credentials_go_with_their_identity() {
    let h = harness().await;
    h.rg("rg1").await;
    let u = h.uami("rg1", "ide").await;
    let client = u["properties"]["clientId"].as_str().unwrap().to_owned();
    let (s, _) = h
        .call("PUT", &fic_path("rg1", "ide", "fic1"), Some(cli_body("s1")))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = h.call("DELETE", &uami_path("rg1", "ide"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(h.entra_fics(&client).is_empty());
    // A new identity under the same name starts without credentials.
    h.uami("rg1", "ide").await;
    let (s, v) = h
        .call(
            "GET",
            &format!("{}/federatedIdentityCredentials", uami_path("rg1", "ide")),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["value"], json!([]));
    let (s, _) = h.call("GET", &fic_path("rg1", "ide", "fic1"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// A write whose operation outlasts the time its request waits (here none:
/// the budget is zero) answers at once, and the operation runs on to its end
/// by itself while a later write on the identity waits for it: Entra sees
/// the push, then the delete, never the reverse.
#[tokio::test]
async fn an_operation_runs_on_after_its_request_stopped_waiting() {
    let h = harness_tuned(None, Faults::none(), |c| {
        c.inline_budget = std::time::Duration::ZERO;
    })
    .await;
    h.rg("rg1").await;
    h.uami("rg1", "ide").await;
    let path = fic_path("rg1", "ide", "fic1");
    let held = Arc::new(tokio::sync::Semaphore::new(0));
    h.federation.gate_puts(Some(held.clone()));
    let (s, v) = h.call("PUT", &path, Some(cli_body("s1"))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // Answered while the push is held in flight. A delete sent now waits
    // for the identity's running operation (later pushes would pass).
    h.federation.put_arrived().await;
    h.federation.gate_puts(None);
    let req = Request::builder()
        .method("DELETE")
        .uri(format!("{path}?api-version=2023-01-31"))
        .header("authorization", format!("Bearer {}", h.token(ADMIN)))
        .body(Body::empty())
        .unwrap();
    let delete = tokio::spawn(h.router.clone().oneshot(req));

    held.add_permits(1);
    assert_eq!(delete.await.unwrap().unwrap().status(), StatusCode::OK);
    h.federation.writes_applied(2).await;
    let s = h.shared.lock();
    let writes: Vec<&str> = s
        .calls
        .iter()
        .filter(|c| c.contains("FederatedCredential"))
        .map(|c| c.split(' ').next().unwrap_or_default())
        .collect();
    assert_eq!(
        writes,
        ["PutFederatedCredential", "DeleteFederatedCredential"]
    );
    assert!(
        s.federated_credentials.values().all(Vec::is_empty),
        "{:?}",
        s.federated_credentials
    );
}
