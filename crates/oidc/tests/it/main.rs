//! Component tests for misim-oidc: the HTTP router driven with `oneshot` (no
//! sockets) and the gRPC trait called directly.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use misim_oidc::{Config, Deps, IssuerKind, IssuerRef, MintRequest, Oidc};
use misim_proto::oidc::v1 as pb;
use misim_proto::oidc::v1::issuers_server::Issuers;
use misim_store::Store;
use misim_types::{ManualClock, SeqIds};
use serde_json::Value;
use tower::ServiceExt;

const BASE: &str = "https://localhost:4443";
const NOW: u64 = 1_767_139_199;

async fn open(store: Store) -> Oidc {
    Oidc::open(
        Config {
            public_base: BASE.into(),
            clusters: vec!["aks-1".into()],
        },
        Deps {
            store,
            clock: Arc::new(ManualClock::at_unix(NOW)),
            ids: Arc::new(SeqIds::new(1)),
        },
    )
    .await
    .unwrap()
}

async fn get(o: &Oidc, path: &str) -> (StatusCode, Value) {
    let resp = o
        .http_router()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&misim_token::b64_lenient(payload).unwrap()).unwrap()
}

/// Verifies `token` with the keys the issuer publishes, found through its
/// discovery document as Entra finds them.
async fn verify_published(o: &Oidc, token: &str) -> Value {
    let iss = claims(token)["iss"].as_str().unwrap().to_owned();
    let disco = format!(
        "{}/.well-known/openid-configuration",
        iss.trim_end_matches('/')
    );
    let (s, doc) = get(o, disco.strip_prefix(BASE).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc["issuer"], iss.as_str());
    let jwks_uri = doc["jwks_uri"].as_str().unwrap();
    let (s, jwks) = get(o, jwks_uri.strip_prefix(BASE).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    let k = &jwks["keys"][0];
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.kid.as_deref(), k["kid"].as_str());
    let key = jsonwebtoken::DecodingKey::from_rsa_components(
        k["n"].as_str().unwrap(),
        k["e"].as_str().unwrap(),
    )
    .unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.validate_exp = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    jsonwebtoken::decode::<Value>(token, &key, &v)
        .unwrap()
        .claims
}

fn mint(issuer: IssuerRef, subject: &str) -> MintRequest {
    MintRequest {
        issuer,
        subject: subject.into(),
        audience: None,
        lifetime: None,
    }
}

#[tokio::test]
async fn kubernetes_tokens_verify_through_the_clusters_discovery_document() {
    let o = open(Store::memory().unwrap()).await;
    let t = o
        .mint(mint(
            IssuerRef::kubernetes("aks-1").unwrap(),
            "system:serviceaccount:prod:api",
        ))
        .await
        .unwrap();
    assert_eq!(t.issuer, format!("{BASE}/kubernetes/aks-1/"));
    let c = verify_published(&o, &t.token).await;
    assert_eq!(c["iss"], t.issuer.as_str());
    assert_eq!(c["sub"], "system:serviceaccount:prod:api");
    assert_eq!(c["aud"], serde_json::json!(["api://AzureADTokenExchange"]));
    assert_eq!(c["exp"], NOW as i64 + 3600);
    assert_eq!(c["kubernetes.io"]["serviceaccount"]["name"], "api");
}

#[tokio::test]
async fn github_tokens_carry_the_repository_claims() {
    let o = open(Store::memory().unwrap()).await;
    let t = o
        .mint(MintRequest {
            audience: Some("api://custom".into()),
            lifetime: Some(Duration::from_secs(600)),
            ..mint(
                IssuerRef::github(),
                "repo:octo-org/octo-repo:environment:Production",
            )
        })
        .await
        .unwrap();
    assert_eq!(t.issuer, format!("{BASE}/github"));
    let c = verify_published(&o, &t.token).await;
    assert_eq!(c["aud"], "api://custom");
    assert_eq!(c["repository"], "octo-org/octo-repo");
    assert_eq!(c["environment"], "Production");
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 600);
}

#[tokio::test]
async fn lifetimes_are_bounded_and_bad_subjects_make_no_issuer() {
    let o = open(Store::memory().unwrap()).await;
    let too_long = MintRequest {
        lifetime: Some(Duration::from_secs(24 * 3600 + 1)),
        ..mint(IssuerRef::github(), "repo:o/r:ref:refs/heads/main")
    };
    assert!(o.mint(too_long).await.is_err());
    let bad = mint(IssuerRef::kubernetes("new-cluster").unwrap(), "repo:o/r");
    assert!(o.mint(bad).await.is_err());
    let (s, _) = get(
        &o,
        "/kubernetes/new-cluster/.well-known/openid-configuration",
    )
    .await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "a refused token creates no issuer"
    );
}

#[tokio::test]
async fn a_new_cluster_gets_its_own_key_which_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let kid = {
        let o = open(Store::open(dir.path()).unwrap()).await;
        o.mint(mint(
            IssuerRef::kubernetes("team-b").unwrap(),
            "system:serviceaccount:default:sa",
        ))
        .await
        .unwrap();
        let all = o.issuers().await;
        let names: Vec<_> = all
            .iter()
            .map(|i| (i.issuer.kind, i.issuer.cluster.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                (IssuerKind::GitHub, ""),
                (IssuerKind::Kubernetes, "aks-1"),
                (IssuerKind::Kubernetes, "team-b")
            ]
        );
        assert_ne!(
            all[1].kid, all[2].kid,
            "each cluster signs with its own key"
        );
        all[2].kid.clone()
    };
    let o = open(Store::open(dir.path()).unwrap()).await;
    let again = o.issuers().await;
    assert_eq!(again[2].kid, kid);
}

#[tokio::test]
async fn grpc_mints_and_lists() {
    let o = open(Store::memory().unwrap()).await;
    let t = o
        .mint_token(tonic::Request::new(pb::MintTokenRequest {
            kind: pb::IssuerKind::Kubernetes as i32,
            cluster: "aks-1".into(),
            subject: "system:serviceaccount:ns:sa".into(),
            audience: String::new(),
            lifetime_seconds: 0,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(t.expires_on_unix - t.issued_at_unix, 3600);
    let refused = |kind: pb::IssuerKind, cluster: &str, lifetime: i64| pb::MintTokenRequest {
        kind: kind as i32,
        cluster: cluster.into(),
        subject: "repo:o/r:ref:refs/heads/main".into(),
        audience: String::new(),
        lifetime_seconds: lifetime,
    };
    for r in [
        refused(pb::IssuerKind::Github, "aks-1", 0),
        refused(pb::IssuerKind::Kubernetes, "", 0),
        refused(pb::IssuerKind::Unspecified, "", 0),
        refused(pb::IssuerKind::Github, "", -1),
        refused(pb::IssuerKind::Github, "", 86401),
    ] {
        let e = o.mint_token(tonic::Request::new(r)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    }
    let list = o
        .list_issuers(tonic::Request::new(pb::ListIssuersRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.issuers.len(), 2);
    assert_eq!(list.issuers[0].url, format!("{BASE}/github"));
    assert_eq!(
        list.issuers[1].jwks_uri,
        format!("{BASE}/kubernetes/aks-1/openid/v1/jwks")
    );
}

#[tokio::test]
async fn config_must_be_https_without_a_path() {
    for base in [
        "http://localhost:1",
        "https://localhost:1/",
        "https://h/x",
        "",
    ] {
        let c = Config {
            public_base: base.into(),
            clusters: vec![],
        };
        assert!(c.validate().is_err(), "{base}");
    }
}
