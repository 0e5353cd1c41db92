//! Microsoft Graph applications: app registrations that own password and key
//! credentials. The service principal of an application is an ordinary
//! [`Principal`] of kind `Application` whose `application_object_id` points
//! here; the token endpoints authenticate it with this application's
//! credentials.

use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::directory::{Directory, hash_secret, key};
use super::graph_permission::GraphPermission;
use super::principal::{KeyCredential, Principal, PrincipalKind};
use crate::EntraError;

/// Default lifetime of a password credential without `endDateTime` (Graph: 2 years).
const DEFAULT_SECRET_LIFETIME_SECS: i64 = 2 * 365 * 86400;
/// Length of generated client secrets.
const SECRET_LEN: usize = 40;
const SECRET_ALPHABET: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789~._-";
/// The letters and digits at the front of [`SECRET_ALPHABET`].
const SECRET_ALPHANUMERIC: usize = 62;

/// An application registration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Application {
    /// Object id (`id` in Graph).
    pub object_id: String,
    /// App (client) id.
    pub app_id: String,
    /// Display name.
    pub display_name: String,
    /// Creation time, Unix seconds.
    pub created_unix: i64,
    /// App ID URIs.
    #[serde(default)]
    pub identifier_uris: Vec<String>,
    /// `signInAudience` (default `AzureADMyOrg`).
    #[serde(default)]
    pub sign_in_audience: Option<String>,
    /// Client secrets (hashed).
    #[serde(default)]
    pub password_credentials: Vec<PasswordCredential>,
    /// Certificates.
    #[serde(default)]
    pub key_credentials: Vec<KeyCredential>,
    /// Federated identity credentials (`federatedIdentityCredentials`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub federated_credentials: Vec<super::federation::FederatedCredential>,
    /// Other Graph properties as the client last set them (`web`, `api`, `notes`, ...).
    #[serde(default)]
    pub properties: Map<String, Value>,
}

/// A client secret of an application.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PasswordCredential {
    /// Key id (GUID).
    pub key_id: String,
    /// Display name.
    pub display_name: Option<String>,
    /// The first three characters of the secret.
    pub hint: String,
    /// Upper-case hex SHA-256 of the secret.
    pub secret_sha256: String,
    /// Validity start, Unix seconds.
    pub start_unix: i64,
    /// Validity end, Unix seconds.
    pub end_unix: i64,
}

/// One entry of a `keyCredentials` write.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyCredentialInput {
    /// `keyId`: names an existing credential to keep when `der` is absent.
    pub(crate) key_id: Option<String>,
    /// The DER certificate (`key`, base64 in JSON).
    pub(crate) der: Option<Vec<u8>>,
    pub(crate) display_name: Option<String>,
    pub(crate) start_unix: Option<i64>,
    pub(crate) end_unix: Option<i64>,
}

/// The writable properties of an application (POST or PATCH).
#[derive(Debug, Clone, Default)]
pub(crate) struct AppChanges {
    pub(crate) display_name: Option<String>,
    pub(crate) identifier_uris: Option<Vec<String>>,
    pub(crate) sign_in_audience: Option<String>,
    pub(crate) key_credentials: Option<Vec<KeyCredentialInput>>,
    pub(crate) properties: Map<String, Value>,
}

/// A new client secret: the stored credential and the secret itself (shown once).
#[derive(Debug)]
pub(crate) struct NewSecret {
    pub(crate) credential: PasswordCredential,
    pub(crate) secret_text: String,
}

/// An application, its service principal and its first secret.
#[derive(Debug)]
pub(crate) struct NewApplicationPrincipal {
    pub(crate) application: Application,
    pub(crate) principal: Principal,
    pub(crate) secret: NewSecret,
}

fn generate_secret() -> Result<String, EntraError> {
    let mut bytes = [0u8; SECRET_LEN];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| EntraError::Signing(misim_token::TokenError::Key("no randomness".into())))?;
    Ok(bytes
        .iter()
        .enumerate()
        .map(|(i, b)| {
            // Never a leading '-': the Azure CLI reads `-p -abc...` as another option and
            // refuses the login (Azure's own secrets start with letters and digits too).
            let alphabet = if i == 0 {
                &SECRET_ALPHABET[..SECRET_ALPHANUMERIC]
            } else {
                SECRET_ALPHABET
            };
            char::from(alphabet[usize::from(*b) % alphabet.len()])
        })
        .collect())
}

impl Directory {
    pub(crate) fn get_application(
        &self,
        object_id: &str,
    ) -> Result<Option<Application>, EntraError> {
        Ok(self.applications.get(&key(object_id))?)
    }

    pub(crate) fn get_application_by_app_id(
        &self,
        app_id: &str,
    ) -> Result<Option<Application>, EntraError> {
        match self.apps_by_app_id.get(&key(app_id))? {
            Some(oid) => self.get_application(&oid),
            None => Ok(None),
        }
    }

    pub(crate) fn list_applications(&self) -> Result<Vec<Application>, EntraError> {
        let mut all: Vec<Application> = self
            .applications
            .all()?
            .into_iter()
            .map(|(_, a)| a)
            .collect();
        all.sort_by(|a, b| (a.created_unix, &a.object_id).cmp(&(b.created_unix, &b.object_id)));
        Ok(all)
    }

    /// The application whose credentials `p` authenticates with, if any.
    pub(crate) fn application_of(&self, p: &Principal) -> Result<Option<Application>, EntraError> {
        match &p.application_object_id {
            Some(oid) => self.get_application(oid),
            None => Ok(None),
        }
    }

    /// Turns `keyCredentials` input into stored credentials: new certificates
    /// are parsed, entries without a key keep the existing credential of that id.
    fn build_key_credentials(
        &self,
        existing: &[KeyCredential],
        inputs: Vec<KeyCredentialInput>,
    ) -> Result<Vec<KeyCredential>, EntraError> {
        let mut out: Vec<KeyCredential> = Vec::new();
        for (i, input) in inputs.into_iter().enumerate() {
            let k = match input.der {
                Some(der) => {
                    let info = misim_token::cert::parse_cert(&der).map_err(|e| {
                        EntraError::BadCertificate(format!("keyCredentials[{i}]: {e}"))
                    })?;
                    // Uploaded credentials stay RSA, as Entra takes them; only the
                    // identities' own certificates (ARM-made, never seen by clients) are P-256.
                    if info.key_alg != misim_token::cert::KeyAlg::Rsa {
                        return Err(EntraError::BadCertificate(format!(
                            "keyCredentials[{i}]: certificate key is not RSA"
                        )));
                    }
                    let start = input
                        .start_unix
                        .map_or(info.not_before, |s| s.max(info.not_before));
                    let end = input
                        .end_unix
                        .map_or(info.not_after, |e| e.min(info.not_after));
                    if end < start {
                        return Err(EntraError::InvalidRequest(format!(
                            "keyCredentials[{i}]: the end date is before the start date or outside the certificate's validity"
                        )));
                    }
                    KeyCredential {
                        key_id: input
                            .key_id
                            .filter(|id| crate::config::is_guid(id))
                            .unwrap_or_else(|| self.ids.guid()),
                        certificate_der: der,
                        rsa_public_key: info.public_key,
                        thumbprint_sha1: misim_token::hex_upper(&info.sha1),
                        thumbprint_sha256: misim_token::hex_upper(&info.sha256),
                        start_unix: start,
                        end_unix: end,
                        display_name: input.display_name,
                    }
                }
                None => {
                    let id = input.key_id.ok_or_else(|| {
                        EntraError::InvalidRequest(format!(
                            "keyCredentials[{i}]: 'key' is required for a new credential"
                        ))
                    })?;
                    let mut k = existing
                        .iter()
                        .find(|k| k.key_id.eq_ignore_ascii_case(&id))
                        .cloned()
                        .ok_or_else(|| {
                            EntraError::InvalidRequest(format!(
                                "keyCredentials[{i}]: no key credential {id} to keep; 'key' is required"
                            ))
                        })?;
                    if input.display_name.is_some() {
                        k.display_name = input.display_name;
                    }
                    k
                }
            };
            if out
                .iter()
                .any(|o| o.thumbprint_sha1 == k.thumbprint_sha1 || o.key_id == k.key_id)
            {
                return Err(EntraError::InvalidRequest(format!(
                    "keyCredentials[{i}]: duplicate key credential"
                )));
            }
            out.push(k);
        }
        Ok(out)
    }

    fn apply(&self, app: &mut Application, changes: AppChanges) -> Result<(), EntraError> {
        if let Some(name) = changes.display_name {
            app.display_name = name;
        }
        if let Some(uris) = changes.identifier_uris {
            app.identifier_uris = uris;
        }
        if let Some(aud) = changes.sign_in_audience {
            app.sign_in_audience = Some(aud);
        }
        if let Some(keys) = changes.key_credentials {
            app.key_credentials = self.build_key_credentials(&app.key_credentials, keys)?;
        }
        app.properties.extend(changes.properties);
        Ok(())
    }

    /// Registers an application (`POST /applications`).
    pub(crate) async fn create_application(
        &self,
        changes: AppChanges,
    ) -> Result<Application, EntraError> {
        let display_name = changes
            .display_name
            .clone()
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| {
                EntraError::InvalidRequest("Property 'displayName' is required.".into())
            })?;
        let _w = self.write.lock().await;
        let mut app = Application {
            object_id: self.ids.guid(),
            app_id: self.ids.guid(),
            display_name,
            created_unix: self.clock.unix(),
            identifier_uris: Vec::new(),
            sign_in_audience: None,
            password_credentials: Vec::new(),
            key_credentials: Vec::new(),
            federated_credentials: Vec::new(),
            properties: Map::new(),
        };
        self.apply(&mut app, changes)?;
        self.applications.put(&key(&app.object_id), &app).await?;
        self.apps_by_app_id
            .put(&key(&app.app_id), &key(&app.object_id))
            .await?;
        Ok(app)
    }

    /// Updates an application (`PATCH /applications/{id}`).
    pub(crate) async fn update_application(
        &self,
        object_id: &str,
        changes: AppChanges,
    ) -> Result<Application, EntraError> {
        if changes
            .display_name
            .as_deref()
            .is_some_and(|n| n.trim().is_empty())
        {
            return Err(EntraError::InvalidRequest(
                "Property 'displayName' must not be empty.".into(),
            ));
        }
        let _w = self.write.lock().await;
        let mut app = self
            .get_application(object_id)?
            .ok_or_else(|| EntraError::ApplicationNotFound(object_id.to_owned()))?;
        self.apply(&mut app, changes)?;
        self.applications.put(&key(&app.object_id), &app).await?;
        Ok(app)
    }

    /// Deletes an application and its service principal. False when absent.
    pub(crate) async fn delete_application(&self, object_id: &str) -> Result<bool, EntraError> {
        let _w = self.write.lock().await;
        let Some(app) = self.get_application(object_id)? else {
            return Ok(false);
        };
        // The principal first: from here on no token can be issued for the app.
        if let Some(oid) = self.by_app.get(&key(&app.app_id))?
            && let Some(p) = self.get(&oid)?
        {
            self.remove_principal(&p).await?;
        }
        self.apps_by_app_id.remove(&key(&app.app_id)).await?;
        self.applications.remove(&key(&app.object_id)).await?;
        Ok(true)
    }

    /// Adds a generated client secret (`addPassword`).
    pub(crate) async fn add_password(
        &self,
        object_id: &str,
        display_name: Option<String>,
        start_unix: Option<i64>,
        end_unix: Option<i64>,
    ) -> Result<NewSecret, EntraError> {
        let secret_text = generate_secret()?;
        let _w = self.write.lock().await;
        let mut app = self
            .get_application(object_id)?
            .ok_or_else(|| EntraError::ApplicationNotFound(object_id.to_owned()))?;
        let start = start_unix.unwrap_or_else(|| self.clock.unix());
        let end = end_unix.unwrap_or(start + DEFAULT_SECRET_LIFETIME_SECS);
        if end <= start {
            return Err(EntraError::InvalidRequest(
                "passwordCredential endDateTime must be after startDateTime.".into(),
            ));
        }
        let credential = PasswordCredential {
            key_id: self.ids.guid(),
            display_name,
            hint: secret_text.chars().take(3).collect(),
            secret_sha256: hash_secret(&secret_text),
            start_unix: start,
            end_unix: end,
        };
        app.password_credentials.push(credential.clone());
        self.applications.put(&key(&app.object_id), &app).await?;
        Ok(NewSecret {
            credential,
            secret_text,
        })
    }

    /// Removes a client secret (`removePassword`).
    pub(crate) async fn remove_password(
        &self,
        object_id: &str,
        key_id: &str,
    ) -> Result<(), EntraError> {
        let _w = self.write.lock().await;
        let mut app = self
            .get_application(object_id)?
            .ok_or_else(|| EntraError::ApplicationNotFound(object_id.to_owned()))?;
        let before = app.password_credentials.len();
        app.password_credentials
            .retain(|c| !c.key_id.eq_ignore_ascii_case(key_id));
        if app.password_credentials.len() == before {
            return Err(EntraError::InvalidRequest(format!(
                "No password credential found with keyId {key_id}."
            )));
        }
        self.applications.put(&key(&app.object_id), &app).await?;
        Ok(())
    }

    /// Creates the service principal of the application with `app_id`
    /// (`POST /servicePrincipals`).
    pub(crate) async fn create_app_principal(&self, app_id: &str) -> Result<Principal, EntraError> {
        let _w = self.write.lock().await;
        let app = self.get_application_by_app_id(app_id)?.ok_or_else(|| {
            EntraError::InvalidRequest(format!(
                "The appId '{app_id}' of the service principal does not reference a valid application object."
            ))
        })?;
        if self.by_app.get(&key(&app.app_id))?.is_some() {
            return Err(EntraError::AlreadyExists(format!(
                "The service principal cannot be created, updated, or restored because the service principal name {} is already in use.",
                app.app_id
            )));
        }
        let p = Principal {
            object_id: self.ids.guid(),
            app_id: app.app_id.clone(),
            display_name: app.display_name.clone(),
            kind: PrincipalKind::Application,
            alternative_names: Vec::new(),
            created_unix: self.clock.unix(),
            managed_identity_resource_id: None,
            request_id: None,
            secret_sha256: None,
            key_credentials: Vec::new(),
            application_object_id: Some(app.object_id.clone()),
            federated_credentials: Vec::new(),
        };
        self.principals.put(&key(&p.object_id), &p).await?;
        self.by_app.put(&key(&p.app_id), &key(&p.object_id)).await?;
        Ok(p)
    }

    /// What `az ad sp create-for-rbac` does in three Graph calls: registers an
    /// application, creates its service principal and adds a client secret.
    pub(crate) async fn create_application_principal(
        &self,
        display_name: &str,
    ) -> Result<NewApplicationPrincipal, EntraError> {
        let application = self
            .create_application(AppChanges {
                display_name: Some(display_name.to_owned()),
                ..AppChanges::default()
            })
            .await?;
        let made = async {
            let principal = self.create_app_principal(&application.app_id).await?;
            let secret = self
                .add_password(&application.object_id, Some("misim".into()), None, None)
                .await?;
            Ok::<_, EntraError>((principal, secret))
        };
        let (principal, secret) = match made.await {
            Ok(made) => made,
            Err(e) => {
                // The caller cannot retry this call idempotently, so leave no
                // half-made application behind (it takes its principal along).
                if let Err(cleanup) = self.delete_application(&application.object_id).await {
                    tracing::warn!(app = %application.object_id, error = %cleanup, "could not remove a half-created application");
                }
                return Err(e);
            }
        };
        Ok(NewApplicationPrincipal {
            application,
            principal,
            secret,
        })
    }

    /// The Graph permission granted to `object_id`, if any.
    pub(crate) fn graph_permission(
        &self,
        object_id: &str,
    ) -> Result<Option<GraphPermission>, EntraError> {
        Ok(self.graph_permissions.get(&key(object_id))?)
    }

    /// Grants `object_id` a Graph permission, or (`None`) revokes it.
    pub(crate) async fn set_graph_permission(
        &self,
        object_id: &str,
        permission: Option<GraphPermission>,
    ) -> Result<(), EntraError> {
        match permission {
            Some(p) => {
                self.graph_permissions.put(&key(object_id), &p).await?;
            }
            None => {
                self.graph_permissions.remove(&key(object_id)).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_and_from_the_alphabet() {
        let s = generate_secret().unwrap();
        assert_eq!(s.len(), SECRET_LEN);
        assert!(s.bytes().all(|b| SECRET_ALPHABET.contains(&b)));
        assert_ne!(s, generate_secret().unwrap());
    }

    /// A secret starting with '-' breaks `az login ... -p <secret>` (1 in 66 did).
    #[test]
    fn secrets_start_with_a_letter_or_a_digit() {
        assert!(
            SECRET_ALPHABET[..SECRET_ALPHANUMERIC]
                .iter()
                .all(u8::is_ascii_alphanumeric)
        );
        for _ in 0..2000 {
            let s = generate_secret().unwrap();
            assert!(s.as_bytes()[0].is_ascii_alphanumeric(), "{s}");
        }
    }
}
