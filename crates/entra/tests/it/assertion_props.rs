//! Hostile client assertions at the token endpoint: always an OAuth2 error in
//! Entra's shape (`error`, `error_description`, AADSTS code), never a panic
//! or a server error.

use super::*;
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};

const CASES: u32 = 128;

fn json_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        Just(Value::from(NOW)),
        Just(Value::from(NOW + 600)),
        ".{0,40}".prop_map(Value::from),
        Just(Value::from(v2_aud())),
        prop::collection::vec(".{0,10}".prop_map(Value::from), 0..3).prop_map(Value::from),
    ]
}

fn claims(client_id: String) -> impl Strategy<Value = Value> {
    const KEYS: [&str; 7] = ["aud", "iss", "sub", "exp", "nbf", "iat", "jti"];
    let value = prop_oneof![json_value(), Just(Value::from(client_id))];
    prop::collection::btree_map(
        prop::sample::select(&KEYS[..]).prop_map(str::to_owned),
        value,
        0..KEYS.len(),
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()))
}

#[test]
fn garbled_assertions_get_oauth_errors() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (env, mi) = rt.block_on(async {
        let env = env().await;
        let mi = create_mi(&env.entra, "op-1", VM_ID).await;
        (env, mi)
    });
    let id = mi.sp.app_id.clone();
    let signer = &mi.signer;
    let b64 = |v: &Value| misim_token::b64url(v.to_string().as_bytes());
    let strategy = prop_oneof![
        ".{0,200}",
        "[A-Za-z0-9_.-]{0,300}",
        (claims(id.clone()), ".{0,20}").prop_map(move |(c, h)| format!(
            "{}.{}.sig",
            b64(&json!({"alg": "RS256", "x5t": h})),
            b64(&c)
        )),
        claims(id.clone()).prop_map(|c| signer.sign(&c).unwrap()),
    ];
    let mut runner = TestRunner::new(RunnerConfig {
        cases: CASES,
        ..RunnerConfig::default()
    });
    let issued = std::cell::Cell::new(0u32);
    runner
        .run(&strategy, |assertion| {
            let (s, b) = rt.block_on(post_assertion(&env.entra, &id, &assertion));
            if s == StatusCode::OK {
                issued.set(issued.get() + 1);
                return Ok(());
            }
            prop_assert!(
                s == StatusCode::BAD_REQUEST || s == StatusCode::UNAUTHORIZED,
                "{s} {b}"
            );
            prop_assert!(b["error"].is_string(), "{b}");
            let d = b["error_description"].as_str().unwrap_or_default();
            prop_assert!(d.starts_with("AADSTS"), "{b}");
            Ok(())
        })
        .unwrap();
    println!(
        "garbled_assertions_get_oauth_errors: {CASES} cases, {} tokens issued",
        issued.get()
    );
}
