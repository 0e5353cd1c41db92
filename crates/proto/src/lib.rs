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
