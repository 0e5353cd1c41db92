//! System tests: the whole sandbox in-process on loopback port 0 with sled in a
//! temp dir, driven only through the public HTTP endpoints (ARM, Entra, IMDS,
//! Key Vault) the way real clients drive Azure. gRPC is used only to *observe*
//! effects (service principals in Entra, identities in IMDS); failures are
//! injected through the fault hook on ARM's calls to its peers
//! (`harness::PeerFaults`), never by timing.

mod clock;
mod decision_log;
mod errors;
mod faults;
mod federated_credentials;
mod federation;
mod federation_templates;
mod flow;
mod harness;
mod keys;
mod lifecycle;
mod propagation;
mod rbac;
mod renewal;
mod scenarios;
mod security_authz;
mod security_disk;
mod security_evaluators;
mod security_grpc;
mod security_listeners;
mod security_tokens;
mod security_vm_isolation;
mod throttling;
mod vm_exec_isolated;
