//! Federated identity credentials (docs/workload-identity.md): the trust an
//! application or a managed identity places in an external token issuer, and
//! the rules Entra applies when such a token is presented as a client
//! assertion.
//!
//! A credential lives on its owner's record: an application registration's on
//! the [`Application`](super::application::Application), a managed identity's
//! on its [`Principal`]. Deleting the owner deletes its credentials.

use serde::{Deserialize, Serialize};

use super::directory::{Directory, key};
use super::principal::Principal;
use crate::EntraError;

/// The audience Entra expects in external tokens by default, and the resource
/// of a managed identity's token used as a federated credential.
pub const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";
/// At most this many credentials per application or managed identity
/// (workload-identity-federation-considerations).
pub const MAX_PER_OWNER: usize = 20;
/// Issuer, subject, audience and description are limited to 600 characters,
/// the name to 120 (Graph's federatedIdentityCredential resource).
const MAX_FIELD: usize = 600;
const MAX_NAME: usize = 120;
const MIN_NAME: usize = 3;
/// Entra refuses external tokens whose `exp` is more than 1 day 1 hour
/// (`1.01:00:00`) after `iat` (AADSTS70023, docs/workload-identity.md).
pub(crate) const MAX_EXTERNAL_LIFETIME_SECS: i64 = 25 * 3600;

/// A stored federated identity credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FederatedCredential {
    /// Id (GUID).
    pub id: String,
    /// Name: unique per owner (case-insensitive), immutable.
    pub name: String,
    /// The external issuer, matched exactly against `iss`.
    pub issuer: String,
    /// The external subject, matched exactly against `sub`.
    pub subject: String,
    /// Accepted audiences (one).
    pub audiences: Vec<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The writable properties of a credential (a create, a replace or a patch).
#[derive(Debug, Clone, Default)]
pub(crate) struct CredentialInput {
    pub(crate) name: Option<String>,
    pub(crate) issuer: Option<String>,
    pub(crate) subject: Option<String>,
    pub(crate) audiences: Option<Vec<String>>,
    pub(crate) description: Option<String>,
}

/// Whose credentials: an application registration (by object id) or a
/// service principal (by app id; one that belongs to an application keeps
/// them on the application, as its key credentials are).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Owner<'a> {
    Application(&'a str),
    Principal(&'a str),
}

fn bad(m: impl Into<String>) -> EntraError {
    EntraError::InvalidRequest(m.into())
}

/// True for `https://host...` with a non-empty host and no whitespace.
fn is_https_url(s: &str) -> bool {
    s.strip_prefix("https://").is_some_and(|rest| {
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        !host.is_empty() && !s.chars().any(char::is_whitespace)
    })
}

/// The name rule of the considerations page: 3 to 120 characters, letters,
/// digits, hyphens and underscores, starting with a letter or digit.
fn check_name(name: &str) -> Result<(), EntraError> {
    let ok = (MIN_NAME..=MAX_NAME).contains(&name.chars().count())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(bad(format!(
            "Invalid federated identity credential name '{name}': it must be 3 to 120 characters, start with a letter or a number and contain only letters, numbers, hyphens and underscores."
        )))
    }
}

fn check_len(what: &str, v: &str) -> Result<(), EntraError> {
    if v.chars().count() > MAX_FIELD {
        return Err(bad(format!(
            "Property '{what}' exceeds the limit of {MAX_FIELD} characters."
        )));
    }
    Ok(())
}

/// Validates `c` against its siblings `others` (the owner's other credentials).
fn validate(c: &FederatedCredential, others: &[FederatedCredential]) -> Result<(), EntraError> {
    check_name(&c.name)?;
    if c.issuer.trim().is_empty() {
        return Err(bad("Property 'issuer' is required."));
    }
    if !is_https_url(&c.issuer) {
        return Err(bad(format!(
            "Invalid issuer '{}': the issuer must be a valid URL using the https scheme.",
            c.issuer
        )));
    }
    if c.subject.is_empty() {
        return Err(bad("Property 'subject' is required."));
    }
    if c.subject.trim() != c.subject {
        return Err(bad(
            "Property 'subject' must not begin or end with whitespace.",
        ));
    }
    match c.audiences.as_slice() {
        [a] if !a.trim().is_empty() => check_len("audiences", a)?,
        [] => return Err(bad("Property 'audiences' is required.")),
        [_] => return Err(bad("Property 'audiences' must not be empty.")),
        _ => {
            return Err(bad("Property 'audiences' can only hold a single value."));
        }
    }
    check_len("issuer", &c.issuer)?;
    check_len("subject", &c.subject)?;
    if let Some(d) = &c.description {
        check_len("description", d)?;
    }
    if others.iter().any(|o| o.name.eq_ignore_ascii_case(&c.name)) {
        return Err(EntraError::AlreadyExists(format!(
            "A federated identity credential with name '{}' already exists.",
            c.name
        )));
    }
    if others
        .iter()
        .any(|o| o.issuer == c.issuer && o.subject == c.subject)
    {
        return Err(EntraError::AlreadyExists(format!(
            "A federated identity credential with issuer '{}' and subject '{}' already exists.",
            c.issuer, c.subject
        )));
    }
    Ok(())
}

fn find(all: &[FederatedCredential], id_or_name: &str) -> Option<usize> {
    all.iter().position(|c| {
        c.id.eq_ignore_ascii_case(id_or_name) || c.name.eq_ignore_ascii_case(id_or_name)
    })
}

/// What the exchange reads from an external token (unverified at first).
#[derive(Debug, Clone)]
pub(crate) struct ExternalClaims {
    pub(crate) iss: String,
    pub(crate) sub: String,
    pub(crate) aud: Vec<String>,
    pub(crate) exp: Option<i64>,
    pub(crate) nbf: Option<i64>,
    pub(crate) iat: Option<i64>,
}

/// The credential that trusts a token with `claims`, or Entra's refusal:
/// issuer first, then subject, then audience, each compared exactly
/// (case-sensitive), as Entra does since 2024-2025 (docs/workload-identity.md).
pub(crate) fn match_credential<'a>(
    creds: &'a [FederatedCredential],
    claims: &ExternalClaims,
) -> Result<&'a FederatedCredential, EntraError> {
    if creds.is_empty() {
        return Err(EntraError::NoFederatedCredential {
            issuer: claims.iss.clone(),
            subject: claims.sub.clone(),
            audience: claims.aud.join(","),
        });
    }
    let by_issuer: Vec<&FederatedCredential> =
        creds.iter().filter(|c| c.issuer == claims.iss).collect();
    if by_issuer.is_empty() {
        return Err(EntraError::FederatedIssuerMismatch {
            issuer: claims.iss.clone(),
        });
    }
    let by_subject: Vec<&FederatedCredential> = by_issuer
        .iter()
        .copied()
        .filter(|c| c.subject == claims.sub)
        .collect();
    if by_subject.is_empty() {
        let case_only = by_issuer
            .iter()
            .any(|c| c.subject.eq_ignore_ascii_case(&claims.sub));
        return Err(if case_only {
            EntraError::FederatedSubjectCase {
                subject: claims.sub.clone(),
            }
        } else {
            EntraError::FederatedSubjectMismatch {
                subject: claims.sub.clone(),
            }
        });
    }
    by_subject
        .into_iter()
        .find(|c| c.audiences.iter().any(|a| claims.aud.contains(a)))
        .ok_or_else(|| EntraError::FederatedAudienceMismatch {
            audience: claims.aud.join(","),
        })
}

/// Entra's lifetime rules for external tokens, against `now` with `skew`
/// seconds of tolerance: `iat` and `exp` are required and at most
/// [`MAX_EXTERNAL_LIFETIME_SECS`] apart (AADSTS70023; a missing `iat` counts
/// as 0, as Entra reports it), and the token must be within `nbf`..`exp`
/// (AADSTS700024).
pub(crate) fn check_lifetime(c: &ExternalClaims, now: i64, skew: i64) -> Result<(), EntraError> {
    let exp = c.exp.unwrap_or(0);
    let iat = c.iat.unwrap_or(0);
    if exp.saturating_sub(iat) > MAX_EXTERNAL_LIFETIME_SECS || c.exp.is_none() {
        return Err(EntraError::FederatedTokenTooLong { iat, exp });
    }
    let nbf_ok = c.nbf.is_none_or(|nbf| now.saturating_add(skew) >= nbf);
    if now.saturating_sub(exp) > skew || !nbf_ok {
        return Err(EntraError::FederatedTokenTimeRange {
            now,
            nbf: c.nbf.unwrap_or(0),
            exp,
        });
    }
    Ok(())
}

impl Directory {
    /// The credentials a token exchange for `p` is checked against: its own
    /// and its application's.
    pub(crate) fn federated_for(
        &self,
        p: &Principal,
    ) -> Result<Vec<FederatedCredential>, EntraError> {
        let mut all = p.federated_credentials.clone();
        if let Some(app) = self.application_of(p)? {
            all.extend(app.federated_credentials);
        }
        Ok(all)
    }

    /// Where `owner`'s credentials live: `Ok(Err(app object id))` for an
    /// application, `Ok(Ok(principal))` for a principal of its own.
    fn resolve(&self, owner: Owner<'_>) -> Result<Result<Principal, String>, EntraError> {
        match owner {
            Owner::Application(oid) => match self.get_application(oid)? {
                Some(a) => Ok(Err(a.object_id)),
                None => Err(EntraError::ApplicationNotFound(oid.to_owned())),
            },
            Owner::Principal(app_id) => {
                let p = self
                    .get_by_app(app_id)?
                    .ok_or_else(|| EntraError::PrincipalNotFound(app_id.to_owned()))?;
                Ok(match p.application_object_id.clone() {
                    Some(app) => Err(app),
                    None => Ok(p),
                })
            }
        }
    }

    /// The credentials of `owner`, in creation order.
    pub(crate) fn list_federated(
        &self,
        owner: Owner<'_>,
    ) -> Result<Vec<FederatedCredential>, EntraError> {
        match self.resolve(owner)? {
            Ok(p) => Ok(p.federated_credentials),
            Err(app) => Ok(self
                .get_application(&app)?
                .map(|a| a.federated_credentials)
                .unwrap_or_default()),
        }
    }

    /// Runs `f` on `owner`'s credentials under the write lock and stores the result.
    async fn with_federated<T>(
        &self,
        owner: Owner<'_>,
        f: impl FnOnce(&mut Vec<FederatedCredential>) -> Result<T, EntraError>,
    ) -> Result<T, EntraError> {
        let _w = self.write.lock().await;
        match self.resolve(owner)? {
            Ok(mut p) => {
                let out = f(&mut p.federated_credentials)?;
                self.principals.put(&key(&p.object_id), &p).await?;
                Ok(out)
            }
            Err(app_oid) => {
                let mut app = self
                    .get_application(&app_oid)?
                    .ok_or_else(|| EntraError::ApplicationNotFound(app_oid.clone()))?;
                let out = f(&mut app.federated_credentials)?;
                self.applications.put(&key(&app.object_id), &app).await?;
                Ok(out)
            }
        }
    }

    /// Adds a credential (Graph's POST): its name must be new.
    pub(crate) async fn add_federated(
        &self,
        owner: Owner<'_>,
        input: CredentialInput,
    ) -> Result<FederatedCredential, EntraError> {
        let id = self.ids.guid();
        self.with_federated(owner, |all| {
            let c = new_credential(id, input)?;
            if all.len() >= MAX_PER_OWNER {
                return Err(bad(format!(
                    "The maximum number of federated identity credentials ({MAX_PER_OWNER}) has been reached."
                )));
            }
            validate(&c, all)?;
            all.push(c.clone());
            Ok(c)
        })
        .await
    }

    /// Creates or replaces (by name) a credential (ARM's PUT through gRPC).
    pub(crate) async fn put_federated(
        &self,
        owner: Owner<'_>,
        input: CredentialInput,
    ) -> Result<FederatedCredential, EntraError> {
        let id = self.ids.guid();
        self.with_federated(owner, |all| {
            let name = input.name.clone().unwrap_or_default();
            let existing = all.iter().position(|c| c.name.eq_ignore_ascii_case(&name));
            let mut c = new_credential(id, input)?;
            match existing {
                Some(i) => {
                    c.id = all[i].id.clone();
                    c.name = all[i].name.clone();
                    let others: Vec<_> = all.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, o)| o.clone()).collect();
                    validate(&c, &others)?;
                    all[i] = c.clone();
                }
                None => {
                    if all.len() >= MAX_PER_OWNER {
                        return Err(bad(format!(
                            "The maximum number of federated identity credentials ({MAX_PER_OWNER}) has been reached."
                        )));
                    }
                    validate(&c, all)?;
                    all.push(c.clone());
                }
            }
            Ok(c)
        })
        .await
    }

    /// Changes a credential's properties (Graph's PATCH); the name is immutable.
    pub(crate) async fn update_federated(
        &self,
        owner: Owner<'_>,
        id_or_name: &str,
        patch: CredentialInput,
    ) -> Result<Option<FederatedCredential>, EntraError> {
        self.with_federated(owner, |all| {
            let Some(i) = find(all, id_or_name) else {
                return Ok(None);
            };
            let mut c = all[i].clone();
            if let Some(n) = patch.name
                && n != c.name
            {
                return Err(bad("Property 'name' is read-only and cannot be changed."));
            }
            if let Some(v) = patch.issuer {
                c.issuer = v;
            }
            if let Some(v) = patch.subject {
                c.subject = v;
            }
            if let Some(v) = patch.audiences {
                c.audiences = v;
            }
            if patch.description.is_some() {
                c.description = patch.description;
            }
            let others: Vec<_> = all
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, o)| o.clone())
                .collect();
            validate(&c, &others)?;
            all[i] = c.clone();
            Ok(Some(c))
        })
        .await
    }

    /// Deletes a credential by id or name. False when there was none.
    pub(crate) async fn delete_federated(
        &self,
        owner: Owner<'_>,
        id_or_name: &str,
    ) -> Result<bool, EntraError> {
        self.with_federated(owner, |all| {
            Ok(match find(all, id_or_name) {
                Some(i) => {
                    all.remove(i);
                    true
                }
                None => false,
            })
        })
        .await
    }
}

fn new_credential(id: String, input: CredentialInput) -> Result<FederatedCredential, EntraError> {
    Ok(FederatedCredential {
        id,
        name: input
            .name
            .ok_or_else(|| bad("Property 'name' is required."))?,
        issuer: input.issuer.unwrap_or_default(),
        subject: input.subject.unwrap_or_default(),
        audiences: input
            .audiences
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| vec![TOKEN_EXCHANGE_AUDIENCE.to_owned()]),
        description: input.description.filter(|d| !d.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(name: &str, iss: &str, sub: &str) -> FederatedCredential {
        FederatedCredential {
            id: format!("id-{name}"),
            name: name.into(),
            issuer: iss.into(),
            subject: sub.into(),
            audiences: vec![TOKEN_EXCHANGE_AUDIENCE.into()],
            description: None,
        }
    }

    fn claims(iss: &str, sub: &str, aud: &str) -> ExternalClaims {
        ExternalClaims {
            iss: iss.into(),
            sub: sub.into(),
            aud: vec![aud.into()],
            exp: Some(1_000 + 3600),
            nbf: Some(1_000),
            iat: Some(1_000),
        }
    }

    const GH: &str = "https://token.actions.githubusercontent.com";

    #[test]
    fn names_issuers_and_audiences_are_validated() {
        let ok = cred("main-branch", GH, "repo:o/r:ref:refs/heads/main");
        assert!(validate(&ok, &[]).is_ok());
        for name in ["ab", "-lead", "has space", "dots.in.name", &"x".repeat(121)] {
            assert!(validate(&cred(name, GH, "s"), &[]).is_err(), "{name}");
        }
        assert!(validate(&cred("abc", "http://insecure.example", "s"), &[]).is_err());
        assert!(validate(&cred("abc", "https://", "s"), &[]).is_err());
        assert!(validate(&cred("abc", GH, ""), &[]).is_err());
        let mut two = ok.clone();
        two.audiences.push("b".into());
        assert!(validate(&two, &[]).is_err());
        let dup_name = cred("MAIN-branch", GH, "other");
        assert!(matches!(
            validate(&dup_name, std::slice::from_ref(&ok)),
            Err(EntraError::AlreadyExists(_))
        ));
        let dup_pair = cred("other", GH, &ok.subject);
        assert!(matches!(
            validate(&dup_pair, &[ok]),
            Err(EntraError::AlreadyExists(_))
        ));
    }

    #[test]
    fn matching_is_exact_and_says_what_differs() {
        let creds = [cred("gh", GH, "repo:Octo/App:ref:refs/heads/main")];
        let ok = claims(
            GH,
            "repo:Octo/App:ref:refs/heads/main",
            TOKEN_EXCHANGE_AUDIENCE,
        );
        assert_eq!(match_credential(&creds, &ok).unwrap().name, "gh");
        let e = |c: ExternalClaims| match_credential(&creds, &c).unwrap_err().oauth().1;
        assert_eq!(e(claims(&format!("{GH}/"), &ok.sub, &ok.aud[0])), 700211);
        assert_eq!(
            e(claims(GH, "repo:octo/app:ref:refs/heads/main", &ok.aud[0])),
            7002138
        );
        assert_eq!(
            e(claims(GH, "repo:Octo/App:pull_request", &ok.aud[0])),
            700213
        );
        assert_eq!(e(claims(GH, &ok.sub, "api://azureadtokenexchange")), 700212);
        assert_eq!(match_credential(&[], &ok).unwrap_err().oauth().1, 70021);
    }

    #[test]
    fn lifetimes() {
        let mut c = claims(GH, "s", "a");
        assert!(check_lifetime(&c, 1_000, 300).is_ok());
        assert_eq!(
            check_lifetime(&c, 1_000 + 3600 + 301, 300)
                .unwrap_err()
                .oauth()
                .1,
            700024
        );
        assert_eq!(
            check_lifetime(&c, 1_000 - 301, 300).unwrap_err().oauth().1,
            700024
        );
        c.exp = Some(1_000 + MAX_EXTERNAL_LIFETIME_SECS + 1);
        assert_eq!(check_lifetime(&c, 1_000, 300).unwrap_err().oauth().1, 70023);
        // Without `iat` Entra counts from 0, so any real expiry is too far.
        c.exp = Some(1_767_139_199);
        c.iat = None;
        assert_eq!(
            check_lifetime(&c, 1_767_139_000, 300)
                .unwrap_err()
                .oauth()
                .1,
            70023
        );
    }
}
