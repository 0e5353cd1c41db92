//! The generic resource verbs, and the one place that dispatches each
//! resource [`Kind`] to its module (VMs, identities, vaults, network
//! resources, deployments) and renders the result. Direct PUTs and template
//! deployments both write through [`Core::write_resource`]; a resource
//! group's deletion deletes through [`Core::delete_resource`].

use serde_json::Value;
use std::sync::Arc;

use super::{Core, model};
use crate::error::ArmError;
use crate::records::ProvState;
use crate::resource::{Address, Kind};

/// A long-running operation a write or delete leaves in progress: what the
/// HTTP edge points an `Azure-AsyncOperation` status URL at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// A VM operation, polled at compute's operation status in `location`.
    Compute {
        /// The VM's region.
        location: String,
        /// The operation id.
        op: String,
    },
    /// A deployment (already terminal), polled at its `operationStatuses`.
    Deployment {
        /// The deployment's id.
        id: String,
        /// The operation id.
        op: String,
    },
}

/// A written resource: its JSON, whether it was created, and the operation
/// still converging it, if any.
#[derive(Debug, Clone)]
pub struct Written {
    /// The rendered resource.
    pub body: Value,
    /// Created (201) rather than updated (200).
    pub created: bool,
    /// The operation still in progress.
    pub pending: Option<Pending>,
}

/// A DELETE's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    /// There was nothing to delete (204).
    Absent,
    /// Deleted (200).
    Done,
    /// Deletion accepted and still in progress (202).
    Pending(Pending),
}

impl Core {
    /// A direct PUT or PATCH of a resource of `kind`. A deployment PUT runs
    /// its template (and authorizes itself once its group is known); every
    /// other write is [`Core::write_resource`].
    #[allow(clippy::too_many_arguments)]
    pub async fn put_resource(
        self: &Arc<Self>,
        principal: &str,
        sub: &str,
        rg: &str,
        kind: Kind,
        name: &str,
        body: &Value,
        patch: bool,
    ) -> Result<Written, ArmError> {
        if kind == Kind::Deployment && !patch {
            let (d, created) = self.put_deployment(principal, sub, rg, name, body).await?;
            return Ok(Written {
                body: model::deployment(&d),
                created,
                pending: Some(Pending::Deployment {
                    id: d.id,
                    op: d.operation_id,
                }),
            });
        }
        self.write_resource(principal, sub, rg, kind, name, body, patch)
            .await
    }

    /// Creates or updates a resource of `kind` after the RBAC check
    /// `{type}/write` at its id: the one code path for direct writes and
    /// template resources (which cannot be deployments).
    #[allow(clippy::too_many_arguments)]
    pub async fn write_resource(
        self: &Arc<Self>,
        principal: &str,
        sub: &str,
        rg: &str,
        kind: Kind,
        name: &str,
        body: &Value,
        patch: bool,
    ) -> Result<Written, ArmError> {
        let written = |body, created| Written {
            body,
            created,
            pending: None,
        };
        self.authorize(principal, &kind.action("write"), &kind.id(sub, rg, name))?;
        let cfg = &self.config;
        match kind {
            Kind::Vm => {
                let (v, created) = self.put_vm(principal, sub, rg, name, body, patch).await?;
                let pending = match (&v.state, &v.op) {
                    (ProvState::Updating, Some(op)) => Some(Pending::Compute {
                        location: v.location.clone(),
                        op: op.clone(),
                    }),
                    _ => None,
                };
                Ok(Written {
                    body: model::vm(cfg, &v, &self.attached_uamis(&v)?, false),
                    created,
                    pending,
                })
            }
            Kind::Uami => {
                if patch {
                    self.get_uami(sub, rg, name)?;
                }
                let (u, created) = self.put_uami(sub, rg, name, body).await?;
                Ok(written(model::uami(cfg, &u), created))
            }
            Kind::Vault => {
                if patch {
                    self.get_vault(sub, rg, name)?;
                }
                let (v, created) = self.put_vault(sub, rg, name, body).await?;
                Ok(written(model::vault(&v), created))
            }
            Kind::VirtualNetwork
            | Kind::NetworkSecurityGroup
            | Kind::PublicIp
            | Kind::NetworkInterface => {
                let (r, created) = self
                    .put_network(principal, sub, rg, kind, name, body, patch)
                    .await?;
                Ok(written(model::network(&r), created))
            }
            Kind::Deployment => Err(ArmError::InvalidTemplate(
                "Nested deployments are not supported by misim.".into(),
            )),
        }
    }

    /// Reads and renders a resource of `kind` (no RBAC check).
    pub fn read_resource(
        &self,
        sub: &str,
        rg: &str,
        kind: Kind,
        name: &str,
        expand_instance_view: bool,
    ) -> Result<Value, ArmError> {
        let cfg = &self.config;
        Ok(match kind {
            Kind::Vm => {
                let v = self.get_vm(sub, rg, name)?;
                model::vm(cfg, &v, &self.attached_uamis(&v)?, expand_instance_view)
            }
            Kind::Uami => model::uami(cfg, &self.get_uami(sub, rg, name)?),
            Kind::Vault => model::vault(&self.get_vault(sub, rg, name)?),
            Kind::VirtualNetwork
            | Kind::NetworkSecurityGroup
            | Kind::PublicIp
            | Kind::NetworkInterface => model::network(&self.get_network(sub, rg, kind, name)?),
            Kind::Deployment => model::deployment(&self.get_deployment(sub, rg, name)?),
        })
    }

    /// Lists and renders the resources of `kind` in a subscription or group
    /// (no RBAC check).
    pub fn list_resources(
        &self,
        sub: &str,
        rg: Option<&str>,
        kind: Kind,
    ) -> Result<Vec<Value>, ArmError> {
        let cfg = &self.config;
        Ok(match kind {
            Kind::Vm => {
                let mut out = Vec::new();
                for v in self.list(&self.vms, sub, rg, kind)? {
                    out.push(model::vm(cfg, &v, &self.attached_uamis(&v)?, false));
                }
                out
            }
            Kind::Uami => self
                .list(&self.uamis, sub, rg, kind)?
                .iter()
                .map(|u| model::uami(cfg, u))
                .collect(),
            Kind::Vault => self
                .list(&self.vaults, sub, rg, kind)?
                .iter()
                .map(model::vault)
                .collect(),
            Kind::VirtualNetwork
            | Kind::NetworkSecurityGroup
            | Kind::PublicIp
            | Kind::NetworkInterface => self
                .list_network(sub, rg, kind)?
                .iter()
                .map(model::network)
                .collect(),
            Kind::Deployment => match rg {
                Some(rg) => self
                    .list(&self.deployments, sub, Some(rg), kind)?
                    .iter()
                    .map(model::deployment)
                    .collect(),
                // Subscription-scope deployments: misim runs none.
                None => Vec::new(),
            },
        })
    }

    /// The names of the resources of `kind` in a group.
    pub(crate) fn resource_names(
        &self,
        sub: &str,
        rg: &str,
        kind: Kind,
    ) -> Result<Vec<String>, ArmError> {
        let rg = Some(rg);
        Ok(match kind {
            Kind::Vm => self
                .list(&self.vms, sub, rg, kind)?
                .into_iter()
                .map(|v| v.name)
                .collect(),
            Kind::Uami => self
                .list(&self.uamis, sub, rg, kind)?
                .into_iter()
                .map(|u| u.name)
                .collect(),
            Kind::Vault => self
                .list(&self.vaults, sub, rg, kind)?
                .into_iter()
                .map(|v| v.name)
                .collect(),
            Kind::VirtualNetwork
            | Kind::NetworkSecurityGroup
            | Kind::PublicIp
            | Kind::NetworkInterface => self
                .list(&self.network, sub, rg, kind)?
                .into_iter()
                .map(|r| r.name)
                .collect(),
            Kind::Deployment => self
                .list(&self.deployments, sub, rg, kind)?
                .into_iter()
                .map(|d| d.name)
                .collect(),
        })
    }

    /// Deletes a resource of `kind` (no RBAC check). A VM's deletion is a
    /// persisted operation that may still be running when this returns.
    pub async fn delete_resource(
        self: &Arc<Self>,
        sub: &str,
        rg: &str,
        kind: Kind,
        name: &str,
    ) -> Result<Deleted, ArmError> {
        let existed = match kind {
            Kind::Vm => {
                return Ok(match self.delete_vm(sub, rg, name).await? {
                    None => Deleted::Absent,
                    Some((true, _)) => Deleted::Done,
                    Some((false, op)) => Deleted::Pending(Pending::Compute {
                        location: self
                            .get_vm(sub, rg, name)
                            .map(|v| v.location)
                            .unwrap_or_default(),
                        op,
                    }),
                });
            }
            Kind::Uami => self.delete_uami(sub, rg, name).await?,
            Kind::Vault => self.delete_vault(sub, rg, name).await?,
            Kind::VirtualNetwork
            | Kind::NetworkSecurityGroup
            | Kind::PublicIp
            | Kind::NetworkInterface => self.delete_network(sub, rg, kind, name).await?,
            Kind::Deployment => self.delete_deployment(sub, rg, name).await?,
        };
        Ok(if existed {
            Deleted::Done
        } else {
            Deleted::Absent
        })
    }

    /// The JSON of any resource ARM stores, by id (what `reference()` reads).
    pub fn resource_json(&self, id: &str) -> Result<Value, ArmError> {
        match Address::parse(id)? {
            Some(Address::Resource {
                sub,
                rg,
                kind,
                name,
            }) => self.read_resource(&sub, &rg, kind, &name, false),
            Some(Address::RoleAssignment { scope, name }) => {
                Ok(model::assignment(&self.get_assignment(&scope, &name)?))
            }
            Some(Address::ResourceGroup { sub, rg }) => Ok(model::rg(&self.require_rg(&sub, &rg)?)),
            Some(Address::Subnet {
                sub,
                rg,
                vnet,
                name: Some(name),
            }) => self.get_subnet(&sub, &rg, &vnet, &name),
            Some(Address::FederatedCredential {
                sub,
                rg,
                identity,
                name: Some(name),
            }) => Ok(model::fic(&self.get_fic(&sub, &rg, &identity, &name)?)),
            _ => Err(ArmError::UnknownPath(id.to_owned())),
        }
    }
}
