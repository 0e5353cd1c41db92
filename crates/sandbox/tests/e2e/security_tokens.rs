//! Security suite: forged, tampered, misdirected and expired bearer tokens.
//!
//! Every resource server (ARM, Key Vault, Microsoft Graph) trusts only tokens
//! that Entra signed with a key it publishes, for that server's audience, within
//! their lifetime. Each attack below is refused with the status and error code
//! that server uses on Azure, and the genuine token still works afterwards.

use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use crate::harness::{VAULT_AUD, World, start, start_with_clock};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

fn parts(token: &str) -> (Value, Value, String) {
    let mut it = token.split('.');
    let header = serde_json::from_slice(&B64.decode(it.next().unwrap()).unwrap()).unwrap();
    let claims = serde_json::from_slice(&B64.decode(it.next().unwrap()).unwrap()).unwrap();
    (header, claims, it.next().unwrap().to_owned())
}

fn encode(v: &Value) -> String {
    B64.encode(serde_json::to_vec(v).unwrap())
}

/// Signs `header.claims` with a freshly generated key that Entra never saw,
/// keeping whatever `kid` the header names.
fn sign_with_own_key(header: &Value, claims: &Value) -> String {
    let now = std::time::UNIX_EPOCH + Duration::from_secs(crate::harness::now_unix() as u64);
    let cert =
        misim_token::cert::generate_rsa_cert("attacker", now, now + Duration::from_secs(3600))
            .unwrap();
    let key = ring::signature::RsaKeyPair::from_pkcs8(&cert.private_key_der).unwrap();
    let input = format!("{}.{}", encode(header), encode(claims));
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .unwrap();
    format!("{input}.{}", B64.encode(sig))
}

/// The forgeries of one genuine token: each must be refused where the genuine one is accepted.
fn forgeries(genuine: &str) -> Vec<(&'static str, String)> {
    let (header, claims, sig) = parts(genuine);
    let mut other_oid = claims.clone();
    other_oid["oid"] = json!("00000000-0000-4000-8000-000000000001");
    let mut longer = claims.clone();
    longer["exp"] = json!(claims["exp"].as_i64().unwrap() + 86_400);
    let none = json!({"typ": "JWT", "alg": "none"});
    let mut hs = header.clone();
    hs["alg"] = json!("HS256");
    let hs_input = format!("{}.{}", encode(&hs), encode(&claims));
    vec![
        (
            "alg none, no signature",
            format!("{}.{}.", encode(&none), encode(&claims)),
        ),
        (
            "claims changed (another oid), signature kept",
            format!("{}.{}.{sig}", encode(&header), encode(&other_oid)),
        ),
        (
            "lifetime extended, signature kept",
            format!("{}.{}.{sig}", encode(&header), encode(&longer)),
        ),
        (
            "signed by another key under Entra's kid",
            sign_with_own_key(&header, &claims),
        ),
        (
            "signed by another key under its own kid",
            sign_with_own_key(
                &json!({"typ": "JWT", "alg": "RS256", "kid": "attacker"}),
                &claims,
            ),
        ),
        (
            // Algorithm confusion: an HMAC "signature" keyed with public material.
            "HS256 with the kid as the secret",
            format!(
                "{hs_input}.{}",
                B64.encode(ring::hmac::sign(
                    &ring::hmac::Key::new(
                        ring::hmac::HMAC_SHA256,
                        header["kid"].as_str().unwrap().as_bytes()
                    ),
                    hs_input.as_bytes()
                ))
            ),
        ),
        ("not a JWT", "not-a-jwt".to_owned()),
    ]
}

async fn graph_get(w: &World, token: &str) -> (u16, Value) {
    let r = w
        .http
        .get(format!("{}/v1.0/servicePrincipals", w.sb.entra_url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn vault_get(w: &World, token: &str) -> (u16, Option<String>, Value) {
    let r = w
        .http
        .get(format!(
            "{}secrets/s1?api-version=7.4",
            w.sb.vault_url("kv1")
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let challenge = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    (
        r.status().as_u16(),
        challenge,
        r.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn arm_refuses_forged_tokens() {
    let w = start().await;
    let rg = w.rg_id("rg1");
    w.create_rg("rg1").await;
    for (what, token) in forgeries(&w.admin_arm) {
        let (s, v) = w.arm("GET", &rg, &token, None).await;
        assert_eq!(s, 401, "{what}: {v}");
        assert_eq!(
            v["error"]["code"], "InvalidAuthenticationToken",
            "{what}: {v}"
        );
        // Nothing was written on the forger's behalf.
        let (s, _) = w
            .arm(
                "PUT",
                &w.rg_id("forged"),
                &token,
                Some(json!({"location": "eastus"})),
            )
            .await;
        assert_eq!(s, 401, "{what}");
    }
    let (s, _) = w.admin("GET", &w.rg_id("forged"), None).await;
    assert_eq!(s, 404, "no forged write landed");
    let (s, _) = w.admin("GET", &rg, None).await;
    assert_eq!(s, 200, "the genuine token still works");
}

#[tokio::test(flavor = "multi_thread")]
async fn key_vault_and_graph_refuse_forged_tokens() {
    let w = start().await;
    w.create_rg("rg1").await;
    w.create_vault("rg1", "kv1").await;
    w.set_secret("kv1", "s1", "v1").await;
    let kv = w.admin_token(&format!("{VAULT_AUD}/.default")).await;
    for (what, token) in forgeries(&kv) {
        let (s, challenge, v) = vault_get(&w, &token).await;
        assert_eq!(s, 401, "{what}: {v}");
        assert!(
            challenge.is_some_and(|c| c.starts_with("Bearer authorization=")),
            "{what}: Key Vault answers 401 with its bearer challenge"
        );
    }
    assert_eq!(vault_get(&w, &kv).await.0, 200);

    let graph = w.admin_token("https://graph.microsoft.com/.default").await;
    for (what, token) in forgeries(&graph) {
        let (s, v) = graph_get(&w, &token).await;
        assert_eq!(s, 401, "{what}: {v}");
        assert_eq!(
            v["error"]["code"], "InvalidAuthenticationToken",
            "{what}: {v}"
        );
    }
    assert_eq!(graph_get(&w, &graph).await.0, 200);
}

/// A genuine token presented to the wrong resource server is refused: the
/// audience binds a token to one API.
#[tokio::test(flavor = "multi_thread")]
async fn tokens_for_another_audience_are_refused() {
    let w = start().await;
    w.create_rg("rg1").await;
    w.create_vault("rg1", "kv1").await;
    w.set_secret("kv1", "s1", "v1").await;
    let kv = w.admin_token(&format!("{VAULT_AUD}/.default")).await;
    let graph = w.admin_token("https://graph.microsoft.com/.default").await;

    let (s, v) = w.arm("GET", &w.rg_id("rg1"), &kv, None).await;
    assert_eq!(s, 401, "{v}");
    assert_eq!(
        v["error"]["code"], "InvalidAuthenticationTokenAudience",
        "{v}"
    );
    let (s, _, v) = vault_get(&w, &w.admin_arm).await;
    assert_eq!(s, 401, "{v}");
    let (s, v) = graph_get(&w, &kv).await;
    assert_eq!(s, 401, "{v}");
    assert_eq!(v["error"]["code"], "InvalidAuthenticationToken", "{v}");
    // And the right token for each still works.
    assert_eq!(graph_get(&w, &graph).await.0, 200);
    assert_eq!(vault_get(&w, &kv).await.0, 200);
}

/// Tokens stop working when they expire, on every resource server (the
/// sandbox's clock is moved, not waited for).
#[tokio::test(flavor = "multi_thread")]
async fn expired_tokens_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = std::sync::Arc::new(misim_types::ManualClock::at_unix(
        crate::harness::now_unix() as u64,
    ));
    let w = start_with_clock(dir, Some(clock.clone())).await;
    w.create_rg("rg1").await;
    w.create_vault("rg1", "kv1").await;
    w.set_secret("kv1", "s1", "v1").await;
    let kv = w.admin_token(&format!("{VAULT_AUD}/.default")).await;
    let graph = w.admin_token("https://graph.microsoft.com/.default").await;
    let (_, claims, _) = parts(&w.admin_arm);
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    // Past the expiry and every clock-skew allowance.
    clock.advance(Duration::from_secs(lifetime as u64 + 3600));

    let (s, v) = w.arm("GET", &w.rg_id("rg1"), &w.admin_arm, None).await;
    assert_eq!(s, 401, "{v}");
    assert_eq!(v["error"]["code"], "ExpiredAuthenticationToken", "{v}");
    let (s, challenge, v) = vault_get(&w, &kv).await;
    assert_eq!(s, 401, "{v}");
    assert!(challenge.is_some());
    let (s, v) = graph_get(&w, &graph).await;
    assert_eq!(s, 401, "{v}");
    assert_eq!(v["error"]["code"], "InvalidAuthenticationToken", "{v}");
}
