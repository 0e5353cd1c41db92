//! The end-to-end flows: the seven steps for system- and user-assigned identities, restart,
//! and vault re-creation.

use misim_proto::entra::v1::{GetServicePrincipalRequest, ServicePrincipalType};
use misim_proto::imds::v1::{GetVmRequest, IdentityKind};
use serde_json::json;

use crate::harness::{KV_SECRETS_USER, VAULT_AUD, World, now_unix, start, start_in};

/// The seed's seven steps for a system-assigned identity, asserting each step's effect.
#[tokio::test(flavor = "multi_thread")]
async fn system_assigned_identity_seven_steps() {
    let w = start().await;
    w.create_rg("myResourceGroup").await;
    w.create_vault("myResourceGroup", "kv1").await;
    w.create_vault("myResourceGroup", "kv2").await;
    w.set_secret("kv1", "db-password", "s3cret").await;
    w.set_secret("kv2", "other", "nope").await;

    // 1. ARM receives a request to enable the system-assigned identity (at creation).
    let vm = w
        .create_vm("myResourceGroup", "myVM", json!({"type": "SystemAssigned"}))
        .await;
    let principal = vm["identity"]["principalId"]
        .as_str()
        .expect("principalId")
        .to_owned();
    assert_eq!(vm["identity"]["type"], "SystemAssigned");
    assert_eq!(vm["identity"]["tenantId"], w.tid());

    // 2. ARM created the service principal in Entra, managed-identity type, with a key credential.
    let sp =
        w.sb.directory()
            .unwrap()
            .get_service_principal(GetServicePrincipalRequest {
                object_id: principal.clone(),
                app_id: String::new(),
            })
            .await
            .expect("service principal exists")
            .into_inner();
    assert_eq!(sp.r#type(), ServicePrincipalType::ManagedIdentity);
    assert_eq!(sp.key_credentials.len(), 1);
    let vm_id = w.vm_id("myResourceGroup", "myVM");
    assert!(
        sp.alternative_names
            .iter()
            .any(|n| n.eq_ignore_ascii_case(&vm_id)),
        "{:?}",
        sp.alternative_names
    );

    // 3. ARM configured the VM's IMDS with the client id and certificate.
    let imds_vm =
        w.sb.imds_control()
            .unwrap()
            .get_vm(GetVmRequest {
                resource_id: vm_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
    assert_eq!(imds_vm.identities.len(), 1);
    assert_eq!(imds_vm.identities[0].kind(), IdentityKind::SystemAssigned);
    assert_eq!(imds_vm.identities[0].client_id, sp.app_id);

    // 4. A role assignment grants the VM's principal Key Vault Secrets User on kv1 only.
    w.assign_role(
        &w.vault_id("myResourceGroup", "kv1"),
        &principal,
        KV_SECRETS_USER,
    )
    .await;

    // 5. Code in the VM requests a token from its IMDS.
    let endpoint = w.imds_endpoint(&vm_id).await;
    let (status, tok) = w.imds_token(&endpoint, VAULT_AUD, None).await;
    assert_eq!(status, 200, "{tok}");
    for field in [
        "access_token",
        "client_id",
        "expires_in",
        "expires_on",
        "ext_expires_in",
        "not_before",
        "resource",
        "token_type",
    ] {
        assert!(
            tok[field].is_string(),
            "{field} must be a JSON string: {tok}"
        );
    }
    assert_eq!(tok["client_id"], sp.app_id.as_str());
    let access = tok["access_token"].as_str().unwrap();

    // 6. IMDS called Entra with the client id and certificate; Entra signed a JWT.
    let claims = w.verify_with_jwks(access, VAULT_AUD).await;
    assert_eq!(claims.oid, principal);
    assert_eq!(claims.sub, principal);
    assert_eq!(claims.appid.as_deref(), Some(sp.app_id.as_str()));
    assert_eq!(claims.tid, w.tid());
    assert_eq!(claims.iss, format!("https://sts.windows.net/{}/", w.tid()));
    assert_eq!(claims.ver.as_deref(), Some("1.0"));
    assert!(
        claims
            .xms_mirid
            .as_deref()
            .unwrap()
            .eq_ignore_ascii_case(&vm_id)
    );
    assert_eq!(
        tok["expires_on"].as_str().unwrap().parse::<i64>().unwrap(),
        claims.exp
    );
    assert!(claims.exp > now_unix() + 3600);

    // 7. The code calls Key Vault with the token: 200 on kv1, 403 on kv2.
    let (s, secret) = w.get_secret("kv1", "db-password", access).await;
    assert_eq!(s, 200, "{secret}");
    assert_eq!(secret["value"], "s3cret");
    let (s, denied) = w.get_secret("kv2", "other", access).await;
    assert_eq!(s, 403, "{denied}");
    assert_eq!(denied["error"]["code"], "Forbidden");

    // Enabling on an existing VM via PATCH works the same way.
    w.create_vm("myResourceGroup", "plainVM", json!({"type": "None"}))
        .await;
    let (s, patched) = w
        .admin(
            "PATCH",
            &w.vm_id("myResourceGroup", "PLAINvm"),
            Some(json!({"identity": {"type": "SystemAssigned"}})),
        )
        .await;
    assert_eq!(s, 200, "{patched}");
    let p2 = patched["identity"]["principalId"].as_str().unwrap();
    let ep2 = w
        .imds_endpoint(&w.vm_id("myResourceGroup", "plainVM"))
        .await;
    let (s, tok2) = w.imds_token(&ep2, VAULT_AUD, None).await;
    assert_eq!(s, 200, "{tok2}");
    // ...but without a role assignment Key Vault says 403.
    let (s, _) = w
        .get_secret("kv1", "db-password", tok2["access_token"].as_str().unwrap())
        .await;
    assert_eq!(s, 403);
    assert_ne!(p2, principal);
    w.sb.shutdown().await.unwrap();
}

/// User-assigned: created standalone, assigned to two VMs, tokens on both by
/// client_id, then deleted: its principal is gone and tokens are refused.
#[tokio::test(flavor = "multi_thread")]
async fn user_assigned_identity_shared_then_deleted() {
    let w = start().await;
    w.create_rg("rg1").await;
    w.create_vault("rg1", "kv1").await;
    w.set_secret("kv1", "shared", "v1").await;

    let uami_id = w.uami_id("rg1", "myUserAssignedIdentity");
    let (s, uami) = w
        .admin("PUT", &uami_id, Some(json!({"location": "eastus"})))
        .await;
    assert_eq!(s, 201, "{uami}");
    let client_id = uami["properties"]["clientId"].as_str().unwrap().to_owned();
    let principal = uami["properties"]["principalId"]
        .as_str()
        .unwrap()
        .to_owned();
    w.assign_role(&w.vault_id("rg1", "kv1"), &principal, KV_SECRETS_USER)
        .await;

    let identity = json!({"type": "UserAssigned", "userAssignedIdentities": {uami_id.clone(): {}}});
    let mut endpoints = Vec::new();
    for vm in ["vmA", "vmB"] {
        let v = w.create_vm("rg1", vm, identity.clone()).await;
        let entry = &v["identity"]["userAssignedIdentities"]
            .as_object()
            .unwrap()
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(&uami_id))
            .expect("uami listed")
            .1
            .clone();
        assert_eq!(entry["clientId"], client_id.as_str());
        endpoints.push(w.imds_endpoint(&w.vm_id("rg1", vm)).await);
    }
    for ep in &endpoints {
        let (s, tok) = w
            .imds_token(ep, VAULT_AUD, Some(("client_id", &client_id)))
            .await;
        assert_eq!(s, 200, "{tok}");
        let claims = w
            .verify_with_jwks(tok["access_token"].as_str().unwrap(), VAULT_AUD)
            .await;
        assert_eq!(claims.oid, principal);
        assert!(
            claims
                .xms_mirid
                .as_deref()
                .unwrap()
                .eq_ignore_ascii_case(&uami_id)
        );
        let (s, secret) = w
            .get_secret("kv1", "shared", tok["access_token"].as_str().unwrap())
            .await;
        assert_eq!(s, 200, "{secret}");
    }

    let (s, _) = w.admin("DELETE", &uami_id, None).await;
    assert!(s == 200 || s == 204);
    let gone =
        w.sb.directory()
            .unwrap()
            .get_service_principal(GetServicePrincipalRequest {
                object_id: principal.clone(),
                app_id: String::new(),
            })
            .await;
    assert_eq!(gone.unwrap_err().code(), tonic::Code::NotFound);
    for ep in &endpoints {
        let (s, err) = w
            .imds_token(ep, VAULT_AUD, Some(("client_id", &client_id)))
            .await;
        assert_eq!(s, 400, "{err}");
        assert_eq!(err["error"], "invalid_request");
        assert_eq!(err["error_description"], "Identity not found");
    }
    w.sb.shutdown().await.unwrap();
}

/// Stop the sandbox and start it on the same data dir: same tenant and keys,
/// the VM's identity still gets tokens, and a token issued before the restart
/// still validates at Key Vault.
#[tokio::test(flavor = "multi_thread")]
async fn restart_keeps_identities_keys_and_tokens() {
    let w = start().await;
    let (vm_id, principal) = w
        .vm_reading_vault(("rg1", "vm1", "kv1"), ("s", "kept"))
        .await;
    let endpoint = w.imds_endpoint(&vm_id).await;
    let (s, before) = w.imds_token(&endpoint, VAULT_AUD, None).await;
    assert_eq!(s, 200);
    let old_token = before["access_token"].as_str().unwrap().to_owned();
    let tenant = w.tid().to_owned();

    let World { sb, dir, .. } = w;
    sb.shutdown().await.unwrap();
    let w = start_in(dir).await;
    assert_eq!(w.tid(), tenant);

    let (s, secret) = w.get_secret("kv1", "s", &old_token).await;
    assert_eq!(s, 200, "token from before the restart: {secret}");
    let (s, vmv) = w.admin("GET", &vm_id, None).await;
    assert_eq!(s, 200);
    assert_eq!(vmv["identity"]["principalId"], principal.as_str());
    assert_eq!(
        w.imds_endpoint(&vm_id).await,
        endpoint,
        "the VM keeps its IMDS endpoint (address and port)"
    );
    let (s, after) = w.imds_token(&endpoint, VAULT_AUD, None).await;
    assert_eq!(s, 200, "{after}");
    let (s, _) = w
        .get_secret("kv1", "s", after["access_token"].as_str().unwrap())
        .await;
    assert_eq!(s, 200);
    w.sb.shutdown().await.unwrap();
}

/// A vault deleted and re-created under the same name starts empty: its
/// secrets belonged to the old vault, not to the name.
#[tokio::test(flavor = "multi_thread")]
async fn recreated_vault_does_not_inherit_secrets() {
    let w = start().await;
    w.create_rg("rg1").await;
    w.create_vault("rg1", "kv1").await;
    w.set_secret("kv1", "old", "from the first vault").await;
    let (s, _) = w.admin("DELETE", &w.vault_id("rg1", "kv1"), None).await;
    assert!(s == 200 || s == 204);
    w.create_vault("rg1", "kv1").await;
    let token = w.admin_token("https://vault.azure.net/.default").await;
    let (s, v) = w.get_secret("kv1", "old", &token).await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(v["error"]["code"], "SecretNotFound");
    w.sb.shutdown().await.unwrap();
}
