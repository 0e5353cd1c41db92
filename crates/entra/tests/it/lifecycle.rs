//! Credentials that follow the clock: an expired client secret is AADSTS7000222, an expired
//! certificate AADSTS700027 ("The key used is expired"), and token lifetimes come from the
//! configuration; a renewed managed identity is accepted with both certificates until the old expires.

use super::*;

#[tokio::test]
async fn an_expired_client_secret_is_aadsts7000222() {
    let env = env().await;
    let app = env
        .entra
        .create_application(tonic::Request::new(pb::CreateApplicationRequest {
            display_name: "ci".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    let client = app.service_principal.unwrap().app_id;
    let form = secret_form(&client, &app.client_secret, ("resource", audiences::ARM));
    let path = format!("/{TID}/oauth2/token");
    let (s, body) = post_form(&env.entra, &path, &form).await;
    assert_eq!(s, StatusCode::OK, "{body}");

    // One second past the secret's end date.
    let end = u64::try_from(app.secret_end_unix).unwrap();
    env.clock.advance(Duration::from_secs(end + 1 - NOW));
    let (s, body) = post_form(&env.entra, &path, &form).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    assert_aadsts(&body, "invalid_client", 7000222);
    let d = body["error_description"].as_str().unwrap();
    assert!(
        d.contains(&format!(
            "The provided client secret keys for app '{client}' are expired."
        )),
        "{d}"
    );
    // A wrong secret is still a wrong secret, not an expired one.
    let wrong = secret_form(&client, "nope", ("resource", audiences::ARM));
    let (_, body) = post_form(&env.entra, &path, &wrong).await;
    assert_aadsts(&body, "invalid_client", 7000215);
}

#[tokio::test]
async fn an_expired_certificate_is_aadsts700027() {
    let env = env().await;
    let mi = create_mi(&env.entra, "op-1", VM_ID).await;
    // new_cert is valid for 90 days from a minute before NOW.
    env.clock.advance(Duration::from_secs(90 * 86400));
    let now = NOW + 90 * 86400;
    let a = assertion(&mi.signer, &mi.sp.app_id, &v2_aud(), now);
    let (s, body) = post_assertion(&env.entra, &mi.sp.app_id, &a).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    assert_aadsts(&body, "invalid_client", 700027);
    let d = body["error_description"].as_str().unwrap();
    assert!(
        d.contains("[Reason - The key used is expired., Thumbprint of key used by client: '"),
        "{d}"
    );
    assert!(
        d.contains("Found key 'Start=12/30/2025 23:58:59, End=03/30/2026"),
        "{d}"
    );
    // Over gRPC (IMDS's path) the reason travels as the ErrorInfo.
    let e = issue(&env.entra, &mi.sp.app_id, a, audiences::ARM)
        .await
        .unwrap_err();
    assert_eq!(
        misim_proto::status::reason_of(&e, misim_proto::status::ENTRA_DOMAIN).as_deref(),
        Some("AADSTS700027")
    );
}

#[tokio::test]
async fn token_lifetimes_come_from_the_configuration() {
    let clock = Arc::new(ManualClock::at_unix(NOW));
    let mut cfg = config();
    cfg.tokens.managed_identity_lifetime_secs = 2 * 3600;
    cfg.tokens.application_lifetime_secs = 600;
    let entra = open_config(cfg, Store::memory().unwrap(), clock)
        .await
        .unwrap();
    let form = secret_form(ADMIN_APP, ADMIN_SECRET, ("resource", audiences::ARM));
    let (s, body) = post_form(&entra, &format!("/{TID}/oauth2/token"), &form).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["expires_in"], "600");
    let mi = create_mi(&entra, "op-1", VM_ID).await;
    let a = assertion(&mi.signer, &mi.sp.app_id, &v2_aud(), NOW);
    let t = issue(&entra, &mi.sp.app_id, a, audiences::ARM)
        .await
        .unwrap();
    assert_eq!(t.expires_on_unix - t.issued_at_unix, 7200);

    // Outside Azure's bounds (10 minutes to a day) the tenant does not open.
    let mut bad = config();
    bad.tokens.application_lifetime_secs = 60;
    let clock = Arc::new(ManualClock::at_unix(NOW));
    let e = open_config(bad, Store::memory().unwrap(), clock)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("10m to 24h"), "{e}");
}

/// A managed identity's renewal as ARM drives it: the new certificate is added while the old
/// one is valid (both accepted), the old one expires (AADSTS700027, in the decision log), then
/// `RemoveKeyCredential` removes it (still AADSTS700027: no such key), idempotently.
#[tokio::test]
async fn a_renewed_identity_is_accepted_with_both_certificates_until_the_old_one_expires() {
    let env = env().await;
    let mi = create_mi(&env.entra, "op-1", VM_ID).await;
    let id = mi.sp.app_id.as_str();
    // Day 46: ARM registers the next certificate, valid 90 days from now.
    let day46 = NOW + 46 * 86400;
    env.clock.advance(Duration::from_secs(46 * 86400));
    let nb = UNIX_EPOCH + Duration::from_secs(day46);
    let next = generate_rsa_cert(id, nb, nb + Duration::from_secs(90 * 86400)).unwrap();
    let next_signer = RsaSigner::new(&next.private_key_der, &next.certificate_der).unwrap();
    env.entra
        .add_key_credential(tonic::Request::new(pb::AddKeyCredentialRequest {
            object_id: mi.sp.object_id.clone(),
            certificate_der: next.certificate_der.clone(),
        }))
        .await
        .unwrap();
    for signer in [&mi.signer, &next_signer] {
        let a = assertion(signer, id, &v2_aud(), day46);
        let (s, body) = post_assertion(&env.entra, id, &a).await;
        assert_eq!(s, StatusCode::OK, "old and new both accepted: {body}");
    }

    // Day 90 + 1 s: the old certificate has expired, the new one still works.
    let later = NOW - 60 + 90 * 86400 + 1;
    env.clock.advance(Duration::from_secs(later - day46));
    let (s, body) =
        post_assertion(&env.entra, id, &assertion(&mi.signer, id, &v2_aud(), later)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    assert_aadsts(&body, "invalid_client", 700027);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("The key used is expired."),
        "{body}"
    );
    let (s, body) = post_assertion(
        &env.entra,
        id,
        &assertion(&next_signer, id, &v2_aud(), later),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let logged = env.entra.chaos().log().list(&misim_chaos::Query {
        denied_only: true,
        principal: Some(id.to_owned()),
        service: None,
    });
    assert!(
        logged
            .iter()
            .any(|d| d.status == 401 && d.reason.starts_with("AADSTS700027")),
        "the refusal is in the decision log: {logged:?}"
    );

    // ARM removes it: gone from the principal, refused as unknown, removal idempotent.
    let old_thumb = misim_token::hex_upper(
        &misim_token::cert::parse_cert(&mi.cert.certificate_der)
            .unwrap()
            .sha1,
    );
    for existed in [true, false] {
        let r = env
            .entra
            .remove_key_credential(tonic::Request::new(pb::RemoveKeyCredentialRequest {
                object_id: mi.sp.object_id.clone(),
                thumbprint_sha1: old_thumb.clone(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.existed, existed);
    }
    let sp = env
        .entra
        .get_service_principal(tonic::Request::new(pb::GetServicePrincipalRequest {
            object_id: mi.sp.object_id.clone(),
            app_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sp.key_credentials.len(), 1);
    assert_ne!(sp.key_credentials[0].thumbprint_sha1, old_thumb);
    let (s, body) =
        post_assertion(&env.entra, id, &assertion(&mi.signer, id, &v2_aud(), later)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    assert_aadsts(&body, "invalid_client", 700027);
    // An unknown principal is NOT_FOUND (ARM treats it as done).
    let e = env
        .entra
        .remove_key_credential(tonic::Request::new(pb::RemoveKeyCredentialRequest {
            object_id: "00000000-0000-4000-8000-000000000000".into(),
            thumbprint_sha1: old_thumb,
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
}
