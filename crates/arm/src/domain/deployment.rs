//! Resource-group deployments (`Microsoft.Resources/deployments`), the way
//! `az vm create` creates a VM. The deployment runs synchronously inside the
//! PUT: each template resource, in `dependsOn` order, goes through the same
//! code path and RBAC check (with the deploying caller) as a direct PUT of
//! that resource. The first failure stops the deployment; it is recorded as
//! `Failed` with ARM's `DeploymentFailed` error. The PUT hands out an
//! `Azure-AsyncOperation` URL whose status is already terminal, so
//! azure-core's ARMPolling finishes after one poll (docs/azure-protocol.md, ARM: async operations).
//!
//! Template problems found before anything is deployed (syntax, unsupported
//! functions, parameters, unknown `dependsOn`, cycles) answer the PUT with 400
//! `InvalidTemplate`, as ARM's validation does; nothing is recorded. So does
//! ARM's preflight authorization: a template resource the deployer may not
//! write answers 400 `InvalidTemplateDeployment` ("Authorization failed for
//! template resource ..."), and nothing is deployed. Evaluation runs within
//! one [`Budget`] per deployment (nesting, value size, work); a template over
//! it is `InvalidTemplate` too, found before anything is deployed.

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Value, json};

use super::{Core, Put, res_key};
use crate::error::ArmError;
use crate::records::DeploymentRecord;
use crate::resource::{Address, FEDERATED_CREDENTIAL_TYPE, Kind};
use crate::template::{Budget, Evaluator, Planned, Resources, Target, Template, TemplateError};

const WRITE: &str = "Microsoft.Resources/deployments/write";

/// `reference()` against ARM's state, as the deploying principal: a template
/// can read only what its deployer could read directly.
struct Live<'a> {
    core: &'a Core,
    principal: &'a str,
}

/// The read action for a resource id (`{type}/read`, with ARM's spelling for
/// resource groups).
fn read_action(id: &str) -> String {
    match misim_types::ResourceId::parse(id) {
        Ok(rid) => match rid.resource_type().as_str() {
            "Microsoft.Resources/resourceGroups" => {
                "Microsoft.Resources/subscriptions/resourceGroups/read".to_owned()
            }
            t => format!("{t}/read"),
        },
        Err(_) => "*/read".to_owned(),
    }
}

impl Resources for Live<'_> {
    fn reference(&self, id: &str, full: bool) -> Result<Value, TemplateError> {
        let denied = |e: ArmError| {
            TemplateError::Invalid(format!(
                "The template function 'reference' failed for resource '{id}': {e}"
            ))
        };
        self.core
            .authorize(self.principal, &read_action(id), id)
            .map_err(denied)?;
        let v = self.core.resource_json(id).map_err(|e| {
            TemplateError::Invalid(format!(
                "The template function 'reference' failed for resource '{id}': {e}"
            ))
        })?;
        Ok(if full {
            v
        } else {
            v.get("properties").cloned().unwrap_or(Value::Null)
        })
    }
}

/// RFC 3339 UTC with seconds and seven zero fraction digits, as ARM writes `timestamp`,
/// `startTime` and `endTime` (`2023-11-14T22:13:20.0000000Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let d = misim_types::time::UtcDateTime::from_unix(misim_types::unix_seconds(t));
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.0000000Z",
        d.year, d.month, d.day, d.hour, d.minute, d.second
    )
}

impl Core {
    /// Creates or re-runs a deployment; returns the record (already terminal).
    // long: one linear pipeline (validate, plan, preflight, deploy
    // in order, record) over one evaluator and budget; the steps share them.
    pub async fn put_deployment(
        self: &Arc<Self>,
        principal: &str,
        sub: &str,
        rg: &str,
        name: &str,
        body: &Value,
    ) -> Result<Put<DeploymentRecord>, ArmError> {
        let group = self.require_rg(sub, rg)?;
        let id = format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Resources/deployments/{name}",
            self.config.subscription_id, group.name
        );
        self.authorize(principal, WRITE, &id)?;
        let props = body
            .get("properties")
            .and_then(Value::as_object)
            .ok_or_else(|| ArmError::InvalidRequestContent("properties is required".into()))?;
        for link in ["templateLink", "parametersLink"] {
            if props.contains_key(link) {
                return Err(ArmError::InvalidTemplate(format!(
                    "The deployment property '{link}' is not supported by misim; send the template and parameters inline."
                )));
            }
        }
        let mode = props
            .get("mode")
            .and_then(Value::as_str)
            .unwrap_or("Incremental");
        if !mode.eq_ignore_ascii_case("incremental") {
            return Err(ArmError::InvalidParameter(format!(
                "The deployment mode '{mode}' is not supported by misim; use 'Incremental'."
            )));
        }
        let template =
            Template::parse(props.get("template").ok_or_else(|| {
                ArmError::InvalidTemplate("The deployment has no template.".into())
            })?)?;
        let target = Target {
            subscription_id: self.config.subscription_id.clone(),
            tenant_id: self.config.tenant_id.clone(),
            resource_group: group.name.clone(),
            location: group.location.clone(),
        };
        let supplied = match props.get("parameters") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(_) => {
                return Err(ArmError::InvalidRequestContent(
                    "properties.parameters must be an object".into(),
                ));
            }
        };
        // One budget for everything this deployment evaluates.
        let budget = Budget::default();
        let params = template.resolve_parameters(supplied, &target, &budget)?;
        let live = Live {
            core: self,
            principal,
        };
        let ev = Evaluator::new(&template, &target, &params, &live, &budget);
        let plan = template.plan(&ev)?;
        self.preflight(principal, &plan)?;
        let ev = ev.with_plan(&plan);
        ev.check_before_deploying(&plan)?;

        let key = res_key(sub, rg, Kind::Deployment, name);
        let existed = self.deployments.get(&key)?.is_some();
        let started = self.clock.now();
        let mut output_resources = Vec::new();
        let mut failure: Option<(String, ArmError)> = None;
        for p in &plan {
            let result = match ev.resource_body(p) {
                Ok(b) => self.deploy_resource(principal, p, &b).await,
                Err(e) => Err(e.into()),
            };
            match result {
                Ok(()) => output_resources.push(json!({"id": p.id})),
                Err(e) => {
                    tracing::info!(deployment = %id, resource = %p.id, error = %e, "deployment resource failed");
                    failure = Some((p.id.clone(), e));
                    break;
                }
            }
        }
        let outputs = match &failure {
            None => match template.outputs(&ev) {
                Ok(o) => Value::Object(o),
                Err(e) => {
                    failure = Some((id.clone(), e.into()));
                    json!({})
                }
            },
            Some(_) => json!({}),
        };
        let finished = self.clock.now();
        let seconds = finished
            .duration_since(started)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let mut properties = json!({
            "templateHash": crate::template::expr::unique_string(&props["template"].to_string()),
            "parameters": params.echo(),
            "mode": "Incremental",
            "provisioningState": if failure.is_some() { "Failed" } else { "Succeeded" },
            "timestamp": rfc3339(finished),
            "duration": format!("PT{seconds:.3}S"),
            "correlationId": self.ids.guid(),
            "providers": [],
            "dependencies": [],
            "outputs": outputs,
            "outputResources": output_resources,
        });
        if let Some((target_id, e)) = &failure {
            properties["error"] = json!({
                "code": "DeploymentFailed",
                "target": id,
                "message": "At least one resource deployment operation failed. Please list deployment operations for details. Please see https://aka.ms/arm-deployment-operations for usage details.",
                "details": [{"code": e.arm_code(), "target": target_id, "message": e.to_string()}],
            });
        }
        let rec = DeploymentRecord {
            id: id.clone(),
            name: name.to_owned(),
            properties,
            operation_id: self.ids.guid(),
        };
        self.deployments.put(&key, &rec).await?;
        tracing::info!(%id, state = %rec.properties["provisioningState"], "deployment finished");
        Ok((rec, !existed))
    }

    /// ARM's preflight authorization: the deployer must be allowed to write
    /// every resource of the template before anything is deployed. Otherwise
    /// 400 `InvalidTemplateDeployment` names each refused resource (in
    /// template order) and nothing is deployed or recorded. Linked checks
    /// (attaching a user-assigned identity) happen later, as the resource is
    /// written.
    fn preflight(&self, principal: &str, plan: &[Planned]) -> Result<(), ArmError> {
        let mut ordered: Vec<&Planned> = plan.iter().collect();
        ordered.sort_by_key(|p| p.index);
        let mut refused = Vec::new();
        for p in ordered {
            let action = match Address::parse(&p.id) {
                Ok(Some(Address::Resource { kind, .. })) => kind.action("write"),
                Ok(Some(Address::RoleAssignment { .. })) => {
                    "Microsoft.Authorization/roleAssignments/write".to_owned()
                }
                Ok(Some(Address::FederatedCredential { name: Some(_), .. })) => {
                    format!("{FEDERATED_CREDENTIAL_TYPE}/write")
                }
                // Types misim does not deploy fail as the deployment runs.
                _ => continue,
            };
            match self.authorize(principal, &action, &p.id) {
                Ok(()) => {}
                Err(ArmError::AuthorizationFailed { .. }) => refused.push(format!(
                    "Authorization failed for template resource '{}' of type '{}'. The client '{principal}' with object id '{principal}' does not have permission to perform action '{action}' at scope '{}'.",
                    p.name, p.resource_type, p.id
                )),
                Err(e) => return Err(e),
            }
        }
        match refused.as_slice() {
            [] => Ok(()),
            [one] => Err(ArmError::InvalidTemplateDeployment(format!(
                "The template deployment failed with error: '{one}'."
            ))),
            many => Err(ArmError::InvalidTemplateDeployment(format!(
                "Deployment failed with multiple errors: '{}'",
                many.join(":")
            ))),
        }
    }

    async fn deploy_resource(
        self: &Arc<Self>,
        principal: &str,
        p: &Planned,
        body: &Value,
    ) -> Result<(), ArmError> {
        match Address::parse(&p.id)? {
            Some(Address::Resource {
                sub,
                rg,
                kind,
                name,
            }) if kind != Kind::Deployment => {
                self.write_resource(principal, &sub, &rg, kind, &name, body, false)
                    .await?;
                Ok(())
            }
            Some(Address::RoleAssignment { scope, name }) => {
                self.authorize(
                    principal,
                    "Microsoft.Authorization/roleAssignments/write",
                    &scope,
                )?;
                self.put_assignment(&scope, &name, body).await?;
                Ok(())
            }
            // A user-assigned identity's federated identity credential, as a
            // child resource or nested in the identity: the same path as a
            // direct PUT (validation, the per-identity limit, the push to
            // Entra). The deployment writes its resources one at a time, so
            // Azure's refusal of concurrent FIC writes under one identity
            // never fires for FICs of one template.
            Some(Address::FederatedCredential {
                sub,
                rg,
                identity,
                name: Some(name),
            }) => {
                if let Some(v) = p.api_version.as_deref() {
                    super::federated::api_version_ok(v)?;
                }
                self.authorize(
                    principal,
                    &format!("{FEDERATED_CREDENTIAL_TYPE}/write"),
                    &p.id,
                )?;
                self.put_fic(&sub, &rg, &identity, &name, body).await?;
                Ok(())
            }
            _ => Err(ArmError::InvalidTemplate(format!(
                "The template resource type '{}' is not supported by misim.",
                p.resource_type
            ))),
        }
    }

    pub fn get_deployment(
        &self,
        sub: &str,
        rg: &str,
        name: &str,
    ) -> Result<DeploymentRecord, ArmError> {
        self.require_rg(sub, rg)?;
        self.deployments
            .get(&res_key(sub, rg, Kind::Deployment, name))?
            .ok_or_else(|| Self::not_found(Kind::Deployment, rg, name))
    }

    /// Deletes a deployment record (never its resources, as in ARM).
    pub async fn delete_deployment(
        &self,
        sub: &str,
        rg: &str,
        name: &str,
    ) -> Result<bool, ArmError> {
        self.require_rg(sub, rg)?;
        Ok(self
            .deployments
            .remove(&res_key(sub, rg, Kind::Deployment, name))
            .await?
            .is_some())
    }

    /// The async-operation status body: `{"status"[, "error"]}`.
    pub fn deployment_operation(
        &self,
        sub: &str,
        rg: &str,
        name: &str,
        op: &str,
    ) -> Result<Value, ArmError> {
        let rec = self.get_deployment(sub, rg, name)?;
        if !rec.operation_id.eq_ignore_ascii_case(op) {
            return Err(ArmError::ResourceNotFound {
                resource_type: "Microsoft.Resources/deployments/operationStatuses".into(),
                name: format!("{name}/{op}"),
                resource_group: rg.into(),
            });
        }
        let status = rec.properties["provisioningState"].clone();
        let mut v = json!({"status": status});
        if let Some(e) = rec.properties.get("error") {
            v["error"] = e.clone();
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn timestamps_are_rfc3339() {
        let t = |s| rfc3339(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(t(0), "1970-01-01T00:00:00.0000000Z");
        assert_eq!(t(1_700_000_000), "2023-11-14T22:13:20.0000000Z");
        assert_eq!(t(951_782_400), "2000-02-29T00:00:00.0000000Z");
    }
}
