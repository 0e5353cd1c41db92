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

    /// Every VM, read page by page with `fetch` (a `Control.ListVms` call):
    /// one response holds at most 1,000 VMs.
    pub async fn all_vms<F, Fut>(mut fetch: F) -> Result<Vec<v1::Vm>, tonic::Status>
    where
        F: FnMut(v1::ListVmsRequest) -> Fut,
        Fut: std::future::Future<Output = Result<v1::ListVmsResponse, tonic::Status>>,
    {
        let mut vms = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = fetch(v1::ListVmsRequest {
                page_size: 0,
                page_token: std::mem::take(&mut page_token),
            })
            .await?;
            vms.extend(page.vms);
            if page.next_page_token.is_empty() {
                return Ok(vms);
            }
            page_token = page.next_page_token;
        }
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
