//! Federated identity credentials in ARM template deployments: as a child
//! resource (`userAssignedIdentities/federatedIdentityCredentials` at the top
//! level) and nested in the identity's `resources`, deployed through the same
//! path as a direct PUT, so they reach Entra and their errors are ARM's.

use serde_json::{Value, json};

use crate::federated_credentials::entra_fics;
use crate::harness::{World, start};

const UAMI_TYPE: &str = "Microsoft.ManagedIdentity/userAssignedIdentities";
const FIC_TYPE: &str =
    "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials";

async fn deploy(w: &World, name: &str, template: Value) -> (u16, Value) {
    w.admin(
        "PUT",
        &format!(
            "{}/providers/Microsoft.Resources/deployments/{name}",
            w.rg_id("rg1")
        ),
        Some(
            json!({"properties": {"mode": "Incremental", "template": template,
            "parameters": {"issuer": {"value": "https://oidc.prod-aks.azure.com/tenant/guid/"}}}}),
        ),
    )
    .await
}

fn fic_props(subject: &str) -> Value {
    json!({"issuer": "[parameters('issuer')]", "subject": subject,
        "audiences": ["api://AzureADTokenExchange"]})
}

#[tokio::test]
async fn a_template_deploys_child_and_nested_credentials_to_arm_and_entra() {
    let w = start().await;
    w.create_rg("rg1").await;
    let template = json!({
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0",
        "parameters": {"issuer": {"type": "string"}},
        "resources": [
            {"type": UAMI_TYPE, "apiVersion": "2023-01-31", "name": "payments",
             "location": "[resourceGroup().location]",
             "resources": [
                {"type": "federatedIdentityCredentials", "apiVersion": "2023-01-31", "name": "api",
                 "dependsOn": ["[resourceId('Microsoft.ManagedIdentity/userAssignedIdentities', 'payments')]"],
                 "properties": fic_props("system:serviceaccount:payments:api")}
             ]},
            {"type": FIC_TYPE, "apiVersion": "2023-01-31", "name": "payments/worker",
             "dependsOn": ["[resourceId('Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials', 'payments', 'api')]"],
             "properties": fic_props("system:serviceaccount:payments:worker")}
        ]
    });
    let (s, d) = deploy(&w, "wif", template).await;
    assert!(s == 200 || s == 201, "{s} {d}");
    assert_eq!(d["properties"]["provisioningState"], "Succeeded", "{d}");
    let uami = w.uami_id("rg1", "payments");
    let ids: Vec<&str> = d["properties"]["outputResources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            uami.clone(),
            format!("{uami}/federatedIdentityCredentials/api"),
            format!("{uami}/federatedIdentityCredentials/worker"),
        ]
    );

    let (s, list) = w
        .admin("GET", &format!("{uami}/federatedIdentityCredentials"), None)
        .await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list["value"].as_array().unwrap().len(), 2, "{list}");
    assert_eq!(list["value"][0]["type"], FIC_TYPE, "{list}");
    let (_, u) = w.admin("GET", &uami, None).await;
    let client_id = u["properties"]["clientId"].as_str().unwrap();
    let mut in_entra = entra_fics(&w, client_id).await;
    in_entra.sort();
    assert_eq!(
        in_entra,
        vec![
            (
                "api".to_owned(),
                "system:serviceaccount:payments:api".to_owned()
            ),
            (
                "worker".to_owned(),
                "system:serviceaccount:payments:worker".to_owned()
            ),
        ]
    );
}

/// A credential Azure would refuse fails the deployment with ARM's
/// `DeploymentFailed`, carrying the direct PUT's error; an api-version before
/// the type existed is refused the same way.
#[tokio::test]
async fn a_template_credential_is_validated_as_a_direct_put() {
    let w = start().await;
    w.create_rg("rg1").await;
    let (s, u) = w
        .admin(
            "PUT",
            &w.uami_id("rg1", "payments"),
            Some(json!({"location": "eastus"})),
        )
        .await;
    assert_eq!(s, 201, "{u}");
    for (name, api, props, expected) in [
        (
            "http-issuer",
            "2023-01-31",
            json!({"issuer": "http://issuer.example", "subject": "s"}),
            "BadRequest",
        ),
        (
            "old-api",
            "2018-11-30",
            fic_props("system:serviceaccount:a:b"),
            "NoRegisteredProviderFound",
        ),
    ] {
        let template = json!({
            "parameters": {"issuer": {"type": "string"}},
            "resources": [{"type": FIC_TYPE, "apiVersion": api, "name": format!("payments/{name}"),
                "properties": props}]
        });
        let (_, d) = deploy(&w, name, template).await;
        assert_eq!(d["properties"]["provisioningState"], "Failed", "{d}");
        let err = &d["properties"]["error"];
        assert_eq!(err["code"], "DeploymentFailed", "{d}");
        assert_eq!(err["details"][0]["code"], expected, "{d}");
    }
    let (s, list) = w
        .admin(
            "GET",
            &format!(
                "{}/federatedIdentityCredentials",
                w.uami_id("rg1", "payments")
            ),
            None,
        )
        .await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list["value"], json!([]), "nothing was written: {list}");
}
