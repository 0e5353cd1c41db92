//! `CreateServicePrincipal` with the caller's ids and certificate: ARM provisions a
//! managed identity's principal and registers its certificate in one call (one durable
//! write on Entra) instead of `CreateServicePrincipal` then `AddKeyCredential`.

use super::*;

const APP: &str = "3b2c1d0e-9f8a-4b7c-8d6e-5f4a3b2c1d0e";
const OBJ: &str = "7e6d5c4b-3a29-4817-8615-243342516070";

/// A P-256 certificate for `app_id` (what ARM makes) and its signer.
fn p256_cert(app_id: &str) -> (GeneratedCert, misim_token::CertSigner) {
    let nb = UNIX_EPOCH + Duration::from_secs(NOW - 60);
    let cert =
        misim_token::cert::generate_ec_cert(app_id, nb, nb + Duration::from_secs(86400)).unwrap();
    let signer =
        misim_token::CertSigner::new(&cert.private_key_der, &cert.certificate_der).unwrap();
    (cert, signer)
}

fn create_req(
    request_id: &str,
    resource_id: &str,
    ids: Option<(&str, &str)>,
    der: &[u8],
) -> tonic::Request<pb::CreateServicePrincipalRequest> {
    let (app_id, object_id) = ids.unwrap_or_default();
    tonic::Request::new(pb::CreateServicePrincipalRequest {
        request_id: request_id.into(),
        display_name: "vm1".into(),
        r#type: pb::ServicePrincipalType::ManagedIdentity as i32,
        managed_identity_resource_id: resource_id.into(),
        app_id: app_id.into(),
        object_id: object_id.into(),
        certificate_der: der.to_vec(),
    })
}

fn thumbprint(cert: &GeneratedCert) -> String {
    misim_token::hex_upper(&misim_token::sha1(&cert.certificate_der))
}

async fn principals(env: &Env) -> Vec<pb::ServicePrincipal> {
    env.entra
        .list_service_principals(tonic::Request::new(
            pb::ListServicePrincipalsRequest::default(),
        ))
        .await
        .unwrap()
        .into_inner()
        .service_principals
}

/// The principal comes back with the ids ARM chose and the certificate already
/// registered: a token is issued for an assertion signed with its key, with no
/// `AddKeyCredential` in between.
#[tokio::test]
async fn the_principal_is_created_with_the_callers_ids_and_certificate_in_one_call() {
    let env = env().await;
    let (cert, signer) = p256_cert(APP);
    let sp = env
        .entra
        .create_service_principal(create_req(
            "op-1-sami",
            VM_ID,
            Some((APP, OBJ)),
            &cert.certificate_der,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((sp.app_id.as_str(), sp.object_id.as_str()), (APP, OBJ));
    assert_eq!(sp.key_credentials.len(), 1, "{sp:?}");
    assert_eq!(sp.key_credentials[0].thumbprint_sha1, thumbprint(&cert));
    let claims = json!({"aud": v2_aud(), "iss": APP, "sub": APP, "jti": "j-1",
        "nbf": NOW, "iat": NOW, "exp": NOW + 600});
    let t = issue(
        &env.entra,
        APP,
        signer.sign(&claims).unwrap(),
        audiences::ARM,
    )
    .await
    .unwrap();
    assert_eq!(raw_claims(&t.access_token)["oid"], OBJ);
    // Found by either id, as any principal.
    let by_app = env
        .entra
        .get_service_principal(tonic::Request::new(pb::GetServicePrincipalRequest {
            app_id: APP.to_ascii_uppercase(),
            object_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_app.object_id, OBJ);
}

/// A retry (ARM resumed after a crash or a lost reply) sends the same request id,
/// ids and certificate: it gets the same principal with the certificate once. A
/// principal created without the certificate under that request id (a crash of an
/// older ARM between its two calls) gets it registered by the retry.
#[tokio::test]
async fn a_retried_create_returns_the_same_principal_with_its_certificate_once() {
    let env = env().await;
    let (cert, _) = p256_cert(APP);
    let call = || create_req("op-1-sami", VM_ID, Some((APP, OBJ)), &cert.certificate_der);
    let first = env
        .entra
        .create_service_principal(call())
        .await
        .unwrap()
        .into_inner();
    let again = env
        .entra
        .create_service_principal(call())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, first, "same principal, same key credential");
    assert_eq!(principals(&env).await.len(), 2, "the admin and this one");

    // Created by an older caller without ids or certificate, then resumed.
    let older = env
        .entra
        .create_service_principal(create_req("op-2-sami", UAMI_ID, None, &[]))
        .await
        .unwrap()
        .into_inner();
    assert!(older.key_credentials.is_empty());
    let (cert2, _) = p256_cert(&older.app_id);
    let resumed = env
        .entra
        .create_service_principal(create_req(
            "op-2-sami",
            UAMI_ID,
            Some((&older.app_id, &older.object_id)),
            &cert2.certificate_der,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resumed.object_id, older.object_id);
    assert_eq!(resumed.key_credentials.len(), 1);
    assert_eq!(
        resumed.key_credentials[0].thumbprint_sha1,
        thumbprint(&cert2)
    );
}

/// A reservation (`misim apply`) keeps winning over the ids ARM chose: the principal
/// gets the reserved ids and, since ARM's certificate names another app id, no
/// certificate; ARM then registers one made for the reserved id with
/// `AddKeyCredential`, and a retry with that certificate finds it registered.
#[tokio::test]
async fn a_reservation_wins_over_the_callers_ids_and_leaves_the_certificate_to_the_caller() {
    const PINNED_APP: &str = "11111111-2222-4333-8444-555555555555";
    const PINNED_OBJ: &str = "66666666-7777-4888-9999-aaaaaaaaaaaa";
    let env = env().await;
    env.entra
        .reserve_managed_identity_ids(tonic::Request::new(pb::ReserveManagedIdentityIdsRequest {
            managed_identity_resource_id: UAMI_ID.into(),
            app_id: PINNED_APP.into(),
            object_id: PINNED_OBJ.into(),
        }))
        .await
        .unwrap();
    let (cert, _) = p256_cert(APP);
    let sp = env
        .entra
        .create_service_principal(create_req(
            "op-pinned",
            UAMI_ID,
            Some((APP, OBJ)),
            &cert.certificate_der,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (sp.app_id.as_str(), sp.object_id.as_str()),
        (PINNED_APP, PINNED_OBJ)
    );
    assert!(sp.key_credentials.is_empty(), "{sp:?}");

    let (pinned_cert, _) = p256_cert(PINNED_APP);
    env.entra
        .add_key_credential(tonic::Request::new(pb::AddKeyCredentialRequest {
            object_id: PINNED_OBJ.into(),
            certificate_der: pinned_cert.certificate_der.clone(),
        }))
        .await
        .unwrap();
    let retried = env
        .entra
        .create_service_principal(create_req(
            "op-pinned",
            UAMI_ID,
            Some((PINNED_APP, PINNED_OBJ)),
            &pinned_cert.certificate_der,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried.object_id, PINNED_OBJ);
    assert_eq!(retried.key_credentials.len(), 1, "{retried:?}");
    assert_eq!(
        retried.key_credentials[0].thumbprint_sha1,
        thumbprint(&pinned_cert)
    );
}

/// Ids come as a pair of GUIDs; ids another principal holds, and a certificate that
/// does not parse, are refused with nothing written.
#[tokio::test]
async fn chosen_ids_and_certificates_are_validated_before_anything_is_written() {
    let env = env().await;
    let (cert, _) = p256_cert(APP);
    let der = cert.certificate_der.clone();
    let cases = [
        (Some((APP, "")), der.clone(), tonic::Code::InvalidArgument),
        (Some(("", OBJ)), der.clone(), tonic::Code::InvalidArgument),
        (
            Some(("nope", OBJ)),
            der.clone(),
            tonic::Code::InvalidArgument,
        ),
        (
            Some((APP, OBJ)),
            b"not a certificate".to_vec(),
            tonic::Code::InvalidArgument,
        ),
        // The administrator's ids are taken.
        (
            Some((ADMIN_APP, OBJ)),
            der.clone(),
            tonic::Code::FailedPrecondition,
        ),
        (
            Some((APP, ADMIN_OID)),
            der.clone(),
            tonic::Code::FailedPrecondition,
        ),
    ];
    for (i, (ids, der, code)) in cases.into_iter().enumerate() {
        let e = env
            .entra
            .create_service_principal(create_req(&format!("bad-{i}"), VM_ID, ids, &der))
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "case {i}: {e}");
    }
    assert_eq!(principals(&env).await.len(), 1, "only the admin");
}
