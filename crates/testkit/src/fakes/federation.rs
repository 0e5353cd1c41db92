//! A fake Entra `Federation`: federated identity credentials per application, as ARM pushes
//! them for user-assigned identities, with a gate a test can hold a write at.

use std::sync::Arc;

use misim_proto::entra::v1 as pb;
use misim_proto::entra::v1::federation_server::{Federation, FederationServer};
use parking_lot::Mutex;
use tokio::sync::{Notify, Semaphore};
use tonic::{Request, Response, Status};

use super::{SharedState, unimplemented};

/// A fake Entra `Federation` keeping credentials in the shared
/// [`FakeState`](super::FakeState) (by app id; a principal the fake `Directory` deletes
/// loses them) and logging every write there. Only the credential calls are modelled; the
/// issuer-key calls answer `UNIMPLEMENTED`. Clones share the gate.
#[derive(Debug, Clone)]
pub struct FakeFederation {
    state: SharedState,
    /// When set, `PutFederatedCredential` waits for one of its permits before it takes effect.
    gate: Arc<Mutex<Option<Arc<Semaphore>>>>,
    /// Notified as each `PutFederatedCredential` arrives, before the gate.
    arrived: Arc<Notify>,
    /// How many writes (puts and deletes) have taken effect.
    applied: Arc<tokio::sync::watch::Sender<usize>>,
}

impl FakeFederation {
    /// A federation API over `state`, with no gate.
    pub fn new(state: SharedState) -> Self {
        Self {
            state,
            gate: Arc::default(),
            arrived: Arc::default(),
            applied: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }

    /// From now on each `PutFederatedCredential` waits for a permit of `gate` (the test adds
    /// them) before it takes effect; `None` lets writes through again. A write already
    /// waiting keeps waiting on the gate it found.
    pub fn gate_puts(&self, gate: Option<Arc<Semaphore>>) {
        *self.gate.lock() = gate;
    }

    /// Returns once a `PutFederatedCredential` has arrived (at once if one arrived since the
    /// last call), so a test knows a write is in flight.
    pub async fn put_arrived(&self) {
        self.arrived.notified().await;
    }

    /// Returns once `n` writes (`PutFederatedCredential` or `DeleteFederatedCredential`)
    /// have taken effect since this fake was made.
    pub async fn writes_applied(&self, n: usize) {
        let mut seen = self.applied.subscribe();
        // The sender lives as long as `self`: the wait ends only by the count.
        let _ = seen.wait_for(|c| *c >= n).await;
    }

    /// The tonic service to [`serve`](crate::serve).
    pub fn into_server(self) -> FederationServer<Self> {
        FederationServer::new(self)
    }
}

#[tonic::async_trait]
impl Federation for FakeFederation {
    async fn put_federated_credential(
        &self,
        r: Request<pb::PutFederatedCredentialRequest>,
    ) -> Result<Response<pb::FederatedCredential>, Status> {
        let r = r.into_inner();
        self.arrived.notify_one();
        super::pass_gate(&self.gate).await?;
        let c = r.credential.unwrap_or_default();
        let mut s = self.state.lock();
        s.calls
            .push(format!("PutFederatedCredential {} {}", r.app_id, c.name));
        if !s
            .service_principals
            .values()
            .any(|sp| sp.app_id == r.app_id)
        {
            return Err(Status::not_found("no such principal"));
        }
        let list = s.federated_credentials.entry(r.app_id).or_default();
        list.retain(|x| !x.name.eq_ignore_ascii_case(&c.name));
        list.push(c.clone());
        self.applied.send_modify(|c| *c += 1);
        Ok(Response::new(c))
    }

    async fn delete_federated_credential(
        &self,
        r: Request<pb::DeleteFederatedCredentialRequest>,
    ) -> Result<Response<pb::DeleteFederatedCredentialResponse>, Status> {
        let r = r.into_inner();
        let mut s = self.state.lock();
        s.calls
            .push(format!("DeleteFederatedCredential {} {}", r.app_id, r.name));
        let list = s.federated_credentials.entry(r.app_id).or_default();
        let before = list.len();
        list.retain(|x| !x.name.eq_ignore_ascii_case(&r.name));
        self.applied.send_modify(|c| *c += 1);
        Ok(Response::new(pb::DeleteFederatedCredentialResponse {
            existed: list.len() != before,
        }))
    }

    async fn list_federated_credentials(
        &self,
        _: Request<pb::ListFederatedCredentialsRequest>,
    ) -> Result<Response<pb::ListFederatedCredentialsResponse>, Status> {
        unimplemented()
    }

    async fn put_issuer_keys(
        &self,
        _: Request<pb::PutIssuerKeysRequest>,
    ) -> Result<Response<pb::IssuerKeys>, Status> {
        unimplemented()
    }

    async fn delete_issuer_keys(
        &self,
        _: Request<pb::DeleteIssuerKeysRequest>,
    ) -> Result<Response<pb::DeleteIssuerKeysResponse>, Status> {
        unimplemented()
    }

    async fn list_issuer_keys(
        &self,
        _: Request<pb::ListIssuerKeysRequest>,
    ) -> Result<Response<pb::ListIssuerKeysResponse>, Status> {
        unimplemented()
    }
}
