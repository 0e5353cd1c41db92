//! Credentials that follow the clock: an expired client secret is AADSTS7000222, an expired
//! certificate AADSTS700027 ("The key used is expired"), and token lifetimes come from the
//! configuration.

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
