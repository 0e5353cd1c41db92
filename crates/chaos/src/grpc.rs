//! `misim.admin.v1.Faults` and `misim.admin.v1.Log` over one service's
//! [`Chaos`]: admin-only (the empty policy leaves the owner alone), the
//! only place generated types meet the toolkit.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use misim_proto::admin::v1 as pb;
use misim_proto::auth::{Caller, ControlKey};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tonic::{Request, Response, Status};

use crate::log::{Decision, Query};
use crate::rules::{Rule, RuleSpec};
use crate::{Chaos, ChaosError};

/// Only the sandbox owner may call the toolkit: no service calls it.
fn admin_only(_method: &str) -> &'static [Caller] {
    &[]
}

pub(crate) fn add(
    chaos: &Chaos,
    router: tonic::transport::server::Router,
    key: &ControlKey,
) -> tonic::transport::server::Router {
    use misim_proto::server::guarded;
    router
        .add_service(guarded(
            pb::faults_server::FaultsServer::new(Api(chaos.clone())),
            key,
            admin_only,
        ))
        .add_service(guarded(
            pb::log_server::LogServer::new(Api(chaos.clone())),
            key,
            admin_only,
        ))
}

pub(crate) fn router(chaos: &Chaos, key: &ControlKey) -> tonic::transport::server::Router {
    let first = misim_proto::server::router_with(
        pb::faults_server::FaultsServer::new(Api(chaos.clone())),
        key,
        admin_only,
    );
    first.add_service(misim_proto::server::guarded(
        pb::log_server::LogServer::new(Api(chaos.clone())),
        key,
        admin_only,
    ))
}

#[derive(Debug, Clone)]
struct Api(Chaos);

fn status(e: ChaosError) -> Status {
    match e {
        ChaosError::Invalid(m) => Status::invalid_argument(m),
        ChaosError::NotFound(m) => Status::not_found(m),
    }
}

fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn spec_from(p: pb::FaultSpec) -> Result<RuleSpec, Status> {
    let status =
        match p.status {
            0 => None,
            s => Some(u16::try_from(s).map_err(|_| {
                Status::invalid_argument(format!("status {s} is not an HTTP status"))
            })?),
        };
    Ok(RuleSpec {
        service: p.service,
        vm: opt(p.vm),
        identity: opt(p.identity),
        path: opt(p.path),
        status,
        aadsts: (p.aadsts != 0).then_some(p.aadsts),
        retry_after: p.retry_after_secs,
        latency: Duration::from_millis(p.latency_ms),
        count: p.count,
        probability: p.probability,
    })
}

fn rule_to(r: Rule) -> pb::Fault {
    let s = r.spec;
    pb::Fault {
        id: r.id,
        spec: Some(pb::FaultSpec {
            service: s.service,
            vm: s.vm.unwrap_or_default(),
            identity: s.identity.unwrap_or_default(),
            path: s.path.unwrap_or_default(),
            status: s.status.map_or(0, u32::from),
            aadsts: s.aadsts.unwrap_or(0),
            retry_after_secs: s.retry_after,
            latency_ms: u64::try_from(s.latency.as_millis()).unwrap_or(u64::MAX),
            count: s.count,
            probability: s.probability,
        }),
        remaining: r.remaining,
        hits: r.hits,
    }
}

fn decision_to(d: Decision) -> pb::Decision {
    pb::Decision {
        seq: d.seq,
        time_unix_ms: d.time_unix_ms,
        service: d.service,
        kind: d.kind.as_str().to_owned(),
        method: d.method,
        path: d.path,
        status: u32::from(d.status),
        principal: d.principal,
        client_id: d.client_id,
        code: d.code,
        reason: d.reason,
        fault_id: d.fault_id,
    }
}

fn query_from(q: pb::LogQuery) -> Query {
    Query {
        denied_only: q.denied_only,
        principal: opt(q.principal),
        service: opt(q.service),
    }
}

#[tonic::async_trait]
impl pb::faults_server::Faults for Api {
    async fn add_fault(
        &self,
        req: Request<pb::AddFaultRequest>,
    ) -> Result<Response<pb::Fault>, Status> {
        let spec = req
            .into_inner()
            .spec
            .ok_or_else(|| Status::invalid_argument("spec is required"))?;
        let rule = self.0.add(spec_from(spec)?).map_err(status)?;
        Ok(Response::new(rule_to(rule)))
    }

    async fn list_faults(
        &self,
        _req: Request<pb::ListFaultsRequest>,
    ) -> Result<Response<pb::ListFaultsResponse>, Status> {
        let faults = self.0.list().into_iter().map(rule_to).collect();
        Ok(Response::new(pb::ListFaultsResponse { faults }))
    }

    async fn clear_faults(
        &self,
        req: Request<pb::ClearFaultsRequest>,
    ) -> Result<Response<pb::ClearFaultsResponse>, Status> {
        let id = opt(req.into_inner().id);
        let n = self.0.clear(id.as_deref()).map_err(status)?;
        Ok(Response::new(pb::ClearFaultsResponse {
            removed: u32::try_from(n).unwrap_or(u32::MAX),
        }))
    }
}

type DecisionStream = Pin<Box<dyn Stream<Item = Result<pb::Decision, Status>> + Send>>;

#[tonic::async_trait]
impl pb::log_server::Log for Api {
    async fn list_decisions(
        &self,
        req: Request<pb::LogQuery>,
    ) -> Result<Response<pb::ListDecisionsResponse>, Status> {
        let q = query_from(req.into_inner());
        let decisions = self.0.log().list(&q).into_iter().map(decision_to).collect();
        Ok(Response::new(pb::ListDecisionsResponse { decisions }))
    }

    type FollowDecisionsStream = DecisionStream;

    async fn follow_decisions(
        &self,
        req: Request<pb::LogQuery>,
    ) -> Result<Response<DecisionStream>, Status> {
        let q = query_from(req.into_inner());
        let (now, rx) = self.0.log().follow(&q);
        let live = BroadcastStream::new(rx).filter_map(move |r| match r {
            Ok(d) if q.admits(&d) => Some(Ok(decision_to(d))),
            Ok(_) => None,
            // A follower too slow for the broadcast buffer is told, not silently shortened.
            Err(BroadcastStreamRecvError::Lagged(n)) => Some(Err(Status::data_loss(format!(
                "the follower fell {n} entries behind; list the log to see them"
            )))),
        });
        let first = tokio_stream::iter(now.into_iter().map(|d| Ok(decision_to(d))));
        Ok(Response::new(Box::pin(first.chain(live))))
    }
}
