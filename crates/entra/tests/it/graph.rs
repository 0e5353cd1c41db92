//! Microsoft Graph (`/v1.0`): applications, service principals, credentials
//! and the token endpoints authenticating application principals with them.

use super::*;
use misim_entra::GraphPermission;

const GRAPH_V1: &str = "https://graph.microsoft.com";

pub(crate) async fn token_for(
    entra: &Entra,
    client: &str,
    secret: &str,
    scope: &str,
) -> (StatusCode, Value) {
    post_form(
        entra,
        &format!("/{TID}/oauth2/v2.0/token"),
        &secret_form(client, secret, ("scope", scope)),
    )
    .await
}

/// A Graph token for the admin, with the audience the Azure CLI asks for (`{entra}/`).
pub(crate) async fn admin_graph_token(entra: &Entra) -> String {
    let (s, b) = token_for(
        entra,
        ADMIN_APP,
        ADMIN_SECRET,
        &format!("{PUBLIC}//.default"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let token = b["access_token"].as_str().unwrap().to_owned();
    assert_eq!(raw_claims(&token)["aud"], format!("{PUBLIC}/"));
    token
}

pub(crate) async fn graph(
    entra: &Entra,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, http::HeaderMap, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("x-ms-client-request-id", "graph-corr");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let body = match body {
        Some(v) => {
            req = req.header("content-type", "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    send(entra, req.body(body).unwrap()).await
}

pub(crate) fn assert_graph_error(status: StatusCode, body: &Value, want: StatusCode, code: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    let inner = &body["error"]["innerError"];
    for f in ["date", "request-id", "client-request-id"] {
        assert!(inner[f].is_string(), "{f} missing in {body}");
    }
    assert_eq!(inner["client-request-id"], "graph-corr");
}

fn filter_path(collection: &str, filter: &str) -> String {
    let q: String = serde_urlencoded::to_string([("$filter", filter)]).unwrap();
    format!("/v1.0/{collection}?{q}")
}

/// `POST /applications` + `POST /servicePrincipals`; returns (app, sp).
pub(crate) async fn create_app_and_sp(entra: &Entra, token: &str, name: &str) -> (Value, Value) {
    let (s, _, app) = graph(
        entra,
        Some(token),
        "POST",
        "/v1.0/applications",
        Some(json!({"displayName": name, "keyCredentials": []})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{app}");
    let (s, _, sp) = graph(
        entra,
        Some(token),
        "POST",
        "/v1.0/servicePrincipals",
        Some(json!({"appId": app["appId"], "accountEnabled": true})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{sp}");
    (app, sp)
}

pub(crate) async fn add_password(entra: &Entra, token: &str, app_oid: &str) -> Value {
    let (s, _, cred) = graph(
        entra,
        Some(token),
        "POST",
        &format!("/v1.0/applications/{app_oid}/addPassword"),
        Some(json!({"passwordCredential": {"displayName": "rbac",
            "startDateTime": "2025-12-30T00:00:00Z", "endDateTime": "2026-12-30T00:00:00Z"}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{cred}");
    cred
}

#[tokio::test]
async fn application_secret_authenticates_its_service_principal() {
    let env = env().await;
    let admin = admin_graph_token(&env.entra).await;
    let (app, sp) = create_app_and_sp(&env.entra, &admin, "my-rbac-app").await;
    let app_id = app["appId"].as_str().unwrap();
    let app_oid = app["id"].as_str().unwrap();
    assert_ne!(app_id, app_oid);
    assert_eq!(app["passwordCredentials"], json!([]));
    assert_eq!(app["signInAudience"], "AzureADMyOrg");
    assert!(
        app["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("#applications/$entity")
    );
    assert_eq!(sp["appId"], app_id);
    assert_eq!(sp["servicePrincipalType"], "Application");
    assert_eq!(sp["servicePrincipalNames"], json!([app_id]));
    assert_eq!(sp["displayName"], "my-rbac-app");
    assert_eq!(sp["appOwnerOrganizationId"], TID);

    // Before any secret: the principal exists but no secret matches.
    let (s, b) = token_for(
        &env.entra,
        app_id,
        "guess",
        "https://management.azure.com//.default",
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_aadsts(&b, "invalid_client", 7000215);

    let cred = add_password(&env.entra, &admin, app_oid).await;
    let secret = cred["secretText"].as_str().unwrap();
    assert!(secret.len() >= 32);
    assert_eq!(cred["hint"], &secret[..3]);
    assert_eq!(cred["displayName"], "rbac");
    assert_eq!(cred["endDateTime"], "2026-12-30T00:00:00Z");

    let (s, b) = token_for(
        &env.entra,
        app_id,
        secret,
        "https://management.azure.com//.default",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let c = verify(&env, b["access_token"].as_str().unwrap()).await;
    assert_eq!(c.appid.as_deref(), Some(app_id));
    assert_eq!(c.oid, sp["id"].as_str().unwrap());
    assert_eq!(
        raw_claims(b["access_token"].as_str().unwrap())["appidacr"],
        "1"
    );

    // The application lists its secret (never the secret text).
    let (s, _, got) = graph(
        &env.entra,
        Some(&admin),
        "GET",
        &format!("/v1.0/applications/{app_oid}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got["passwordCredentials"][0]["keyId"], cred["keyId"]);
    assert_eq!(got["passwordCredentials"][0]["secretText"], Value::Null);
    assert!(!got.to_string().contains(secret));

    // Expired secret: refused.
    env.clock.advance(Duration::from_secs(400 * 86400));
    let (s, _) = token_for(
        &env.entra,
        app_id,
        secret,
        "https://vault.azure.net/.default",
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    env.clock.set(UNIX_EPOCH + Duration::from_secs(NOW));

    // removePassword revokes it.
    let (s, _, _) = graph(
        &env.entra,
        Some(&admin),
        "POST",
        &format!("/v1.0/applications/{app_oid}/removePassword"),
        Some(json!({"keyId": cred["keyId"]})),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = token_for(
        &env.entra,
        app_id,
        secret,
        "https://vault.azure.net/.default",
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // A second service principal for the same app is a conflict; an unknown app is a bad request.
    let (s, _, b) = graph(
        &env.entra,
        Some(&admin),
        "POST",
        "/v1.0/servicePrincipals",
        Some(json!({"appId": app_id})),
    )
    .await;
    assert_graph_error(
        s,
        &b,
        StatusCode::CONFLICT,
        "Request_MultipleObjectsWithSameKeyValue",
    );
    let (s, _, b) = graph(
        &env.entra,
        Some(&admin),
        "POST",
        "/v1.0/servicePrincipals",
        Some(json!({"appId": "00000000-0000-4000-8000-00000000dead"})),
    )
    .await;
    assert_graph_error(s, &b, StatusCode::BAD_REQUEST, "Request_BadRequest");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains(" does not reference ")
    );
}

/// The Azure CLI's `--create-cert`: a PEM body (with line breaks) as `key`.
fn pem_body(cert: &GeneratedCert) -> String {
    cert.certificate_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn key_credentials_authenticate_with_certificate_assertions() {
    let env = env().await;
    let admin = admin_graph_token(&env.entra).await;
    let (app, _sp) = create_app_and_sp(&env.entra, &admin, "cert-app").await;
    let app_id = app["appId"].as_str().unwrap().to_owned();
    let app_oid = app["id"].as_str().unwrap().to_owned();
    let cert = new_cert("CLI-Login");
    let signer = RsaSigner::new(&cert.private_key_der, &cert.certificate_der).unwrap();
    let aud = format!("{PUBLIC}/{TID}/oauth2/v2.0/token");
    let form = |a: &str| {
        vec![
            ("grant_type".to_owned(), "client_credentials".to_owned()),
            ("client_id".to_owned(), app_id.clone()),
            (
                "scope".to_owned(),
                "https://management.azure.com//.default".to_owned(),
            ),
            (
                "client_assertion_type".to_owned(),
                FORM_ASSERTION_TYPE.to_owned(),
            ),
            ("client_assertion".to_owned(), a.to_owned()),
        ]
    };
    let post = |f: Vec<(String, String)>| {
        let entra = env.entra.clone();
        async move {
            let pairs: Vec<(&str, &str)> =
                f.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            post_form(&entra, &format!("/{TID}/oauth2/v2.0/token"), &pairs).await
        }
    };
    let (s, b) = post(form(&assertion(&signer, &app_id, &aud, NOW))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");

    let (s, _, b) = graph(
        &env.entra,
        Some(&admin),
        "PATCH",
        &format!("/v1.0/applications/{app_oid}"),
        Some(json!({"keyCredentials": [{
            "@odata.type": "#microsoft.graph.keyCredential",
            "type": "AsymmetricX509Cert", "usage": "Verify", "key": pem_body(&cert),
            "displayName": "CN=CLI-Login", "keyId": "5f0b8d84-6f0e-4a4e-9d59-1e1c6b8e0001",
            "startDateTime": "2025-12-30T23:59:00Z", "endDateTime": "2026-03-01T00:00:00Z"}]})),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    let (s, b) = post(form(&assertion(&signer, &app_id, &aud, NOW))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        raw_claims(b["access_token"].as_str().unwrap())["appidacr"],
        "2"
    );

    let (_, _, got) = graph(
        &env.entra,
        Some(&admin),
        "GET",
        &format!("/v1.0/applications/{app_oid}"),
        None,
    )
    .await;
    let k = &got["keyCredentials"][0];
    assert_eq!(k["keyId"], "5f0b8d84-6f0e-4a4e-9d59-1e1c6b8e0001");
    assert_eq!(k["type"], "AsymmetricX509Cert");
    assert_eq!(k["usage"], "Verify");
    assert_eq!(k["displayName"], "CN=CLI-Login");
    assert_eq!(k["endDateTime"], "2026-03-01T00:00:00Z");
    assert_eq!(
        k["customKeyIdentifier"],
        misim_token::hex_upper(&misim_token::sha1(&cert.certificate_der))
    );

    // Keeping the credential by keyId, then replacing the collection with nothing.
    let (s, _, _) = graph(
        &env.entra,
        Some(&admin),
        "PATCH",
        &format!("/v1.0/applications/{app_oid}"),
        Some(json!({"keyCredentials": [{"keyId": "5f0b8d84-6f0e-4a4e-9d59-1e1c6b8e0001"}], "displayName": "cert-app-2"})),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = post(form(&assertion(&signer, &app_id, &aud, NOW))).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = graph(
        &env.entra,
        Some(&admin),
        "PATCH",
        &format!("/v1.0/applications/{app_oid}"),
        Some(json!({"keyCredentials": []})),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = post(form(&assertion(&signer, &app_id, &aud, NOW))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // A certificate in the POST body (az ad sp create-for-rbac --create-cert), and bad keys.
    let cert2 = new_cert("CLI-Login");
    let (s, _, app2) = graph(
        &env.entra,
        Some(&admin),
        "POST",
        "/v1.0/applications",
        Some(json!({"displayName": "cert-app-3", "keyCredentials": [{
            "type": "AsymmetricX509Cert", "usage": "Verify", "key": pem_body(&cert2)}]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{app2}");
    assert_eq!(app2["keyCredentials"].as_array().unwrap().len(), 1);
    // Uploaded credentials are RSA only; P-256 is reserved for managed identities' own certificates.
    let nb = std::time::UNIX_EPOCH + std::time::Duration::from_secs(crate::NOW - 60);
    let ec =
        misim_token::cert::generate_ec_cert("ec", nb, nb + std::time::Duration::from_secs(86400))
            .unwrap();
    for bad in [
        json!({"type": "AsymmetricX509Cert", "usage": "Verify", "key": pem_body(&ec)}),
        json!({"type": "AsymmetricX509Cert", "usage": "Verify", "key": "bm90IGEgY2VydA=="}),
        json!({"type": "Symmetric", "usage": "Verify", "key": pem_body(&cert2)}),
        json!({"type": "AsymmetricX509Cert", "usage": "Verify"}),
    ] {
        let (s, _, b) = graph(
            &env.entra,
            Some(&admin),
            "PATCH",
            &format!("/v1.0/applications/{app_oid}"),
            Some(json!({"keyCredentials": [bad]})),
        )
        .await;
        assert_graph_error(s, &b, StatusCode::BAD_REQUEST, "Request_BadRequest");
    }
}

#[tokio::test]
async fn filters_lists_and_get_by_ids() {
    let env = env().await;
    let admin = admin_graph_token(&env.entra).await;
    let mi = create_mi(&env.entra, "op-1", VM_ID).await;
    let (a1, sp1) = create_app_and_sp(&env.entra, &admin, "alpha-one").await;
    let (a2, _sp2) = create_app_and_sp(&env.entra, &admin, "alpha-two").await;
    let (_a3, _) = create_app_and_sp(&env.entra, &admin, "beta").await;

    let names = |v: &Value| -> Vec<String> {
        v["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["displayName"].as_str().unwrap().to_owned())
            .collect()
    };
    let get = |path: String| {
        let entra = env.entra.clone();
        let admin = admin.clone();
        async move {
            let (s, _, b) = graph(&entra, Some(&admin), "GET", &path, None).await;
            assert_eq!(s, StatusCode::OK, "{path}: {b}");
            b
        }
    };
    let all = get("/v1.0/applications".into()).await;
    assert_eq!(names(&all), ["alpha-one", "alpha-two", "beta"]);
    let b = get(filter_path(
        "applications",
        &format!("appId eq '{}'", a2["appId"].as_str().unwrap()),
    ))
    .await;
    assert_eq!(names(&b), ["alpha-two"]);
    let b = get(filter_path(
        "applications",
        "startswith(displayName,'ALPHA')",
    ))
    .await;
    assert_eq!(names(&b), ["alpha-one", "alpha-two"]);
    let b = get(filter_path("applications", "displayName eq 'beta'")).await;
    assert_eq!(names(&b), ["beta"]);
    let b = get(filter_path(
        "servicePrincipals",
        "displayName eq 'alpha-one'",
    ))
    .await;
    assert_eq!(b["value"][0]["id"], sp1["id"]);
    let spn = format!(
        "servicePrincipalNames/any(c:c eq '{}')",
        a1["appId"].as_str().unwrap()
    );
    let b = get(filter_path("servicePrincipals", &spn)).await;
    assert_eq!(names(&b), ["alpha-one"]);
    let b = get(filter_path(
        "servicePrincipals",
        &format!("appId eq '{ADMIN_APP}'"),
    ))
    .await;
    assert_eq!(b["value"][0]["id"], ADMIN_OID);
    let b = get(filter_path(
        "servicePrincipals",
        "startswith(displayName,'alpha') and displayName eq 'alpha-two'",
    ))
    .await;
    assert_eq!(names(&b), ["alpha-two"]);
    let b = get("/v1.0/servicePrincipals".into()).await;
    assert_eq!(
        b["value"].as_array().unwrap().len(),
        5,
        "admin, identity, three apps"
    );

    // The managed identity, found by its resource id as az finds assignees.
    let b = get(filter_path(
        "servicePrincipals",
        &format!("servicePrincipalNames/any(c:c eq '{VM_ID}')"),
    ))
    .await;
    let m = &b["value"][0];
    assert_eq!(m["id"], mi.sp.object_id);
    assert_eq!(m["servicePrincipalType"], "ManagedIdentity");
    assert_eq!(m["alternativeNames"], json!(["isExplicit=False", VM_ID]));
    assert_eq!(m["servicePrincipalNames"], json!([mi.sp.app_id, VM_ID]));
    assert_eq!(m["keyCredentials"].as_array().unwrap().len(), 1);
    assert_eq!(m["keyCredentials"][0]["key"], Value::Null);

    let (s, _, b) = graph(
        &env.entra,
        Some(&admin),
        "GET",
        &filter_path("applications", "appId ne 'x'"),
        None,
    )
    .await;
    assert_graph_error(s, &b, StatusCode::BAD_REQUEST, "Request_BadRequest");

    // getByIds, as `az role assignment list` resolves principal names.
    let unknown = "00000000-0000-4000-8000-00000000beef";
    let ids = json!([
        mi.sp.object_id,
        sp1["id"],
        ADMIN_OID.to_uppercase(),
        unknown,
        a1["id"]
    ]);
    let (s, _, b) = graph(
        &env.entra,
        Some(&admin),
        "POST",
        "/v1.0/directoryObjects/getByIds",
        Some(json!({"ids": ids, "types": ["user", "group", "servicePrincipal", "directoryObjectPartnerReference"]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let v = b["value"].as_array().unwrap();
    assert_eq!(v.len(), 3, "{b}");
    assert!(
        v.iter()
            .all(|o| o["@odata.type"] == "#microsoft.graph.servicePrincipal")
    );
    assert_eq!(v[0]["servicePrincipalNames"][0], mi.sp.app_id);
    assert_eq!(v[2]["id"], ADMIN_OID);
    let (_, _, b) = graph(
        &env.entra,
        Some(&admin),
        "POST",
        "/v1.0/directoryObjects/getByIds",
        Some(json!({"ids": [a1["id"]]})),
    )
    .await;
    assert_eq!(b["value"][0]["@odata.type"], "#microsoft.graph.application");
    let (s, _, b) = graph(
        &env.entra,
        Some(&admin),
        "POST",
        "/v1.0/directoryObjects/getByIds",
        Some(json!({})),
    )
    .await;
    assert_graph_error(s, &b, StatusCode::BAD_REQUEST, "Request_BadRequest");

    // Get by id; 404 in Graph's shape.
    let (s, _, b) = graph(
        &env.entra,
        Some(&admin),
        "GET",
        &format!("/v1.0/servicePrincipals/{}", mi.sp.object_id),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["servicePrincipalType"], "ManagedIdentity");
    for path in [
        format!("/v1.0/servicePrincipals/{unknown}"),
        format!("/v1.0/applications/{unknown}"),
    ] {
        let (s, _, b) = graph(&env.entra, Some(&admin), "GET", &path, None).await;
        assert_graph_error(s, &b, StatusCode::NOT_FOUND, "Request_ResourceNotFound");
    }
}

#[tokio::test]
async fn managed_identities_are_read_only_and_non_admins_cannot_write() {
    let env = env().await;
    let admin = admin_graph_token(&env.entra).await;
    let mi = create_mi(&env.entra, "op-1", UAMI_ID).await;
    let (s, _, b) = graph(
        &env.entra,
        Some(&admin),
        "DELETE",
        &format!("/v1.0/servicePrincipals/{}", mi.sp.object_id),
        None,
    )
    .await;
    assert_graph_error(s, &b, StatusCode::FORBIDDEN, "Authorization_RequestDenied");
    let (s, _, b) = graph(
        &env.entra,
        Some(&admin),
        "DELETE",
        &format!("/v1.0/servicePrincipals/{ADMIN_OID}"),
        None,
    )
    .await;
    assert_graph_error(s, &b, StatusCode::FORBIDDEN, "Authorization_RequestDenied");

    // The managed identity's own Graph token: no Graph permission, so neither
    // reads nor writes (Azure grants a managed identity none by default).
    let a = assertion(&mi.signer, &mi.sp.app_id, &v2_aud(), NOW);
    let t = issue(&env.entra, &mi.sp.app_id, a, &format!("{PUBLIC}/"))
        .await
        .unwrap();
    let mi_token = t.access_token;
    for path in [
        "/v1.0/servicePrincipals".to_owned(),
        format!("/v1.0/servicePrincipals/{ADMIN_OID}"),
        format!("/v1.0/directoryObjects/{ADMIN_OID}"),
        "/v1.0/applications".to_owned(),
        "/v1.0/organization".to_owned(),
    ] {
        let (s, _, b) = graph(&env.entra, Some(&mi_token), "GET", &path, None).await;
        assert_graph_error(s, &b, StatusCode::FORBIDDEN, "Authorization_RequestDenied");
        assert_eq!(
            b["error"]["message"], "Insufficient privileges to complete the operation.",
            "{path}"
        );
    }
    let (s, _, b) = graph(
        &env.entra,
        Some(&mi_token),
        "POST",
        "/v1.0/directoryObjects/getByIds",
        Some(json!({"ids": [ADMIN_OID]})),
    )
    .await;
    assert_graph_error(s, &b, StatusCode::FORBIDDEN, "Authorization_RequestDenied");
    // Once granted Application.Read.All, it reads.
    env.entra
        .set_graph_permission(&mi.sp.object_id, Some(GraphPermission::ApplicationReadAll))
        .await
        .unwrap();
    let (s, _, b) = graph(
        &env.entra,
        Some(&mi_token),
        "GET",
        "/v1.0/servicePrincipals",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, _, b) = graph(
        &env.entra,
        Some(&mi_token),
        "POST",
        "/v1.0/applications",
        Some(json!({"displayName": "x"})),
    )
    .await;
    assert_graph_error(s, &b, StatusCode::FORBIDDEN, "Authorization_RequestDenied");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Insufficient privileges")
    );

    // An application principal with a Graph token (Microsoft Graph's own audience).
    let (app, sp) = create_app_and_sp(&env.entra, &admin, "worker").await;
    let cred = add_password(&env.entra, &admin, app["id"].as_str().unwrap()).await;
    let (s, b) = token_for(
        &env.entra,
        app["appId"].as_str().unwrap(),
        cred["secretText"].as_str().unwrap(),
        &format!("{GRAPH_V1}/.default"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let app_token = b["access_token"].as_str().unwrap().to_owned();
    let own_app = format!("/v1.0/applications/{}", app["id"].as_str().unwrap());
    let (s, _, b) = graph(&env.entra, Some(&app_token), "GET", &own_app, None).await;
    assert_graph_error(s, &b, StatusCode::FORBIDDEN, "Authorization_RequestDenied");
    env.entra
        .set_graph_permission(
            sp["id"].as_str().unwrap(),
            Some(GraphPermission::ApplicationReadAll),
        )
        .await
        .unwrap();
    let (s, _, _) = graph(&env.entra, Some(&app_token), "GET", &own_app, None).await;
    assert_eq!(s, StatusCode::OK);
    for (method, path, body) in [
        (
            "POST",
            "/v1.0/applications".to_owned(),
            Some(json!({"displayName": "y"})),
        ),
        (
            "DELETE",
            format!("/v1.0/applications/{}", app["id"].as_str().unwrap()),
            None,
        ),
        (
            "POST",
            format!(
                "/v1.0/applications/{}/addPassword",
                app["id"].as_str().unwrap()
            ),
            Some(json!({})),
        ),
        (
            "DELETE",
            format!("/v1.0/servicePrincipals/{}", sp["id"].as_str().unwrap()),
            None,
        ),
    ] {
        let (s, _, b) = graph(&env.entra, Some(&app_token), method, &path, body).await;
        assert_graph_error(s, &b, StatusCode::FORBIDDEN, "Authorization_RequestDenied");
    }
    // Once allowed, it may write.
    env.entra
        .set_graph_writer(sp["id"].as_str().unwrap(), true)
        .await
        .unwrap();
    let (s, _, b) = graph(
        &env.entra,
        Some(&app_token),
        "POST",
        "/v1.0/applications",
        Some(json!({"displayName": "y"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    env.entra
        .set_graph_writer(sp["id"].as_str().unwrap(), false)
        .await
        .unwrap();
    let (s, _, _) = graph(
        &env.entra,
        Some(&app_token),
        "POST",
        "/v1.0/applications",
        Some(json!({"displayName": "z"})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = graph(&env.entra, Some(&app_token), "GET", &own_app, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "revoking takes reads too");

    // /me is for users; /organization answers; unknown segments are bad requests.
    let (s, _, b) = graph(&env.entra, Some(&admin), "GET", "/v1.0/me", None).await;
    assert_graph_error(s, &b, StatusCode::BAD_REQUEST, "Request_BadRequest");
    let (s, _, b) = graph(&env.entra, Some(&admin), "GET", "/v1.0/organization", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["value"][0]["id"], TID);
    let (s, _, b) = graph(&env.entra, Some(&admin), "GET", "/v1.0/users", None).await;
    assert_graph_error(s, &b, StatusCode::BAD_REQUEST, "Request_BadRequest");
}

#[tokio::test]
async fn missing_or_invalid_tokens_are_401() {
    let env = env().await;
    let (s, h, b) = graph(&env.entra, None, "GET", "/v1.0/servicePrincipals", None).await;
    assert_graph_error(
        s,
        &b,
        StatusCode::UNAUTHORIZED,
        "InvalidAuthenticationToken",
    );
    assert!(
        h["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer ")
    );
    assert_eq!(h["client-request-id"], "graph-corr");
    assert!(h.contains_key("request-id"));

    let (s, _, b) = graph(
        &env.entra,
        Some("not.a.jwt"),
        "GET",
        "/v1.0/applications",
        None,
    )
    .await;
    assert_graph_error(
        s,
        &b,
        StatusCode::UNAUTHORIZED,
        "InvalidAuthenticationToken",
    );

    // A valid token for another audience (ARM).
    let (_, t) = token_for(
        &env.entra,
        ADMIN_APP,
        ADMIN_SECRET,
        "https://management.azure.com//.default",
    )
    .await;
    let (s, _, b) = graph(
        &env.entra,
        t["access_token"].as_str(),
        "GET",
        "/v1.0/applications",
        None,
    )
    .await;
    assert_graph_error(
        s,
        &b,
        StatusCode::UNAUTHORIZED,
        "InvalidAuthenticationToken",
    );

    // A token signed by someone else.
    let other = new_cert("other");
    let forged = RsaSigner::new(&other.private_key_der, &other.certificate_der)
        .unwrap()
        .sign(
            &json!({"aud": format!("{PUBLIC}/"), "iss": format!("https://sts.windows.net/{TID}/"),
            "iat": NOW, "nbf": NOW, "exp": NOW + 3600, "oid": ADMIN_OID, "sub": ADMIN_OID,
            "tid": TID, "appid": ADMIN_APP}),
        )
        .unwrap();
    let (s, _, _) = graph(&env.entra, Some(&forged), "GET", "/v1.0/applications", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Expired (lifetime against the injected clock).
    let admin = admin_graph_token(&env.entra).await;
    env.clock.advance(Duration::from_secs(3600 + 301));
    let (s, _, b) = graph(&env.entra, Some(&admin), "GET", "/v1.0/applications", None).await;
    assert_graph_error(
        s,
        &b,
        StatusCode::UNAUTHORIZED,
        "InvalidAuthenticationToken",
    );
}

#[tokio::test]
async fn deleting_the_application_deletes_its_service_principal() {
    let env = env().await;
    let admin = admin_graph_token(&env.entra).await;
    let (app, sp) = create_app_and_sp(&env.entra, &admin, "short-lived").await;
    let app_id = app["appId"].as_str().unwrap();
    let app_oid = app["id"].as_str().unwrap();
    let cred = add_password(&env.entra, &admin, app_oid).await;
    let secret = cred["secretText"].as_str().unwrap();
    let (s, _) = token_for(
        &env.entra,
        app_id,
        secret,
        "https://vault.azure.net/.default",
    )
    .await;
    assert_eq!(s, StatusCode::OK);

    let (s, _, _) = graph(
        &env.entra,
        Some(&admin),
        "DELETE",
        &format!("/v1.0/applications/{app_oid}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = token_for(
        &env.entra,
        app_id,
        secret,
        "https://vault.azure.net/.default",
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_aadsts(&b, "unauthorized_client", 700016);
    for path in [
        format!("/v1.0/servicePrincipals/{}", sp["id"].as_str().unwrap()),
        format!("/v1.0/applications/{app_oid}"),
    ] {
        let (s, _, b) = graph(&env.entra, Some(&admin), "GET", &path, None).await;
        assert_graph_error(s, &b, StatusCode::NOT_FOUND, "Request_ResourceNotFound");
    }
    let (s, _, b) = graph(
        &env.entra,
        Some(&admin),
        "DELETE",
        &format!("/v1.0/applications/{app_oid}"),
        None,
    )
    .await;
    assert_graph_error(s, &b, StatusCode::NOT_FOUND, "Request_ResourceNotFound");

    // Deleting only the service principal keeps the application; a new one can be made.
    let (app, sp) = create_app_and_sp(&env.entra, &admin, "sp-only").await;
    let (s, _, _) = graph(
        &env.entra,
        Some(&admin),
        "DELETE",
        &format!("/v1.0/servicePrincipals/{}", sp["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, _) = graph(
        &env.entra,
        Some(&admin),
        "GET",
        &format!("/v1.0/applications/{}", app["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = graph(
        &env.entra,
        Some(&admin),
        "POST",
        "/v1.0/servicePrincipals",
        Some(json!({"appId": app["appId"]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
}

#[tokio::test]
async fn applications_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::at_unix(NOW));
    let (app_id, secret) = {
        let entra = open_with(Store::open(dir.path()).unwrap(), clock.clone()).await;
        let admin = admin_graph_token(&entra).await;
        let (app, _) = create_app_and_sp(&entra, &admin, "durable").await;
        let cred = add_password(&entra, &admin, app["id"].as_str().unwrap()).await;
        (
            app["appId"].as_str().unwrap().to_owned(),
            cred["secretText"].as_str().unwrap().to_owned(),
        )
    };
    let entra = open_with(Store::open(dir.path()).unwrap(), clock).await;
    let (s, b) = token_for(&entra, &app_id, &secret, "https://vault.azure.net/.default").await;
    assert_eq!(s, StatusCode::OK, "{b}");
}
