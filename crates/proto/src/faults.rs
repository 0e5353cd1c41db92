//! Fault injection on a service's outgoing gRPC calls, for tests.
//!
//! A [`PeerChannel`] is a channel whose every call first asks a [`FaultHook`];
//! the hook may fail the call with a status of its choice before anything is
//! sent. Services take their peers as `Client<PeerChannel>` so a test harness
//! can make one step of a cross-service operation fail deterministically (and
//! count the calls it sees) without sleeps, proxies or a broken peer. In
//! production the hook is absent and the interceptor only passes calls through.

use std::sync::Arc;

use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::{GrpcMethod, Request, Status};

use crate::auth::ControlChannel;

/// Decides, before each outgoing call, whether it fails.
pub trait FaultHook: Send + Sync + std::fmt::Debug + 'static {
    /// Called before every call with the gRPC service (`misim.entra.v1.Directory`)
    /// and method (`AddKeyCredential`). `Some(status)` fails the call with it,
    /// unsent; `None` lets it through.
    fn before_call(&self, service: &str, method: &str) -> Option<Status>;
}

/// The interceptor of a [`PeerChannel`]: no hook (production) or one hook.
#[derive(Debug, Clone, Default)]
pub struct Faults(Option<Arc<dyn FaultHook>>);

impl Faults {
    /// No faults: every call goes through.
    pub fn none() -> Self {
        Self(None)
    }

    /// Every call asks `hook` first.
    pub fn with(hook: Arc<dyn FaultHook>) -> Self {
        Self(Some(hook))
    }

    /// `channel` (already carrying its caller's credential) behind this interceptor.
    pub fn wrap(self, channel: ControlChannel) -> PeerChannel {
        InterceptedService::new(channel, self)
    }
}

impl Interceptor for Faults {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(hook) = &self.0 {
            // Generated clients tag every request with its method.
            let (service, method) = req
                .extensions()
                .get::<GrpcMethod<'static>>()
                .map_or(("", ""), |m| (m.service(), m.method()));
            if let Some(status) = hook.before_call(service, method) {
                return Err(status);
            }
        }
        Ok(req)
    }
}

/// A channel to a peer service, with an optional [`FaultHook`] in front.
pub type PeerChannel = InterceptedService<ControlChannel, Faults>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Debug, Default)]
    struct Record(Mutex<Vec<String>>);

    impl FaultHook for Record {
        fn before_call(&self, service: &str, method: &str) -> Option<Status> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!("{service}/{method}"));
            (method == "AddKeyCredential").then(|| Status::invalid_argument("injected"))
        }
    }

    fn tagged(method: &'static str) -> Request<()> {
        let mut r = Request::new(());
        r.extensions_mut()
            .insert(GrpcMethod::new("misim.entra.v1.Directory", method));
        r
    }

    #[test]
    fn the_hook_sees_the_method_and_may_fail_the_call() {
        let hook = Arc::new(Record::default());
        let mut f = Faults::with(hook.clone());
        assert!(f.call(tagged("CreateServicePrincipal")).is_ok());
        let e = f.call(tagged("AddKeyCredential")).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            *hook.0.lock().unwrap(),
            [
                "misim.entra.v1.Directory/CreateServicePrincipal",
                "misim.entra.v1.Directory/AddKeyCredential"
            ]
        );
        assert!(Faults::none().call(tagged("AddKeyCredential")).is_ok());
    }
}
