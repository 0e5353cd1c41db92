//! misim-chaos: the tester's toolkit inside each service (issue #12): fault
//! rules users add at run time (`misim fault`), answered with the status,
//! body and headers Azure sends; the decision log of every refusal, fault and
//! throttled request (`misim log`); IMDS's per-VM rate and concurrency
//! limits.
//!
//! Each service owns one [`Chaos`] for itself: its HTTP router is wrapped by
//! [`Chaos::wrap`] (the layer that fires rules and records refusals) and its
//! gRPC server carries the admin-only `misim.admin.v1.Faults` and `Log`
//! services ([`Chaos::add_grpc`]). Nothing here knows a service's internals:
//! a service adds facts only through request/response extensions ([`VmKey`],
//! [`Explanation`]). Rules and log live in memory (docs/toolkit.md says why).

mod glob;
mod grpc;
mod layer;
pub mod log;
mod rules;
mod settle;
mod shapes;
mod throttle;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, RwLock};
use rand::SeedableRng;
use rand::rngs::StdRng;

use misim_types::SharedClock;

pub use glob::MAX_PATTERN;
pub use log::{Decision, DecisionLog, Kind, LOG_CAPACITY, Query};
pub use rules::{Facts, MAX_LATENCY, MAX_RETRY_AFTER, MAX_RULES, Rule, RuleSpec};
pub use settle::Settling;
pub use throttle::{AZURE_IDENTITY_CONCURRENCY, AZURE_IDENTITY_RATE, ThrottleConfig};

/// The services a rule can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// The Instance Metadata Service.
    Imds,
    /// Entra ID (token endpoints, discovery, Graph).
    Entra,
    /// Azure Resource Manager.
    Arm,
    /// Key Vault's data plane.
    KeyVault,
}

impl Service {
    /// Every service, in the order `misim fault list` prints them.
    pub const ALL: [Service; 4] = [
        Service::Imds,
        Service::Entra,
        Service::Arm,
        Service::KeyVault,
    ];

    /// The name users type (`imds`, `entra`, `arm`, `keyvault`).
    pub fn parse(s: &str) -> Result<Self, ChaosError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "imds" => Ok(Service::Imds),
            "entra" => Ok(Service::Entra),
            "arm" => Ok(Service::Arm),
            "keyvault" => Ok(Service::KeyVault),
            other => Err(ChaosError::invalid(format!(
                "unknown service '{other}': one of imds, entra, arm, keyvault"
            ))),
        }
    }

    /// The name.
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Imds => "imds",
            Service::Entra => "entra",
            Service::Arm => "arm",
            Service::KeyVault => "keyvault",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a toolkit call was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChaosError {
    /// Bad input; nothing changed.
    #[error("{0}")]
    Invalid(String),
    /// No such rule.
    #[error("{0}")]
    NotFound(String),
}

impl ChaosError {
    pub(crate) fn invalid(m: impl Into<String>) -> Self {
        ChaosError::Invalid(m.into())
    }
}

/// Set by IMDS on a request: the VM's key (its resource id), which
/// `--vm` rules and the log's "who" use.
#[derive(Debug, Clone)]
pub struct VmKey(pub Arc<str>);

/// Set by a service on a refusal's response: its own explanation (ARM's
/// RBAC reasoning), which the decision log records as the "why".
#[derive(Debug, Clone)]
pub struct Explanation(pub String);

struct Inner {
    service: Service,
    clock: SharedClock,
    rules: Mutex<rules::Rules>,
    /// Any rule present: lets the layer skip matching when there is none.
    armed: AtomicBool,
    rng: Mutex<StdRng>,
    log: DecisionLog,
    /// Key Vault's bearer challenge, for injected 401s.
    challenge: RwLock<Option<String>>,
    throttle: throttle::Throttle,
}

/// One service's rules, log and throttle (cheap to clone).
#[derive(Clone)]
pub struct Chaos {
    inner: Arc<Inner>,
}

impl fmt::Debug for Chaos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chaos")
            .field("service", &self.inner.service)
            .finish_non_exhaustive()
    }
}

impl Chaos {
    /// The toolkit of `service`, probabilities drawn from OS entropy.
    pub fn new(service: Service, clock: SharedClock) -> Self {
        Self::with_rng(service, clock, StdRng::from_entropy())
    }

    /// Like [`Chaos::new`] with a seeded RNG, so probabilistic rules fire
    /// the same way on every run of a test.
    pub fn seeded(service: Service, clock: SharedClock, seed: u64) -> Self {
        Self::with_rng(service, clock, StdRng::seed_from_u64(seed))
    }

    fn with_rng(service: Service, clock: SharedClock, rng: StdRng) -> Self {
        Self {
            inner: Arc::new(Inner {
                service,
                throttle: throttle::Throttle::new(clock.clone()),
                clock,
                rules: Mutex::new(rules::Rules::default()),
                armed: AtomicBool::new(false),
                rng: Mutex::new(rng),
                log: DecisionLog::default(),
                challenge: RwLock::new(None),
            }),
        }
    }

    /// Whose toolkit this is.
    pub fn service(&self) -> Service {
        self.inner.service
    }

    /// Adds a rule (validated; a refusal changes nothing).
    pub fn add(&self, spec: RuleSpec) -> Result<Rule, ChaosError> {
        let mut rules = self.inner.rules.lock();
        let rule = rules.add(spec, self.inner.service)?;
        self.inner.armed.store(true, Ordering::Release);
        tracing::info!(service = %self.inner.service, rule = %rule.id, "fault rule added");
        Ok(rule)
    }

    /// The rules, oldest first.
    pub fn list(&self) -> Vec<Rule> {
        self.inner.rules.lock().list()
    }

    /// Removes the rule `id`, or every rule; how many went.
    pub fn clear(&self, id: Option<&str>) -> Result<usize, ChaosError> {
        let mut rules = self.inner.rules.lock();
        let n = rules.clear(id)?;
        self.inner.armed.store(!rules.is_empty(), Ordering::Release);
        Ok(n)
    }

    /// The decision log.
    pub fn log(&self) -> &DecisionLog {
        &self.inner.log
    }

    /// Key Vault's `WWW-Authenticate` challenge, for injected 401s.
    pub fn set_challenge(&self, value: String) {
        *self.inner.challenge.write() = Some(value);
    }

    /// Turns IMDS's per-VM rate and concurrency limits on or off, or
    /// changes their numbers.
    pub fn set_throttle(&self, config: ThrottleConfig) {
        self.inner.throttle.set(config);
    }

    /// How many identity requests of the VM `vm_key` (its [`VmKey`]) are in
    /// flight under the concurrency limit (always 0 with the limit off).
    pub fn in_flight(&self, vm_key: &str) -> u32 {
        self.inner.throttle.in_flight(vm_key)
    }

    /// The router with the toolkit in front: rules fire before the service
    /// sees a request, and refusals are recorded on the way out.
    pub fn wrap(&self, router: axum::Router) -> axum::Router {
        router.layer(axum::middleware::from_fn_with_state(
            self.clone(),
            layer::intercept,
        ))
    }

    /// What [`wrap`](Self::wrap)'s layer does, around `inner` (the service's
    /// own handling of `req`), for a service that calls it from its one
    /// handler: IMDS's VM listener, whose every layer costs a clone and a
    /// boxed future per request (docs/performance.md finding 14).
    pub async fn around<F, Fut>(
        &self,
        req: axum::extract::Request,
        inner: F,
    ) -> axum::response::Response
    where
        F: FnOnce(axum::extract::Request) -> Fut,
        Fut: std::future::Future<Output = axum::response::Response>,
    {
        layer::around(self, req, inner).await
    }

    /// `router` with the admin-only `Faults` and `Log` services added.
    pub fn add_grpc(
        &self,
        router: tonic::transport::server::Router,
        key: &misim_proto::auth::ControlKey,
    ) -> tonic::transport::server::Router {
        grpc::add(self, router, key)
    }

    /// A gRPC router of its own serving only the toolkit (with health and
    /// reflection), for a service that has no other gRPC (Key Vault).
    pub fn grpc_router(
        &self,
        key: &misim_proto::auth::ControlKey,
    ) -> tonic::transport::server::Router {
        grpc::router(self, key)
    }

    fn armed(&self) -> bool {
        self.inner.armed.load(Ordering::Acquire)
    }

    /// The first rule that fires for `facts`, counted.
    fn fire(&self, facts: &Facts) -> Option<rules::Firing> {
        let mut rules = self.inner.rules.lock();
        let mut rng = self.inner.rng.lock();
        let firing = rules.fire(facts, &mut *rng);
        if firing.is_some() && rules.is_empty() {
            self.inner.armed.store(false, Ordering::Release);
        }
        firing
    }

    fn needs_identity(&self) -> bool {
        self.armed() && self.inner.rules.lock().needs_identity()
    }

    fn now_ms(&self) -> i64 {
        use std::time::UNIX_EPOCH;
        self.inner
            .clock
            .now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}
