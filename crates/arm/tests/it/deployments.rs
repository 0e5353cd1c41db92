//! `Microsoft.Resources/deployments` driven with the exact bodies `az vm create` sends
//! (docs/azure-protocol.md, ARM: template deployments), plus the catalog reads around it.

use http::StatusCode;
use serde_json::{Value, json};

use super::*;

const AZ_SUB: &str = "5ab5c71b-0000-4000-8000-000000000001";
const PASSWORD: &str = "myPassword12!";
const RG: &str = "myResourceGroup";

fn fixture(text: &str) -> Value {
    let text = text
        .replace(AZ_SUB, SUB)
        .replace("<the --admin-password value>", PASSWORD);
    serde_json::from_str(&text).unwrap()
}

fn system_assigned() -> Value {
    fixture(include_str!("fixtures/system-assigned-with-role.json"))
}

fn user_assigned() -> Value {
    fixture(include_str!("fixtures/user-assigned.json"))
}

fn deployment_path(name: &str) -> String {
    format!(
        "/subscriptions/{SUB}/resourcegroups/{RG}/providers/Microsoft.Resources/deployments/{name}"
    )
}

fn net_path(ty: &str, name: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/{ty}/{name}")
}

impl Harness {
    /// PUTs a deployment as `oid`; returns status, the async-operation path
    /// (without the public URL) and the body.
    async fn deploy_as(
        &self,
        oid: &str,
        name: &str,
        body: &Value,
    ) -> (StatusCode, Option<String>, Value) {
        let (s, headers, v) = self
            .raw(
                "PUT",
                &format!("{}?api-version=2024-11-01", deployment_path(name)),
                Some(&self.token(oid)),
                Some(&body.to_string()),
            )
            .await;
        let op = headers.get("azure-asyncoperation").map(|h| {
            let url = h.to_str().unwrap();
            assert_eq!(headers.get("retry-after").unwrap(), "1");
            url.strip_prefix("https://localhost:8443")
                .expect("absolute URL on ARM")
                .to_owned()
        });
        (s, op, v)
    }

    /// Polls the operation the way ARMPolling does: one GET, must be terminal.
    async fn poll(&self, op_path: &str) -> Value {
        assert!(op_path.contains("api-version="), "{op_path}");
        let (s, _, v) = self
            .raw("GET", op_path, Some(&self.token(ADMIN)), None)
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }
}

#[tokio::test]
async fn az_vm_create_with_system_identity_and_role() {
    let h = harness().await;
    h.rg(RG).await;
    h.clear_calls();
    let (s, op, v) = h
        .deploy_as(ADMIN, "vm_deploy_abc", &system_assigned())
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["properties"]["provisioningState"], "Succeeded", "{v}");
    assert_eq!(v["type"], "Microsoft.Resources/deployments");
    assert_eq!(v["properties"]["mode"], "Incremental");
    assert_eq!(
        v["properties"]["parameters"],
        json!({"adminPassword": {"type": "SecureString"}})
    );
    assert!(
        v["properties"]["timestamp"]
            .as_str()
            .unwrap()
            .starts_with("2023-11-14T")
    );
    assert!(v["properties"]["correlationId"].is_string());
    assert_eq!(
        v["properties"]["outputResources"].as_array().unwrap().len(),
        6
    );
    assert!(
        !v.to_string().contains(PASSWORD),
        "secure parameters never echo"
    );

    // ARMPolling: the status URL is terminal at the first poll, then the final GET.
    let status = h.poll(&op.unwrap()).await;
    assert_eq!(status, json!({"status": "Succeeded"}));
    let (s, d) = h.call("GET", &deployment_path("vm_deploy_abc"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(d["properties"]["provisioningState"], "Succeeded");
    assert_eq!(d["properties"]["outputs"], json!({}));

    // The VM, as az reads it next.
    let (s, vm) = h
        .call(
            "GET",
            &format!("{}?$expand=instanceView", vm_path(RG, "myVM")),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{vm}");
    assert_eq!(vm["identity"]["type"], "SystemAssigned");
    let principal = vm["identity"]["principalId"].as_str().unwrap().to_owned();
    assert!(
        h.shared.lock().service_principals.contains_key(&principal),
        "principal provisioned in the directory"
    );
    let props = &vm["properties"];
    assert_eq!(props["storageProfile"]["osDisk"]["osType"], "Windows");
    assert_eq!(
        props["storageProfile"]["imageReference"]["exactVersion"],
        "14393.7699.250110"
    );
    assert_eq!(props["osProfile"]["computerName"], "myVM");
    assert_eq!(props["osProfile"]["adminUsername"], "azureuser");
    assert!(props["osProfile"].get("adminPassword").is_none());
    assert!(props["osProfile"]["windowsConfiguration"].is_object());
    assert_eq!(
        props["instanceView"]["statuses"][1]["code"],
        "PowerState/running"
    );
    let vm_id = vm["id"].as_str().unwrap();
    assert!(
        h.calls().iter().any(|c| c.starts_with(&format!(
            "PutVm {vm_id} size=Standard_D2s_v5 os=Windows user=azureuser"
        ))),
        "{:?}",
        h.calls()
    );

    // The role assignment at the subscription scope, for that principal.
    let (s, ra) = h
        .call(
            "GET",
            &format!(
                "/subscriptions/{SUB}/providers/Microsoft.Authorization/roleAssignments?$filter=principalId%20eq%20'{principal}'"
            ),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let list = ra["value"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{ra}");
    assert_eq!(list[0]["name"], "12c639e8-863d-421b-8c5f-45d8d3ddcd58");
    assert_eq!(
        list[0]["properties"]["scope"],
        format!("/subscriptions/{SUB}")
    );
    assert!(
        list[0]["properties"]["roleDefinitionId"]
            .as_str()
            .unwrap()
            .ends_with("b24988ac-6180-42a0-ab88-20f7382dd24c")
    );

    // The network resources az reads after the deployment.
    let (s, nic) = h
        .call("GET", &net_path("networkInterfaces", "myVMVMNic"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{nic}");
    let ipc = &nic["properties"]["ipConfigurations"][0];
    assert_eq!(ipc["properties"]["privateIPAddress"], "10.0.0.4");
    assert_eq!(ipc["properties"]["primary"], true);
    assert_eq!(
        ipc["id"],
        format!(
            "{}/ipConfigurations/ipconfigmyVM",
            net_path("networkInterfaces", "myVMVMNic")
        )
    );
    let (s, ip) = h
        .call("GET", &net_path("publicIPAddresses", "myVMPublicIP"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        ip["properties"]["ipAddress"]
            .as_str()
            .unwrap()
            .parse::<std::net::Ipv4Addr>()
            .is_ok()
    );
    assert_eq!(ip["sku"]["name"], "Standard");
    let (s, sn) = h
        .call(
            "GET",
            &format!(
                "{}/subnets/MYVMSUBNET",
                net_path("virtualNetworks", "myVMVNET")
            ),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{sn}");
    assert_eq!(sn["properties"]["addressPrefix"], "10.0.0.0/24");
    let (s, vnets) = h
        .call("GET", &format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/virtualNetworks"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(vnets["value"].as_array().unwrap().len(), 1);
    let (s, nsg) = h
        .call("GET", &net_path("networkSecurityGroups", "myVMNSG"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        nsg["properties"]["securityRules"][0]["properties"]["destinationPortRange"],
        "3389"
    );

    // Re-running the same deployment is idempotent: 200, same principal.
    let (s, _, v) = h
        .deploy_as(ADMIN, "vm_deploy_abc", &system_assigned())
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["properties"]["provisioningState"], "Succeeded", "{v}");
    let (_, vm) = h.call("GET", &vm_path(RG, "myVM"), None).await;
    assert_eq!(vm["identity"]["principalId"], principal.as_str());
    let (_, nic) = h
        .call("GET", &net_path("networkInterfaces", "myVMVMNic"), None)
        .await;
    assert_eq!(
        nic["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"],
        "10.0.0.4"
    );
}

#[tokio::test]
async fn az_vm_create_with_user_assigned_identity() {
    let h = harness().await;
    h.rg(RG).await;
    let u = h.uami(RG, "myUserAssignedIdentity").await;
    // The user-assigned body reuses the first VM's subnet.
    let (s, _, v) = h.deploy_as(ADMIN, "vm_deploy_1", &system_assigned()).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, op, v) = h.deploy_as(ADMIN, "vm_deploy_2", &user_assigned()).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["properties"]["provisioningState"], "Succeeded", "{v}");
    assert_eq!(h.poll(&op.unwrap()).await["status"], "Succeeded");

    let (_, vm) = h
        .call(
            "GET",
            &format!("{}?$expand=instanceView", vm_path(RG, "myVM2")),
            None,
        )
        .await;
    assert_eq!(vm["identity"]["type"], "UserAssigned", "{vm}");
    assert!(vm["identity"].get("principalId").is_none());
    let map = vm["identity"]["userAssignedIdentities"]
        .as_object()
        .unwrap();
    assert_eq!(map.len(), 1);
    let (id, entry) = map.iter().next().unwrap();
    assert!(id.eq_ignore_ascii_case(u["id"].as_str().unwrap()), "{id}");
    assert_eq!(entry["principalId"], u["properties"]["principalId"]);
    assert_eq!(entry["clientId"], u["properties"]["clientId"]);
    assert!(vm["properties"]["instanceView"]["statuses"].is_array());

    // The second NIC in the subnet gets the next address.
    let (_, nic) = h
        .call("GET", &net_path("networkInterfaces", "myVM2VMNic"), None)
        .await;
    assert_eq!(
        nic["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"],
        "10.0.0.5"
    );
    let (_, ip1) = h
        .call("GET", &net_path("publicIPAddresses", "myVMPublicIP"), None)
        .await;
    let (_, ip2) = h
        .call("GET", &net_path("publicIPAddresses", "myVM2PublicIP"), None)
        .await;
    assert_ne!(
        ip1["properties"]["ipAddress"],
        ip2["properties"]["ipAddress"]
    );
}

#[tokio::test]
async fn nic_without_its_subnet_fails_the_deployment() {
    let h = harness().await;
    h.rg(RG).await;
    h.uami(RG, "myUserAssignedIdentity").await;
    let (s, op, v) = h.deploy_as(ADMIN, "vm_deploy_2", &user_assigned()).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["properties"]["provisioningState"], "Failed");
    let status = h.poll(&op.unwrap()).await;
    assert_eq!(status["status"], "Failed");
    assert_eq!(status["error"]["code"], "DeploymentFailed");
    assert_eq!(
        status["error"]["details"][0]["code"],
        "InvalidResourceReference"
    );
    let (s, _) = h.call("GET", &vm_path(RG, "myVM2"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn unsupported_functions_and_cycles_are_invalid_templates() {
    let h = harness().await;
    h.rg(RG).await;
    let mut body = system_assigned();
    body["properties"]["template"]["resources"][0]["tags"] = json!({"created": "[utcNow()]"});
    let (s, op, v) = h.deploy_as(ADMIN, "d1", &body).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(op.is_none());
    assert_eq!(v["error"]["code"], "InvalidTemplate");
    assert_eq!(
        v["error"]["message"],
        "The template function 'utcNow' is not supported by misim."
    );

    let mut body = system_assigned();
    body["properties"]["template"]["resources"][0]["dependsOn"] =
        json!(["Microsoft.Compute/virtualMachines/myVM"]);
    let (s, _, v) = h.deploy_as(ADMIN, "d2", &body).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["code"], "InvalidTemplate");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Circular dependency"),
        "{v}"
    );

    let mut body = system_assigned();
    body["properties"]["parameters"] = json!({});
    let (s, _, v) = h.deploy_as(ADMIN, "d3", &body).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("adminPassword"),
        "{v}"
    );

    // Nothing was created or recorded.
    let (s, _) = h.call("GET", &vm_path(RG, "myVM"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, l) = h
        .call(
            "GET",
            &format!(
                "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Resources/deployments"
            ),
            None,
        )
        .await;
    assert_eq!(l["value"], json!([]));
}

#[tokio::test]
async fn deployments_are_authorized_like_direct_puts() {
    let h = harness().await;
    h.rg(RG).await;
    let rg_scope = format!("/subscriptions/{SUB}/resourceGroups/{RG}");
    // Reader: the deployment itself is refused.
    let reader = "66666666-6666-4666-8666-666666666666";
    h.principal(reader);
    h.assign(reader, READER, &format!("/subscriptions/{SUB}"))
        .await;
    let (s, op, v) = h.deploy_as(reader, "vm_deploy_r", &system_assigned()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(op.is_none());
    assert_eq!(v["error"]["code"], "AuthorizationFailed");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Microsoft.Resources/deployments/write")
    );

    // VM Contributor may deploy, but not write a virtual network, an NSG, a
    // public IP or a role assignment: ARM's preflight refuses the deployment
    // (400 InvalidTemplateDeployment, one entry per refused template resource,
    // in template order) and nothing is deployed or recorded.
    let dev = "88888888-8888-4888-8888-888888888888";
    h.principal(dev);
    h.assign(dev, VM_CONTRIBUTOR, &rg_scope).await;
    let (s, op, v) = h.deploy_as(dev, "vm_deploy_d", &system_assigned()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(op.is_none());
    assert_eq!(v["error"]["code"], "InvalidTemplateDeployment");
    let refused = |name: &str, ty: &str, id: &str| {
        format!(
            "Authorization failed for template resource '{name}' of type '{ty}'. The client '{dev}' with object id '{dev}' does not have permission to perform action '{ty}/write' at scope '{id}'."
        )
    };
    let ra = "12c639e8-863d-421b-8c5f-45d8d3ddcd58";
    assert_eq!(
        v["error"]["message"],
        format!(
            "Deployment failed with multiple errors: '{}:{}:{}:{}'",
            refused(
                "myVMVNET",
                "Microsoft.Network/virtualNetworks",
                &net_path("virtualNetworks", "myVMVNET")
            ),
            refused(
                "myVMNSG",
                "Microsoft.Network/networkSecurityGroups",
                &net_path("networkSecurityGroups", "myVMNSG")
            ),
            refused(
                "myVMPublicIP",
                "Microsoft.Network/publicIPAddresses",
                &net_path("publicIPAddresses", "myVMPublicIP")
            ),
            refused(
                ra,
                "Microsoft.Authorization/roleAssignments",
                &format!(
                    "/subscriptions/{SUB}/providers/Microsoft.Authorization/roleAssignments/{ra}"
                )
            ),
        )
    );
    // A direct PUT of the same resource gives ARM's usual 403.
    let (s, direct) = h
        .call_as(
            dev,
            "PUT",
            &net_path("virtualNetworks", "myVMVNET"),
            Some(json!({"location": "eastus"})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(direct["error"]["code"], "AuthorizationFailed");

    for (s, _) in [
        h.call("GET", &vm_path(RG, "myVM"), None).await,
        h.call("GET", &net_path("networkInterfaces", "myVMVMNic"), None)
            .await,
        h.call("GET", &deployment_path("vm_deploy_d"), None).await,
    ] {
        assert_eq!(s, StatusCode::NOT_FOUND);
    }

    // With only the role assignment refused, the message is the single form.
    let mut body = system_assigned();
    let resources = body["properties"]["template"]["resources"]
        .as_array_mut()
        .unwrap();
    resources.retain(|r| r["type"] == "Microsoft.Authorization/roleAssignments");
    resources[0]["dependsOn"] = json!([]);
    resources[0]["properties"]["principalId"] = json!(dev);
    let (s, _, v) = h.deploy_as(dev, "vm_deploy_ra", &body).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(
        v["error"]["message"],
        format!(
            "The template deployment failed with error: '{}'.",
            refused(
                ra,
                "Microsoft.Authorization/roleAssignments",
                &format!(
                    "/subscriptions/{SUB}/providers/Microsoft.Authorization/roleAssignments/{ra}"
                )
            )
        )
    );
}

/// `az vm create --assign-identity <uami>` on an existing network: the
/// deployment passes preflight (VM Contributor writes NICs and VMs), and the
/// VM write fails its linked check on the identity: the deployment fails with
/// `LinkedAuthorizationFailed`, until Managed Identity Operator is granted.
#[tokio::test]
async fn attaching_a_user_assigned_identity_is_a_linked_authorization() {
    let h = harness().await;
    h.rg(RG).await;
    let u = h.uami(RG, "myUserAssignedIdentity").await;
    let uami = u["id"].as_str().unwrap().to_owned();
    let (s, _, v) = h.deploy_as(ADMIN, "vm_deploy_1", &system_assigned()).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let dev = "88888888-8888-4888-8888-888888888888";
    h.principal(dev);
    h.assign(
        dev,
        VM_CONTRIBUTOR,
        &format!("/subscriptions/{SUB}/resourceGroups/{RG}"),
    )
    .await;

    // The user-assigned body without its NSG and public IP.
    let mut body = user_assigned();
    let resources = body["properties"]["template"]["resources"]
        .as_array_mut()
        .unwrap();
    resources.retain(|r| {
        r["type"] == "Microsoft.Network/networkInterfaces"
            || r["type"] == "Microsoft.Compute/virtualMachines"
    });
    let nic = &mut resources[0];
    nic["dependsOn"] = json!([]);
    nic["properties"]
        .as_object_mut()
        .unwrap()
        .remove("networkSecurityGroup");
    nic["properties"]["ipConfigurations"][0]["properties"]
        .as_object_mut()
        .unwrap()
        .remove("publicIPAddress");

    let (s, op, v) = h.deploy_as(dev, "vm_deploy_2", &body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let status = h.poll(&op.unwrap()).await;
    assert_eq!(status["status"], "Failed", "{status}");
    assert_eq!(status["error"]["code"], "DeploymentFailed");
    let detail = &status["error"]["details"][0];
    let vm = format!(
        "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines/myVM2"
    );
    assert_eq!(detail["code"], "LinkedAuthorizationFailed", "{detail}");
    assert_eq!(
        detail["message"],
        format!(
            "The client '{dev}' with object id '{dev}' has permission to perform action 'Microsoft.Compute/virtualMachines/write' on scope '{vm}'; however, it does not have permission to perform action(s) 'Microsoft.ManagedIdentity/userAssignedIdentities/assign/action' on the linked scope(s) '{uami}' (respectively) or the linked scope(s) are invalid."
        )
    );
    let (s, _) = h.call("GET", &vm_path(RG, "myVM2"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    h.assign(dev, MI_OPERATOR, &uami).await;
    let (s, op, v) = h.deploy_as(dev, "vm_deploy_3", &body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(h.poll(&op.unwrap()).await["status"], "Succeeded");
}

#[tokio::test]
async fn templates_with_references_outputs_and_resource_scoped_assignments() {
    let h = harness().await;
    h.rg(RG).await;
    let uami_ref = "[reference(resourceId('Microsoft.ManagedIdentity/userAssignedIdentities', parameters('identityName')), '2023-01-31')]";
    let template = json!({
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0",
        "parameters": {
            "identityName": {"type": "string", "defaultValue": "id1"},
            "vaultName": {"type": "string"},
        },
        "variables": {
            "secretsUser": "[subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '4633458b-17de-408a-b874-0445c86b69e6')]",
        },
        "resources": [
            {
                "type": "Microsoft.KeyVault/vaults/providers/roleAssignments",
                "apiVersion": "2022-04-01",
                "name": "[concat(parameters('vaultName'), '/Microsoft.Authorization/', guid(parameters('vaultName'), parameters('identityName')))]",
                "dependsOn": [
                    "[resourceId('Microsoft.KeyVault/vaults', parameters('vaultName'))]",
                    "[concat('Microsoft.ManagedIdentity/userAssignedIdentities/', parameters('identityName'))]",
                ],
                "properties": {
                    "roleDefinitionId": "[variables('secretsUser')]",
                    "principalId": format!("{}.principalId", &uami_ref[..uami_ref.len() - 1]) + "]",
                    "principalType": "ServicePrincipal",
                },
            },
            {
                "type": "Microsoft.ManagedIdentity/userAssignedIdentities",
                "apiVersion": "2023-01-31",
                "name": "[parameters('identityName')]",
                "location": "[resourceGroup().location]",
            },
            {
                "type": "Microsoft.KeyVault/vaults",
                "apiVersion": "2023-07-01",
                "name": "[parameters('vaultName')]",
                "location": "[resourceGroup().location]",
                "properties": {"tenantId": "[subscription().tenantId]", "sku": {"family": "A", "name": "standard"}},
            },
        ],
        "outputs": {
            "clientId": {"type": "string", "value": format!("{}.clientId", &uami_ref[..uami_ref.len() - 1]) + "]"},
            "literal": {"type": "string", "value": "[[not evaluated]"},
        },
    });
    let body = json!({"properties": {"template": template, "parameters": {"vaultName": {"value": "kv1"}}, "mode": "Incremental"}});
    let (s, _, v) = h.deploy_as(ADMIN, "kv", &body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["properties"]["provisioningState"], "Succeeded", "{v}");
    let (_, u) = h.call("GET", &uami_path(RG, "id1"), None).await;
    assert_eq!(
        v["properties"]["outputs"]["clientId"],
        json!({"type": "String", "value": u["properties"]["clientId"]})
    );
    assert_eq!(
        v["properties"]["outputs"]["literal"]["value"],
        "[not evaluated]"
    );
    assert_eq!(
        v["properties"]["parameters"]["identityName"],
        json!({"type": "String", "value": "id1"})
    );
    // Order: vault and identity before the assignment that depends on them.
    let ids: Vec<&str> = v["properties"]["outputResources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(ids[2].contains("/providers/Microsoft.KeyVault/vaults/kv1/providers/Microsoft.Authorization/roleAssignments/"), "{ids:?}");

    // The assignment lives at the vault scope and grants data access there.
    let vault_scope = vault_path(RG, "kv1");
    let (_, ra) = h
        .call(
            "GET",
            &format!(
                "{vault_scope}/providers/Microsoft.Authorization/roleAssignments?$filter=atScope()"
            ),
            None,
        )
        .await;
    let mine: Vec<&Value> = ra["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["properties"]["principalId"] == u["properties"]["principalId"])
        .collect();
    assert_eq!(mine.len(), 1, "{ra}");
    assert_eq!(mine[0]["properties"]["scope"], vault_scope);
}

#[tokio::test]
async fn catalog_reads_around_az_vm_create() {
    let h = harness().await;
    let loc = format!("/subscriptions/{SUB}/providers/Microsoft.Compute/locations/eastus");
    let versions = format!(
        "{loc}/publishers/MicrosoftWindowsServer/artifacttypes/vmimage/offers/WindowsServer/skus/2016-datacenter-gensecond/versions"
    );
    let (s, v) = h
        .call(
            "GET",
            &format!("{versions}?$top=1&$orderby=name%20desc"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v.as_array().unwrap().len(), 1);
    let latest = v[0]["name"].as_str().unwrap();
    assert_eq!(v[0]["location"], "eastus");
    let (s, one) = h.call("GET", &format!("{versions}/{latest}"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        one["properties"]["osDiskImage"]["operatingSystem"],
        "Windows"
    );
    assert_eq!(one["properties"]["hyperVGeneration"], "V2");
    assert_eq!(one["properties"]["architecture"], "x64");
    assert_eq!(one["name"], latest);
    let ubuntu = format!(
        "{loc}/publishers/canonical/artifacttypes/vmimage/offers/0001-com-ubuntu-server-jammy/skus/22_04-lts-gen2/versions/latest"
    );
    let (s, one) = h.call("GET", &ubuntu, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(one["properties"]["osDiskImage"]["operatingSystem"], "Linux");
    let (s, e) = h.call("GET", &format!("{versions}/1.2.3"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{e}");

    let (s, sizes) = h.call("GET", &format!("{loc}/vmSizes"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        sizes["value"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["name"] == "Standard_D2s_v5")
    );
    let (s, skus) = h
        .call("GET", &format!("/subscriptions/{SUB}/providers/Microsoft.Compute/skus?$filter=location%20eq%20'eastus'"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(skus["value"][0]["resourceType"], "virtualMachines");
    let (s, p) = h
        .call(
            "GET",
            &format!("/subscriptions/{SUB}/providers/Microsoft.Network"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(p["registrationState"], "Registered");
    assert!(
        p["resourceTypes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["resourceType"] == "virtualNetworks")
    );
    let (s, e) = h
        .call(
            "GET",
            &format!("/subscriptions/{SUB}/providers/Contoso.Widgets"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(e["error"]["code"], "InvalidResourceNamespace");
    let (s, l) = h
        .call("GET", &format!("/subscriptions/{SUB}/locations"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        l["value"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["name"] == "eastus")
    );
}

#[tokio::test]
async fn network_resources_crud_directly() {
    let h = harness().await;
    h.rg(RG).await;
    let vnet = json!({"location": "eastus", "properties": {"addressSpace": {"addressPrefixes": ["10.1.0.0/16"]},
        "subnets": [{"name": "default", "properties": {"addressPrefix": "10.1.2.0/24"}}]}});
    let (s, v) = h
        .call(
            "PUT",
            &net_path("virtualNetworks", "v1"),
            Some(vnet.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["properties"]["provisioningState"], "Succeeded");
    assert_eq!(
        v["properties"]["subnets"][0]["id"],
        format!("{}/subnets/default", net_path("virtualNetworks", "v1"))
    );
    let (s, _) = h
        .call("PUT", &net_path("virtualNetworks", "v1"), Some(vnet))
        .await;
    assert_eq!(s, StatusCode::OK);
    let subnet = format!("{}/subnets/default", net_path("virtualNetworks", "v1"));
    let nic = |ip: Option<&str>| {
        let mut p = json!({"privateIPAllocationMethod": "Dynamic", "subnet": {"id": subnet}});
        if let Some(ip) = ip {
            p = json!({"privateIPAllocationMethod": "Static", "privateIPAddress": ip, "subnet": {"id": subnet}});
        }
        json!({"location": "eastus", "properties": {"ipConfigurations": [{"name": "c1", "properties": p}]}})
    };
    let (_, a) = h
        .call(
            "PUT",
            &net_path("networkInterfaces", "a"),
            Some(nic(Some("10.1.2.4"))),
        )
        .await;
    assert_eq!(
        a["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"],
        "10.1.2.4"
    );
    let (_, b) = h
        .call("PUT", &net_path("networkInterfaces", "b"), Some(nic(None)))
        .await;
    assert_eq!(
        b["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"],
        "10.1.2.5"
    );
    let (s, _) = h
        .call("DELETE", &net_path("networkInterfaces", "a"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = h
        .call("DELETE", &net_path("networkInterfaces", "a"), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, c) = h
        .call("PUT", &net_path("networkInterfaces", "c"), Some(nic(None)))
        .await;
    assert_eq!(
        c["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"],
        "10.1.2.4"
    );
    let (s, l) = h
        .call(
            "GET",
            &format!("{}/subnets", net_path("virtualNetworks", "v1")),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(l["value"].as_array().unwrap().len(), 1);
    // Deleting the group takes the network resources with it.
    let (s, _) = h.call("DELETE", &rg_path(RG), None).await;
    assert_eq!(s, StatusCode::OK);
    h.rg(RG).await;
    let (s, _) = h
        .call("GET", &net_path("networkInterfaces", "c"), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// `reference()` reads as the deployer: a template cannot leak a resource its
/// deployer may not read directly.
#[tokio::test]
async fn reference_is_authorized_as_the_deployer() {
    let h = harness().await;
    h.rg(RG).await;
    h.rg("secretRg").await;
    let hidden = format!(
        "/subscriptions/{SUB}/resourceGroups/secretRg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/hidden"
    );
    let (s, uami) = h
        .call("PUT", &hidden, Some(json!({"location": "eastus"})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{uami}");
    let client_id = uami["properties"]["clientId"].as_str().unwrap().to_owned();

    let dev = "99999999-9999-4999-8999-999999999999";
    h.principal(dev);
    h.assign(
        dev,
        OWNER,
        &format!("/subscriptions/{SUB}/resourceGroups/{RG}"),
    )
    .await;
    let template = json!({"properties": {"mode": "Incremental", "template": {
        "$schema": "https://schema.management.azure.com/schemas/2015-01-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0", "resources": [],
        "outputs": {"leak": {"type": "string",
            "value": format!("[reference('{hidden}', '2023-01-31').clientId]")}}}}});
    let (s, _op, v) = h.deploy_as(dev, "leak", &template).await;
    let text = v.to_string();
    assert!(
        !text.contains(&client_id),
        "the deployment leaked {client_id}: {text}"
    );
    assert!(
        s.is_client_error() || v["properties"]["provisioningState"] == "Failed",
        "{s} {v}"
    );
    assert!(
        text.contains("AuthorizationFailed") || text.contains("does not have authorization"),
        "{text}"
    );

    // The administrator (Owner of the subscription) may reference it.
    let (s, _op, v) = h.deploy_as(ADMIN, "allowed", &template).await;
    assert!(s.is_success(), "{v}");
}

/// A template whose resource (a user-assigned identity) is named by the
/// first of `vars`.
fn named_by(vars: serde_json::Map<String, Value>, top: &str) -> Value {
    json!({"properties": {"mode": "Incremental", "template": {
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0",
        "variables": vars,
        "resources": [{"type": "Microsoft.ManagedIdentity/userAssignedIdentities",
            "apiVersion": "2023-01-31", "name": format!("[variables('{top}')]"),
            "location": "eastus"}],
    }}})
}

/// `c0 = [variables('c1')]`, …, `c{n-1} = 'chained'`: `n` variables, each
/// naming the next.
fn chain(n: usize) -> Value {
    let mut vars = serde_json::Map::new();
    for i in 0..n - 1 {
        vars.insert(format!("c{i}"), json!(format!("[variables('c{}')]", i + 1)));
    }
    vars.insert(format!("c{}", n - 1), json!("chained"));
    named_by(vars, "c0")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2000_deep_variable_chain_is_an_invalid_template_and_arm_keeps_serving() {
    let h = Arc::new(harness().await);
    h.rg(RG).await;
    // On a worker task, like a served request: before the budget this
    // overflowed the stack and aborted the process.
    let (s, op, v) = tokio::spawn({
        let h = h.clone();
        async move { h.deploy_as(ADMIN, "chain", &chain(2000)).await }
    })
    .await
    .unwrap();
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(op.is_none());
    assert_eq!(v["error"]["code"], "InvalidTemplate");
    assert_eq!(
        v["error"]["message"],
        "Deployment template validation failed: 'The number of template variables limit exceeded. Limit: '512' and actual: '2000'. Please see https://aka.ms/arm-template/#variables for usage details.'."
    );
    // Within the variable limit, the depth budget refuses it.
    let (s, _, v) = tokio::spawn({
        let h = h.clone();
        async move { h.deploy_as(ADMIN, "chain", &chain(500)).await }
    })
    .await
    .unwrap();
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["code"], "InvalidTemplate");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("Deployment template validation failed: 'The template evaluation nests deeper than 256 levels"),
        "{msg}"
    );
    // Nothing was recorded or deployed, and ARM still answers.
    let (s, _) = h.call("GET", &deployment_path("chain"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = h.call("GET", &uami_path(RG, "chained"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deepest_allowed_chain_runs_on_a_worker_stack() {
    // The resource name is 1 level, its call 2, and each variable 3 more:
    // 85 variables nest 4 + 3 * 84 = 256 levels, the most the budget allows.
    let h = Arc::new(harness().await);
    h.rg(RG).await;
    let (s, _, v) = tokio::spawn({
        let h = h.clone();
        async move { h.deploy_as(ADMIN, "deepest", &chain(85)).await }
    })
    .await
    .unwrap();
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["properties"]["provisioningState"], "Succeeded", "{v}");
    let (s, v) = h.call("GET", &uami_path(RG, "chained"), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _, v) = h.deploy_as(ADMIN, "deeper", &chain(86)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("deeper than 256 levels"),
        "{v}"
    );
}

#[tokio::test]
async fn doubling_values_is_refused_by_the_size_budget_before_anything_is_deployed() {
    let h = harness().await;
    h.rg(RG).await;
    // d0 is 1 KB; d{i} = concat(d{i-1}, d{i-1}) would reach 1 GB at d20.
    let mut vars = serde_json::Map::new();
    vars.insert("d0".into(), json!("x".repeat(1024)));
    for i in 1..=20 {
        vars.insert(
            format!("d{i}"),
            json!(format!(
                "[concat(variables('d{p}'), variables('d{p}'))]",
                p = i - 1
            )),
        );
    }
    vars.insert("small".into(), json!("doubled"));
    let mut body = named_by(vars, "small");
    body["properties"]["template"]["outputs"] =
        json!({"big": {"type": "string", "value": "[variables('d20')]"}});
    let (s, op, v) = h.deploy_as(ADMIN, "double", &body).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(op.is_none());
    assert_eq!(v["error"]["code"], "InvalidTemplate");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("produces a value larger than 4194304 bytes"),
        "{msg}"
    );
    // The identity the template names was not deployed: the budget is
    // checked before the first resource.
    let (s, v) = h.call("GET", &uami_path(RG, "doubled"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, _) = h.call("GET", &deployment_path("double"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn values_nested_deeper_than_stored_records_may_be_are_an_invalid_template() {
    // Three variables of 60 nested objects each, the innermost naming the
    // next: an output nested 180 levels deep, more than a stored record may
    // nest (serde_json reads at most 128 levels back).
    let h = harness().await;
    h.rg(RG).await;
    let nest = |inner: Value| (0..60).fold(inner, |v, _| json!({ "x": v }));
    let mut vars = serde_json::Map::new();
    vars.insert("a".into(), nest(json!("[variables('b')]")));
    vars.insert("b".into(), nest(json!("[variables('c')]")));
    vars.insert("c".into(), nest(json!("bottom")));
    vars.insert("small".into(), json!("nested"));
    let mut body = named_by(vars, "small");
    body["properties"]["template"]["outputs"] =
        json!({"deep": {"type": "object", "value": "[variables('a')]"}});
    let (s, op, v) = h.deploy_as(ADMIN, "nested", &body).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(op.is_none());
    assert_eq!(v["error"]["code"], "InvalidTemplate");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("The template nests values deeper than 64 levels"),
        "{msg}"
    );
    let (s, _) = h.call("GET", &deployment_path("nested"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = h.call("GET", &uami_path(RG, "nested"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
}
