//! The claims of the tokens each issuer signs, shaped like the real ones
//! (docs/workload-identity.md): a Kubernetes projected service-account token
//! and a GitHub Actions OIDC token. Pure functions of their inputs.

use serde_json::{Value, json};

use crate::OidcError;

/// What every token has.
#[derive(Debug, Clone)]
pub(crate) struct Common<'a> {
    pub(crate) iss: &'a str,
    pub(crate) sub: &'a str,
    pub(crate) aud: &'a str,
    pub(crate) iat: i64,
    pub(crate) exp: i64,
    pub(crate) jti: &'a str,
}

/// A GUID-shaped id derived from `seed`, so one service account keeps its
/// uid across tokens and restarts.
fn stable_uid(seed: &str) -> String {
    let h = hex(&misim_token::sha256(seed.as_bytes()));
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn hex(bytes: &[u8]) -> String {
    misim_token::hex_upper(bytes).to_ascii_lowercase()
}

/// A positive number derived from `seed` (GitHub's numeric ids).
fn stable_number(seed: &str) -> u64 {
    let h = misim_token::sha256(seed.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    u64::from_be_bytes(b) % 1_000_000_000 + 1
}

/// A DNS label (RFC 1123), as Kubernetes names namespaces and clusters.
pub(crate) fn is_dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// `system:serviceaccount:NS:SA` → (NS, SA).
fn service_account(sub: &str) -> Option<(&str, &str)> {
    let rest = sub.strip_prefix("system:serviceaccount:")?;
    let (ns, sa) = rest.split_once(':')?;
    (is_dns_label(ns) && !sa.is_empty() && sa.len() <= 253 && !sa.contains(':')).then_some((ns, sa))
}

/// A projected service-account token: `aud` a list, the `kubernetes.io`
/// block naming namespace and service account.
pub(crate) fn kubernetes(c: &Common<'_>, cluster: &str) -> Result<Value, OidcError> {
    let (ns, sa) = service_account(c.sub).ok_or_else(|| {
        OidcError::InvalidArgument(format!(
            "a Kubernetes subject is system:serviceaccount:NAMESPACE:NAME, not {:?}",
            c.sub
        ))
    })?;
    Ok(json!({
        "aud": [c.aud],
        "exp": c.exp,
        "iat": c.iat,
        "iss": c.iss,
        "jti": c.jti,
        "kubernetes.io": {
            "namespace": ns,
            "serviceaccount": {
                "name": sa,
                "uid": stable_uid(&format!("{cluster}/{ns}/{sa}")),
            },
        },
        "nbf": c.iat,
        "sub": c.sub,
    }))
}

/// A GitHub Actions token. The repository claims come from a subject of the
/// default shapes (`repo:OWNER/REPO:ref:REF`, `repo:OWNER/REPO:environment:NAME`,
/// `repo:OWNER/REPO:pull_request`); any other subject (a customised
/// template) is signed as given, without them.
pub(crate) fn github(c: &Common<'_>) -> Value {
    let mut v = json!({
        "jti": c.jti,
        "sub": c.sub,
        "aud": c.aud,
        "iss": c.iss,
        "nbf": c.iat,
        "exp": c.exp,
        "iat": c.iat,
        "runner_environment": "github-hosted",
    });
    let Some(rest) = c.sub.strip_prefix("repo:") else {
        return v;
    };
    let (repository, context) = rest.split_once(':').unwrap_or((rest, ""));
    let Some((owner, _)) = repository.split_once('/') else {
        return v;
    };
    let (git_ref, event, environment) = match context.split_once(':') {
        Some(("ref", r)) => (r.to_owned(), "push", None),
        Some(("environment", env)) => ("refs/heads/main".to_owned(), "push", Some(env)),
        _ if context == "pull_request" => ("refs/pull/1/merge".to_owned(), "pull_request", None),
        _ => ("refs/heads/main".to_owned(), "workflow_dispatch", None),
    };
    let ref_type = if git_ref.starts_with("refs/tags/") {
        "tag"
    } else {
        "branch"
    };
    let workflow_ref = format!("{repository}/.github/workflows/ci.yml@{git_ref}");
    let workflow_sha = hex(&misim_token::sha1(repository.as_bytes()));
    let pr = event == "pull_request";
    let extra = json!({
        "ref": git_ref,
        "ref_type": ref_type,
        "ref_protected": "false",
        "sha": hex(&misim_token::sha1(c.jti.as_bytes())),
        "repository": repository,
        "repository_id": stable_number(repository).to_string(),
        "repository_owner": owner,
        "repository_owner_id": stable_number(owner).to_string(),
        "repository_visibility": "private",
        "actor": owner,
        "actor_id": stable_number(&format!("actor:{owner}")).to_string(),
        "run_id": stable_number(c.jti).to_string(),
        "run_number": "1",
        "run_attempt": "1",
        "workflow": "ci",
        "workflow_ref": workflow_ref,
        "workflow_sha": workflow_sha,
        "job_workflow_ref": workflow_ref,
        "job_workflow_sha": workflow_sha,
        "event_name": event,
        "head_ref": if pr { "feature" } else { "" },
        "base_ref": if pr { "main" } else { "" },
    });
    if let (Some(m), Value::Object(e)) = (v.as_object_mut(), extra) {
        m.extend(e);
        if let Some(env) = environment {
            m.insert("environment".into(), Value::String(env.to_owned()));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn common(sub: &str) -> Common<'_> {
        Common {
            iss: "https://localhost:1/github",
            sub,
            aud: "api://AzureADTokenExchange",
            iat: 100,
            exp: 3700,
            jti: "j",
        }
    }

    #[test]
    fn kubernetes_tokens_name_the_service_account() {
        let v = kubernetes(&common("system:serviceaccount:prod:api"), "aks1").unwrap();
        assert_eq!(v["aud"], json!(["api://AzureADTokenExchange"]));
        assert_eq!(v["kubernetes.io"]["namespace"], "prod");
        assert_eq!(v["kubernetes.io"]["serviceaccount"]["name"], "api");
        let again = kubernetes(&common("system:serviceaccount:prod:api"), "aks1").unwrap();
        assert_eq!(
            v["kubernetes.io"]["serviceaccount"]["uid"],
            again["kubernetes.io"]["serviceaccount"]["uid"]
        );
        for bad in [
            "repo:o/r",
            "system:serviceaccount:prod",
            "system:serviceaccount:Prod:api",
            "system:serviceaccount:p:a:b",
        ] {
            assert!(kubernetes(&common(bad), "aks1").is_err(), "{bad}");
        }
    }

    #[test]
    fn github_claims_follow_the_subject() {
        let v = github(&common("repo:octo-org/octo-repo:ref:refs/heads/main"));
        assert_eq!(v["repository"], "octo-org/octo-repo");
        assert_eq!(v["repository_owner"], "octo-org");
        assert_eq!(v["ref"], "refs/heads/main");
        assert_eq!(v["ref_type"], "branch");
        assert_eq!(
            v["job_workflow_ref"],
            "octo-org/octo-repo/.github/workflows/ci.yml@refs/heads/main"
        );
        let env = github(&common("repo:o/r:environment:Production"));
        assert_eq!(env["environment"], "Production");
        let pr = github(&common("repo:o/r:pull_request"));
        assert_eq!(pr["event_name"], "pull_request");
        let tag = github(&common("repo:o/r:ref:refs/tags/v1"));
        assert_eq!(tag["ref_type"], "tag");
        let custom = github(&common("repository_owner:o:environment:x"));
        assert!(custom.get("repository").is_none());
        assert_eq!(custom["sub"], "repository_owner:o:environment:x");
    }
}
