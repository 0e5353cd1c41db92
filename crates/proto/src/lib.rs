//! gRPC contracts between the misim services.
//!
//! Generated code stays at the edge: services convert these messages to their
//! own domain types on receipt. [`status`] maps domain error codes to gRPC and
//! carries an error's reason as a `google.rpc.ErrorInfo` detail.

pub mod entra {
    //! `misim.entra.v1`: the directory (service principals, tokens, keys).
    pub mod v1 {
        #![allow(clippy::all, missing_docs, rust_2018_idioms)]
        tonic::include_proto!("misim.entra.v1");
    }
}

pub mod imds {
    //! `misim.imds.v1`: per-VM identity configuration pushed by ARM.
    pub mod v1 {
        #![allow(clippy::all, missing_docs, rust_2018_idioms)]
        tonic::include_proto!("misim.imds.v1");
    }
}

pub mod arm {
    //! `misim.arm.v1`: RBAC decisions for data planes.
    pub mod v1 {
        #![allow(clippy::all, missing_docs, rust_2018_idioms)]
        tonic::include_proto!("misim.arm.v1");
    }
}

pub mod oidc {
    //! `misim.oidc.v1`: the sandbox's OIDC token issuers (Kubernetes, GitHub Actions).
    pub mod v1 {
        #![allow(clippy::all, missing_docs, rust_2018_idioms)]
        tonic::include_proto!("misim.oidc.v1");
    }
}

pub mod admin {
    //! `misim.admin.v1`: the sandbox owner's toolkit (the virtual clock, Entra's signing keys,
    //! fault injection, the decision log).
    pub mod v1 {
        #![allow(clippy::all, missing_docs, rust_2018_idioms)]
        tonic::include_proto!("misim.admin.v1");
    }
}

/// Encoded `FileDescriptorSet` of every misim proto, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("misim_descriptor");

pub mod status;
pub use status::{ProtocolError, code_to_status, required, status_to_code};

pub mod auth;
pub mod clock;
pub mod faults;
pub mod keys;
pub mod server;

/// Every VM IMDS serves, page by page (`Control.ListVms`).
pub async fn all_vms<C>(
    client: &imds::v1::control_client::ControlClient<C>,
) -> Result<Vec<imds::v1::Vm>, tonic::Status>
where
    C: GrpcChannel,
{
    all_pages(|page_token| {
        let mut c = client.clone();
        async move {
            let r = c
                .list_vms(imds::v1::ListVmsRequest {
                    page_size: 0,
                    page_token,
                })
                .await?
                .into_inner();
            Ok((r.vms, r.next_page_token))
        }
    })
    .await
}

/// Every principal of the tenant, page by page (`Directory.ListServicePrincipals`).
pub async fn all_principals<C>(
    client: &entra::v1::directory_client::DirectoryClient<C>,
) -> Result<Vec<entra::v1::ServicePrincipal>, tonic::Status>
where
    C: GrpcChannel,
{
    all_pages(|page_token| {
        let mut c = client.clone();
        async move {
            let r = c
                .list_service_principals(entra::v1::ListServicePrincipalsRequest {
                    page_size: 0,
                    page_token,
                })
                .await?
                .into_inner();
            Ok((r.service_principals, r.next_page_token))
        }
    })
    .await
}

/// What a generated client needs of its channel (tonic's own bounds), and
/// `Clone`: [`ControlChannel`](auth::ControlChannel) and
/// [`PeerChannel`](faults::PeerChannel) both are.
pub trait GrpcChannel:
    tonic::client::GrpcService<
        tonic::body::Body,
        Error: Into<tonic::codegen::StdError>,
        ResponseBody: tonic::codegen::Body<
            Data = tonic::codegen::Bytes,
            Error: Into<tonic::codegen::StdError> + Send,
        > + Send
                          + 'static,
    > + Clone
{
}

impl<C> GrpcChannel for C where
    C: tonic::client::GrpcService<
            tonic::body::Body,
            Error: Into<tonic::codegen::StdError>,
            ResponseBody: tonic::codegen::Body<
                Data = tonic::codegen::Bytes,
                Error: Into<tonic::codegen::StdError> + Send,
            > + Send
                              + 'static,
        > + Clone
{
}

/// Every item of a paged list call (`ListVms`, `ListServicePrincipals`):
/// `fetch` gets each page's token (empty for the first) and returns the
/// page's items and its `next_page_token`, empty on the last page.
pub async fn all_pages<T, F, Fut>(mut fetch: F) -> Result<Vec<T>, tonic::Status>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, String), tonic::Status>>,
{
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let (items, next) = fetch(token).await?;
        all.extend(items);
        if next.is_empty() {
            return Ok(all);
        }
        token = next;
    }
}

/// Most items one page of a paged list call carries.
pub const PAGE_MAX: usize = 1000;

/// A list request's `page_size` as a count: 0 means [`PAGE_MAX`], and more
/// than [`PAGE_MAX`] counts as [`PAGE_MAX`]; a negative size is refused.
pub fn page_size(requested: i32) -> Result<usize, tonic::Status> {
    match usize::try_from(requested) {
        Err(_) => Err(tonic::Status::invalid_argument(
            "page_size must not be negative",
        )),
        Ok(0) => Ok(PAGE_MAX),
        Ok(n) => Ok(n.min(PAGE_MAX)),
    }
}
