//! Scenarios (docs/scenarios.md): a YAML or JSON file declaring resource groups, managed
//! identities (optionally with pinned ids), vaults and secrets, VMs, role assignments, faults
//! and the clock. `model` is the file, `validate` checks it whole and resolves it, `apply`
//! makes a sandbox match it, `export` writes a sandbox as one; `remote` is how both reach it.

pub(crate) mod apply;
pub(crate) mod export;
pub(crate) mod model;
mod remote;
#[cfg(test)]
mod schema_tests;
pub(crate) mod validate;
