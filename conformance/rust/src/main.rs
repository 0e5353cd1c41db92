//! Drives the crates.io `azure_identity` crate, unmodified, against misim.
//!
//! Usage (prints one JSON line, `{"token": ..., "expires_on": <unix>}` or
//! `{"error": ...}` with exit 1):
//!   misim-rust-client secret --scope S [--authority-from-env]
//!   misim-rust-client certificate --scope S [--authority-from-env]
//!   misim-rust-client managed-identity --scope S [--client-id ID | --object-id ID]
//!   misim-rust-client workload-identity --scope S
//!
//! Configuration is only through the crate's documented settings:
//! - authority host: `ClientOptions::cloud = CloudConfiguration::Custom { authority_host:
//!   $MISIM_ENTRA_URL }`, or with `--authority-from-env` the `AZURE_AUTHORITY_HOST`
//!   environment variable (the caller sets it);
//! - TLS trust: the crate's default reqwest/rustls client reads `SSL_CERT_FILE`;
//! - managed identity: `IDENTITY_ENDPOINT` + `IDENTITY_HEADER` (set by `misim vm exec --app-service`);
//! - workload identity: `AZURE_CLIENT_ID`, `AZURE_TENANT_ID`, `AZURE_FEDERATED_TOKEN_FILE` and
//!   `AZURE_AUTHORITY_HOST`, as the AKS webhook sets them (here: `misim pod exec`).
//!
//! Credentials come from misim.env: MISIM_TENANT_ID, MISIM_ADMIN_CLIENT_ID,
//! MISIM_ADMIN_CLIENT_SECRET, MISIM_ADMIN_CERT_PATH (PEM: key + certificate).

use azure_core::{
    cloud::{CloudConfiguration, CustomConfiguration},
    credentials::{Secret, SecretBytes, TokenCredential},
    http::ClientOptions,
};
use azure_identity::{
    ClientCertificateCredential, ClientCertificateCredentialOptions, ClientSecretCredential,
    ClientSecretCredentialOptions, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    UserAssignedId, WorkloadIdentityCredential,
};
use std::{process::ExitCode, sync::Arc};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    command: String,
    scope: Option<String>,
    client_id: Option<String>,
    object_id: Option<String>,
    authority_from_env: bool,
}

fn parse_args() -> Result<Args, BoxError> {
    let mut it = std::env::args().skip(1);
    let command = it.next().ok_or("usage: misim-rust-client <secret|certificate|managed-identity|workload-identity> --scope S")?;
    let mut args = Args { command, scope: None, client_id: None, object_id: None, authority_from_env: false };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--scope" => args.scope = Some(it.next().ok_or("--scope needs a value")?),
            "--client-id" => args.client_id = Some(it.next().ok_or("--client-id needs a value")?),
            "--object-id" => args.object_id = Some(it.next().ok_or("--object-id needs a value")?),
            "--authority-from-env" => args.authority_from_env = true,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    Ok(args)
}

fn env(name: &str) -> Result<String, BoxError> {
    std::env::var(name).map_err(|_| format!("{name} is not set").into())
}

/// ClientOptions with the misim authority host, unless the crate should read AZURE_AUTHORITY_HOST.
fn client_options(authority_from_env: bool) -> Result<ClientOptions, BoxError> {
    let mut options = ClientOptions::default();
    if !authority_from_env {
        let mut custom = CustomConfiguration::default();
        custom.authority_host = env("MISIM_ENTRA_URL")?;
        options.cloud = Some(Arc::new(CloudConfiguration::from(custom)));
    }
    Ok(options)
}

/// ClientCertificateCredential takes PKCS#12 (DER) bytes only; misim hands out a PEM
/// (private key + certificate), so bundle it into a password-less PKCS#12 first.
fn pem_to_pkcs12(path: &str) -> Result<Vec<u8>, BoxError> {
    let pem = std::fs::read(path).map_err(|e| format!("reading {path}: {e}"))?;
    let key = openssl::pkey::PKey::private_key_from_pem(&pem)?;
    let mut certs = openssl::x509::X509::stack_from_pem(&pem)?.into_iter();
    let cert = certs.next().ok_or_else(|| format!("{path} holds no certificate"))?;
    let mut builder = openssl::pkcs12::Pkcs12::builder();
    builder.name("misim-admin").pkey(&key).cert(&cert);
    let rest: Vec<_> = certs.collect();
    if !rest.is_empty() {
        let mut chain = openssl::stack::Stack::new()?;
        for c in rest {
            chain.push(c)?;
        }
        builder.ca(chain);
    }
    Ok(builder.build2("")?.to_der()?)
}

fn credential(args: &Args) -> Result<Arc<dyn TokenCredential>, BoxError> {
    Ok(match args.command.as_str() {
        "secret" => {
            let options = ClientSecretCredentialOptions { client_options: client_options(args.authority_from_env)? };
            ClientSecretCredential::new(
                &env("MISIM_TENANT_ID")?,
                env("MISIM_ADMIN_CLIENT_ID")?,
                Secret::new(env("MISIM_ADMIN_CLIENT_SECRET")?),
                Some(options),
            )?
        }
        "certificate" => {
            let options = ClientCertificateCredentialOptions {
                client_options: client_options(args.authority_from_env)?,
                ..Default::default()
            };
            ClientCertificateCredential::new(
                env("MISIM_TENANT_ID")?,
                env("MISIM_ADMIN_CLIENT_ID")?,
                SecretBytes::new(pem_to_pkcs12(&env("MISIM_ADMIN_CERT_PATH")?)?),
                Some(options),
            )?
        }
        "managed-identity" => {
            let user_assigned_id = match (&args.client_id, &args.object_id) {
                (Some(_), Some(_)) => return Err("give at most one of --client-id, --object-id".into()),
                (Some(id), None) => Some(UserAssignedId::ClientId(id.clone())),
                (None, Some(id)) => Some(UserAssignedId::ObjectId(id.clone())),
                (None, None) => None,
            };
            ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                user_assigned_id,
                ..Default::default()
            }))?
        }
        // Everything from the pod's environment, as on AKS.
        "workload-identity" => WorkloadIdentityCredential::new(None)?,
        other => return Err(format!("unknown subcommand {other:?}").into()),
    })
}

async fn run() -> Result<serde_json::Value, BoxError> {
    let args = parse_args()?;
    let scope = args.scope.clone().ok_or("--scope is required")?;
    let cred = credential(&args)?;
    let token = cred.get_token(&[scope.as_str()], None).await?;
    Ok(serde_json::json!({
        "token": token.token.secret(),
        "expires_on": token.expires_on.unix_timestamp(),
    }))
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            // The full error chain: azure_core errors carry their cause as the source.
            let mut msg = e.to_string();
            let mut src = e.source();
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            println!("{}", serde_json::json!({ "error": msg }));
            ExitCode::FAILURE
        }
    }
}
