//! A small ARM template engine (enough for what `az vm create` and simple
//! hand-written templates send): parameters with defaults and supplied
//! values, variables, resources ordered by `dependsOn`, `condition`, child
//! resources nested in their parent's `resources`, outputs, and the
//! expression language in [`expr`].
//!
//! Pure: the engine never touches ARM state. The deployment driver
//! (`domain::deployment`) asks [`Template::plan`] for the order, then
//! evaluates each resource with [`Evaluator::resource_body`] right before
//! deploying it, so `reference()` sees the resources deployed so far.

pub mod budget;
pub mod expr;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Map, Value};

pub use budget::Budget;
use expr::Scope;

/// Why a template cannot be deployed. Both render as ARM's `InvalidTemplate`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TemplateError {
    /// A function misim does not implement (never passed through silently).
    #[error("The template function '{0}' is not supported by misim.")]
    UnsupportedFunction(String),
    /// Anything else wrong with the template or its evaluation.
    #[error("{0}")]
    Invalid(String),
    /// The evaluation exceeded the deployment's [`Budget`] (nesting, value
    /// size or work).
    #[error("{0}")]
    Budget(String),
    /// `reference()` during the check before deploying, when resources the
    /// template deploys do not exist yet; it is evaluated as the deployment runs.
    #[error("The template function 'reference' is evaluated as the deployment runs.")]
    Deferred,
}

/// ARM's documented template limits; see
/// https://learn.microsoft.com/azure/azure-resource-manager/templates/best-practices#template-limits
/// (256 parameters, 512 variables, 800 resources, 64 outputs, 24,576
/// characters in an expression; the 4 MB size is [`budget::MAX_VALUE_BYTES`]).
const MAX_PARAMETERS: usize = 256;
const MAX_VARIABLES: usize = 512;
const MAX_RESOURCES: usize = 800;
const MAX_OUTPUTS: usize = 64;

/// ARM's wording, as quoted in https://github.com/Azure/acs-engine/issues/2393.
fn over_limit(what: &str, n: usize, max: usize) -> TemplateError {
    invalid(format!(
        "Deployment template validation failed: 'The number of template {what} limit exceeded. Limit: '{max}' and actual: '{n}'. Please see https://aka.ms/arm-template/#{what} for usage details.'."
    ))
}

fn invalid(msg: impl Into<String>) -> TemplateError {
    TemplateError::Invalid(msg.into())
}

/// Where a deployment runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// What `subscription()` returns (`subscriptionId`, and in `id`).
    pub subscription_id: String,
    /// What `subscription().tenantId` returns.
    pub tenant_id: String,
    /// Resource group name as created.
    pub resource_group: String,
    /// Resource group location.
    pub location: String,
}

/// A declared parameter.
#[derive(Debug, Clone, PartialEq)]
struct ParamDecl {
    ty: String,
    default: Option<Value>,
    allowed: Option<Vec<Value>>,
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    params: BTreeMap<String, ParamDecl>,
    variables: Map<String, Value>,
    /// Every resource, nested ones flattened right after their parent.
    resources: Vec<Map<String, Value>>,
    /// For each resource, the index of the resource it is nested in.
    parents: Vec<Option<usize>>,
    outputs: Map<String, Value>,
}

/// How deep resources may nest: "Child resources can only be defined five
/// levels deep" (https://learn.microsoft.com/azure/azure-resource-manager/templates/child-resource-name-type).
const MAX_NESTING: usize = 5;

/// Resources with their nested `resources` flattened, parent first.
#[derive(Default)]
struct Flattened {
    resources: Vec<Map<String, Value>>,
    parents: Vec<Option<usize>>,
}

impl Flattened {
    /// Adds `r` (template position `at`, e.g. `2` or `2.0`) and its children.
    fn push(
        &mut self,
        r: &Value,
        at: &str,
        parent: Option<usize>,
        depth: usize,
    ) -> Result<(), TemplateError> {
        let r = r
            .as_object()
            .ok_or_else(|| invalid(format!("Template resource {at} must be an object.")))?;
        for k in ["type", "name"] {
            if !get_ci(r, k).is_some_and(Value::is_string) {
                return Err(invalid(format!(
                    "Template resource {at} is missing the string property '{k}'."
                )));
            }
        }
        if get_ci(r, "copy").is_some() {
            return Err(invalid(
                "The template resource property 'copy' is not supported by misim.",
            ));
        }
        let children = match get_ci(r, "resources") {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(a)) if depth < MAX_NESTING => a.as_slice(),
            Some(Value::Array(_)) => {
                return Err(invalid(format!(
                    "Template resource {at} nests resources more than {MAX_NESTING} levels deep."
                )));
            }
            Some(_) => {
                return Err(invalid(format!(
                    "The 'resources' of template resource {at} must be an array."
                )));
            }
        };
        if self.resources.len() + 1 + children.len() > MAX_RESOURCES {
            return Err(over_limit(
                "resources",
                self.resources.len() + 1 + children.len(),
                MAX_RESOURCES,
            ));
        }
        let mut own = r.clone();
        own.retain(|k, _| !k.eq_ignore_ascii_case("resources"));
        let me = self.resources.len();
        self.resources.push(own);
        self.parents.push(parent);
        for (j, c) in children.iter().enumerate() {
            self.push(c, &format!("{at}.{j}"), Some(me), depth + 1)?;
        }
        Ok(())
    }
}

/// A nested resource's full type and name from its parent's: a child written
/// as one segment (`federatedIdentityCredentials`, `fic1`) is appended to the
/// parent's; a child written with its full type keeps it, and its name gets
/// the parent's name in front unless it has it already.
fn child_type_and_name(parent: &(String, String), ty: &str, name: &str) -> (String, String) {
    let (pt, pn) = parent;
    let ty = if ty.contains('/') {
        ty.to_owned()
    } else {
        format!("{pt}/{ty}")
    };
    let segments = ty.split('/').count() - 1;
    let name = if name.split('/').count() >= segments {
        name.to_owned()
    } else {
        format!("{pn}/{name}")
    };
    (ty, name)
}

fn object<'v>(
    v: Option<&'v Value>,
    what: &str,
) -> Result<Option<&'v Map<String, Value>>, TemplateError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(invalid(format!(
            "The template property '{what}' must be an object."
        ))),
    }
}

fn get_ci<'m>(m: &'m Map<String, Value>, key: &str) -> Option<&'m Value> {
    m.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

/// One resource in deployment order.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// Index in the template's `resources`.
    pub index: usize,
    /// `Namespace/type[/child]` as written.
    pub resource_type: String,
    /// Name as evaluated (`parent/child` for nested types).
    pub name: String,
    /// The full id it will have.
    pub id: String,
    /// Scope for extension resources (role assignments): `properties.scope` or
    /// the top-level `scope`; `None` means the deployment's resource group.
    pub scope: Option<String>,
    /// The resource's `apiVersion`, when it is a literal string.
    pub api_version: Option<String>,
}

impl Template {
    /// Parses and validates a template: shapes, and every expression's syntax
    /// and function names.
    pub fn parse(v: &Value) -> Result<Self, TemplateError> {
        let t = v
            .as_object()
            .ok_or_else(|| invalid("The template must be a JSON object."))?;
        let mut params = BTreeMap::new();
        for (name, decl) in object(get_ci(t, "parameters"), "parameters")?
            .into_iter()
            .flatten()
        {
            let d = decl.as_object().ok_or_else(|| {
                invalid(format!(
                    "The template parameter '{name}' must be an object."
                ))
            })?;
            let ty = get_ci(d, "type")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("The template parameter '{name}' has no type.")))?
                .to_owned();
            params.insert(
                name.clone(),
                ParamDecl {
                    ty,
                    default: get_ci(d, "defaultValue").cloned(),
                    allowed: get_ci(d, "allowedValues")
                        .and_then(Value::as_array)
                        .cloned(),
                },
            );
        }
        let variables = object(get_ci(t, "variables"), "variables")?
            .cloned()
            .unwrap_or_default();
        if variables.contains_key("copy") {
            return Err(invalid("Variable 'copy' loops are not supported by misim."));
        }
        let outputs = object(get_ci(t, "outputs"), "outputs")?
            .cloned()
            .unwrap_or_default();
        let (resources, parents) = match get_ci(t, "resources") {
            None | Some(Value::Null) => (Vec::new(), Vec::new()),
            Some(Value::Array(a)) => {
                let mut flat = Flattened::default();
                for (i, r) in a.iter().enumerate() {
                    flat.push(r, &i.to_string(), None, 0)?;
                }
                (flat.resources, flat.parents)
            }
            Some(_) => {
                return Err(invalid(
                    "The template property 'resources' must be an array.",
                ));
            }
        };
        for (what, n, max) in [
            ("parameters", params.len(), MAX_PARAMETERS),
            ("variables", variables.len(), MAX_VARIABLES),
            ("resources", resources.len(), MAX_RESOURCES),
            ("outputs", outputs.len(), MAX_OUTPUTS),
        ] {
            if n > max {
                return Err(over_limit(what, n, max));
            }
        }
        let tpl = Self {
            params,
            variables,
            resources,
            parents,
            outputs,
        };
        for d in tpl.params.values() {
            if let Some(v) = &d.default {
                expr::validate_value(v)?;
            }
        }
        expr::validate_value(&Value::Object(tpl.variables.clone()))?;
        for r in &tpl.resources {
            expr::validate_value(&Value::Object(r.clone()))?;
        }
        expr::validate_value(&Value::Object(tpl.outputs.clone()))?;
        Ok(tpl)
    }

    /// Resolves parameters: supplied `{"name":{"value":…}}` entries, else defaults.
    pub fn resolve_parameters(
        &self,
        supplied: Option<&Map<String, Value>>,
        target: &Target,
        budget: &Budget,
    ) -> Result<Parameters, TemplateError> {
        let supplied = supplied.cloned().unwrap_or_default();
        for name in supplied.keys() {
            if !self.params.keys().any(|p| p.eq_ignore_ascii_case(name)) {
                return Err(invalid(format!(
                    "The template parameters '{name}' in the parameters file are not valid; they are not present in the original template and can therefore not be provided at deployment time."
                )));
            }
        }
        let mut resolved = Parameters::default();
        for (name, decl) in &self.params {
            let given = supplied
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v);
            let value = match given {
                Some(Value::Object(o)) if o.contains_key("value") => o["value"].clone(),
                Some(Value::Object(o)) if o.contains_key("reference") => {
                    return Err(invalid(format!(
                        "Key Vault parameter references (parameter '{name}') are not supported by misim."
                    )));
                }
                Some(_) => {
                    return Err(invalid(format!(
                        "The parameter '{name}' must be given as {{\"value\": …}}."
                    )));
                }
                None => match &decl.default {
                    Some(d) => {
                        let ev = Evaluator::new(self, target, &resolved, &NoResources, budget);
                        expr::eval_value(d, &ev)?
                    }
                    None => {
                        return Err(invalid(format!(
                            "Deployment template validation failed: 'The value for the template parameter '{name}' is not provided."
                        )));
                    }
                },
            };
            if let Some(allowed) = &decl.allowed
                && !allowed.contains(&value)
            {
                return Err(invalid(format!(
                    "Deployment template validation failed: 'The provided value for the template parameter '{name}' is not valid.'"
                )));
            }
            resolved.insert(name, decl.ty.clone(), value);
        }
        Ok(resolved)
    }

    /// Orders the resources by `dependsOn` (ties keep template order).
    /// `condition: false` resources are left out.
    // long: one topological sort (collect nodes, resolve
    // `dependsOn` through the name index, order with cycle detection).
    pub fn plan(&self, ev: &Evaluator<'_>) -> Result<Vec<Planned>, TemplateError> {
        let mut nodes = Vec::new();
        // Each resource's (type, name) once evaluated, for its nested children.
        let mut evaluated: Vec<Option<(String, String)>> = vec![None; self.resources.len()];
        for (i, r) in self.resources.iter().enumerate() {
            if let Some(c) = get_ci(r, "condition") {
                match expr::eval_value(c, ev)? {
                    Value::Bool(true) => {}
                    Value::Bool(false) => continue,
                    other => {
                        return Err(invalid(format!(
                            "The condition of template resource {i} must be a boolean, got {}.",
                            expr::abbreviate(&other)
                        )));
                    }
                }
            }
            let text = |k: &str| -> Result<String, TemplateError> {
                Ok(expr::to_text(&expr::eval_value(&r[k], ev)?))
            };
            let ty_key = r
                .keys()
                .find(|k| k.eq_ignore_ascii_case("type"))
                .cloned()
                .unwrap_or_default();
            let name_key = r
                .keys()
                .find(|k| k.eq_ignore_ascii_case("name"))
                .cloned()
                .unwrap_or_default();
            let (resource_type, name) = match self.parents[i] {
                None => (text(&ty_key)?, text(&name_key)?),
                // A child of a resource left out (its condition) is left out too.
                Some(p) => match &evaluated[p] {
                    None => continue,
                    Some(parent) => child_type_and_name(parent, &text(&ty_key)?, &text(&name_key)?),
                },
            };
            evaluated[i] = Some((resource_type.clone(), name.clone()));
            let scope = match get_ci(r, "scope").or_else(|| {
                get_ci(r, "properties")
                    .and_then(Value::as_object)
                    .and_then(|p| get_ci(p, "scope"))
            }) {
                Some(s)
                    if resource_type
                        .eq_ignore_ascii_case("Microsoft.Authorization/roleAssignments")
                        || get_ci(r, "scope").is_some() =>
                {
                    Some(expr::to_text(&expr::eval_value(s, ev)?))
                }
                _ => None,
            };
            let id = resource_id(ev.target, &resource_type, &name, scope.as_deref())?;
            let depends = match get_ci(r, "dependsOn") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|d| expr::eval_value(d, ev).map(|v| expr::to_text(&v)))
                    .collect::<Result<_, _>>()?,
                Some(_) => {
                    return Err(invalid(format!(
                        "The dependsOn of '{id}' must be an array."
                    )));
                }
            };
            nodes.push((
                Planned {
                    index: i,
                    resource_type,
                    name,
                    id,
                    scope,
                    // An expression is not checked (it is never evaluated).
                    api_version: get_ci(r, "apiVersion")
                        .and_then(Value::as_str)
                        .filter(|v| !v.starts_with('['))
                        .map(str::to_owned),
                },
                depends,
            ));
        }
        // Resolve each dependsOn entry to a node.
        let index = NameIndex::new(nodes.iter().map(|(p, _)| p));
        let mut edges: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); nodes.len()];
        for (n, (p, deps)) in nodes.iter().enumerate() {
            for d in deps {
                let m = index.depends_on(d).ok_or_else(|| {
                    invalid(format!(
                        "Deployment template validation failed: 'The resource '{d}' is not defined in the template.'"
                    ))
                })?;
                if m == n {
                    return Err(invalid(format!(
                        "Deployment template validation failed: 'Circular dependency detected on resource: '{}'.'",
                        p.id
                    )));
                }
                edges[n].insert(m);
            }
        }
        // Kahn's algorithm, always taking the first ready node in template order.
        let mut done = vec![false; nodes.len()];
        let mut order = Vec::with_capacity(nodes.len());
        while order.len() < nodes.len() {
            let next = (0..nodes.len()).find(|&n| !done[n] && edges[n].iter().all(|&m| done[m]));
            match next {
                Some(n) => {
                    done[n] = true;
                    order.push(nodes[n].0.clone());
                }
                None => {
                    let stuck: Vec<&str> = (0..nodes.len())
                        .filter(|&n| !done[n])
                        .map(|n| nodes[n].0.id.as_str())
                        .collect();
                    return Err(invalid(format!(
                        "Deployment template validation failed: 'Circular dependency detected on resource: '{}'.'",
                        stuck.join("', '")
                    )));
                }
            }
        }
        Ok(order)
    }

    /// The template's raw resource at `index`.
    pub fn resource(&self, index: usize) -> Option<&Map<String, Value>> {
        self.resources.get(index)
    }

    /// Evaluates the outputs: `{name: {"type": T, "value": v}}`.
    pub fn outputs(&self, ev: &Evaluator<'_>) -> Result<Map<String, Value>, TemplateError> {
        let mut out = Map::new();
        for (name, o) in &self.outputs {
            let o = o
                .as_object()
                .ok_or_else(|| invalid(format!("The output '{name}' must be an object.")))?;
            let ty = get_ci(o, "type")
                .and_then(Value::as_str)
                .unwrap_or("string");
            let value = match get_ci(o, "value") {
                Some(v) => expr::eval_value(v, ev)?,
                None => Value::Null,
            };
            out.insert(
                name.clone(),
                serde_json::json!({"type": display_type(ty), "value": value}),
            );
        }
        Ok(out)
    }
}

/// The template's resources by id, by `type/name` and by name (all
/// lower-cased), so that finding one costs the length of the text looked up:
/// a scan of every resource for each `dependsOn` entry or `reference()` let a
/// template of long, similar names spend minutes of CPU.
#[derive(Debug, Default)]
struct NameIndex {
    by_id: HashMap<String, usize>,
    by_type_name: HashMap<String, usize>,
    /// The first resource with the name, and how many have it.
    by_name: HashMap<String, (usize, usize)>,
}

impl NameIndex {
    fn new<'p>(planned: impl Iterator<Item = &'p Planned>) -> Self {
        let mut ix = Self::default();
        for (i, p) in planned.enumerate() {
            ix.by_id.entry(p.id.to_ascii_lowercase()).or_insert(i);
            ix.by_type_name
                .entry(format!("{}/{}", p.resource_type, p.name).to_ascii_lowercase())
                .or_insert(i);
            ix.by_name
                .entry(p.name.to_ascii_lowercase())
                .and_modify(|(_, n)| *n += 1)
                .or_insert((i, 1));
        }
        ix
    }

    /// A `dependsOn` entry: an id, `type/name`, or a name only one resource has.
    fn depends_on(&self, dep: &str) -> Option<usize> {
        let d = dep.trim_end_matches('/').to_ascii_lowercase();
        if d.starts_with('/') {
            return self.by_id.get(&d).copied();
        }
        self.by_type_name.get(&d).copied().or_else(|| {
            self.by_name
                .get(&d)
                .and_then(|&(i, n)| (n == 1).then_some(i))
        })
    }

    /// A `reference()` target: the first resource with the name or `type/name`.
    fn reference(&self, target: &str) -> Option<usize> {
        let t = target.to_ascii_lowercase();
        let by_name = self.by_name.get(&t).map(|&(i, _)| i);
        let by_type_name = self.by_type_name.get(&t).copied();
        by_name.into_iter().chain(by_type_name).min()
    }
}

/// The id a template resource gets: types and names interleave
/// (`ns/t1/n1/t2/n2`); role assignments hang off their scope.
pub fn resource_id(
    target: &Target,
    resource_type: &str,
    name: &str,
    scope: Option<&str>,
) -> Result<String, TemplateError> {
    let mut types = resource_type.split('/');
    let ns = types.next().unwrap_or_default();
    let types: Vec<&str> = types.collect();
    let names: Vec<&str> = name.split('/').collect();
    if ns.is_empty()
        || types.is_empty()
        || types.len() != names.len()
        || names.iter().any(|n| n.is_empty())
    {
        return Err(invalid(format!(
            "Deployment template validation failed: 'The template resource '{name}' of type '{resource_type}' is not valid: the type and the name must have the same number of segments.'"
        )));
    }
    let rg_id = format!(
        "/subscriptions/{}/resourceGroups/{}",
        target.subscription_id, target.resource_group
    );
    let base = match scope {
        None => rg_id,
        Some(s) if s.starts_with('/') => s.trim_end_matches('/').to_owned(),
        // A relative extension scope, e.g. `Microsoft.KeyVault/vaults/kv1`.
        Some(s) => format!("{rg_id}/providers/{s}"),
    };
    let mut id = format!("{base}/providers/{ns}");
    for (t, n) in types.iter().zip(&names) {
        id.push('/');
        id.push_str(t);
        id.push('/');
        id.push_str(n);
    }
    Ok(id)
}

fn display_type(ty: &str) -> &'static str {
    match ty.to_ascii_lowercase().as_str() {
        "securestring" => "SecureString",
        "secureobject" => "SecureObject",
        "int" => "Int",
        "bool" => "Bool",
        "object" => "Object",
        "array" => "Array",
        _ => "String",
    }
}

/// Resolved parameters: name → (declared type, value).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parameters(
    BTreeMap<String, (String, Value)>,
    /// Lower-cased name → name, so that a lookup costs the length of the
    /// name looked up rather than a comparison with every parameter's.
    BTreeMap<String, String>,
);

impl Parameters {
    fn insert(&mut self, name: &str, ty: String, value: Value) {
        self.1
            .entry(name.to_ascii_lowercase())
            .or_insert_with(|| name.to_owned());
        self.0.insert(name.to_owned(), (ty, value));
    }

    /// What a deployment GET shows: secure values never echo.
    pub fn echo(&self) -> Value {
        let m: Map<String, Value> = self
            .0
            .iter()
            .map(|(k, (ty, v))| {
                let shown = display_type(ty);
                let entry = if shown.starts_with("Secure") {
                    serde_json::json!({"type": shown})
                } else {
                    serde_json::json!({"type": shown, "value": v})
                };
                (k.clone(), entry)
            })
            .collect();
        Value::Object(m)
    }

    fn get(&self, name: &str) -> Option<&Value> {
        let key = self.1.get(&name.to_ascii_lowercase())?;
        self.0.get(key).map(|(_, v)| v)
    }
}

/// How `reference()` reaches deployed resources.
pub trait Resources {
    /// The resource with this id: the whole resource when `full`, else its `properties`.
    fn reference(&self, id: &str, full: bool) -> Result<Value, TemplateError>;
}

/// For evaluating parameter defaults, where `reference()` is not allowed.
struct NoResources;

impl Resources for NoResources {
    fn reference(&self, _: &str, _: bool) -> Result<Value, TemplateError> {
        Err(invalid(
            "The template function 'reference' is not expected at this location.",
        ))
    }
}

/// Evaluates expressions of one deployment.
pub struct Evaluator<'a> {
    template: &'a Template,
    target: &'a Target,
    params: &'a Parameters,
    resources: &'a (dyn Resources + Sync),
    /// Ids of the planned resources, found through `names`, for
    /// `reference('name')`.
    ids: Vec<String>,
    names: NameIndex,
    vars: RefCell<BTreeMap<String, Value>>,
    evaluating: RefCell<BTreeSet<String>>,
    budget: &'a Budget,
    /// Set while [`Evaluator::check_before_deploying`] runs.
    defer_references: AtomicBool,
}

impl std::fmt::Debug for Evaluator<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluator")
            .field("target", self.target)
            .finish_non_exhaustive()
    }
}

impl<'a> Evaluator<'a> {
    /// An evaluator for `template` deployed at `target`.
    pub fn new(
        template: &'a Template,
        target: &'a Target,
        params: &'a Parameters,
        resources: &'a (dyn Resources + Sync),
        budget: &'a Budget,
    ) -> Self {
        Self {
            template,
            target,
            params,
            resources,
            ids: Vec::new(),
            names: NameIndex::default(),
            vars: RefCell::new(BTreeMap::new()),
            evaluating: RefCell::new(BTreeSet::new()),
            budget,
            defer_references: AtomicBool::new(false),
        }
    }

    /// Evaluates every variable, the body of every planned resource and the
    /// outputs once before anything is deployed, so that a template over its
    /// [`Budget`] is refused as a whole (ARM resolves variables before it
    /// starts deploying). `reference()` cannot be answered yet and cuts its
    /// value short; every other error is left to the deployment, which
    /// reports it as before. Variables evaluated here are cached for it.
    pub fn check_before_deploying(&self, plan: &[Planned]) -> Result<(), TemplateError> {
        self.defer_references.store(true, Ordering::Relaxed);
        let r = self.check_all(plan);
        self.defer_references.store(false, Ordering::Relaxed);
        r
    }

    fn check_all(&self, plan: &[Planned]) -> Result<(), TemplateError> {
        fn only_budget<T>(r: Result<T, TemplateError>) -> Result<(), TemplateError> {
            match r {
                Err(e @ TemplateError::Budget(_)) => Err(e),
                _ => Ok(()),
            }
        }
        for name in self.template.variables.keys() {
            only_budget(self.variable(name))?;
        }
        for p in plan {
            only_budget(self.resource_body(p))?;
        }
        only_budget(self.template.outputs(self))
    }

    /// Lets `reference('name')` find the planned resources.
    pub fn with_plan(mut self, plan: &[Planned]) -> Self {
        self.ids = plan.iter().map(|p| p.id.clone()).collect();
        self.names = NameIndex::new(plan.iter());
        self
    }

    /// The fully evaluated body of a planned resource (what a direct PUT would carry).
    pub fn resource_body(&self, p: &Planned) -> Result<Value, TemplateError> {
        let raw = self
            .template
            .resource(p.index)
            .ok_or_else(|| invalid(format!("no template resource {}", p.index)))?;
        let mut body = Map::new();
        for (k, v) in raw {
            let skip = [
                "dependsOn",
                "condition",
                "apiVersion",
                "type",
                "name",
                "scope",
                "comments",
                "metadata",
            ];
            if skip.iter().any(|s| s.eq_ignore_ascii_case(k)) {
                continue;
            }
            body.insert(k.clone(), expr::eval_value(v, self)?);
        }
        Ok(Value::Object(body))
    }
}

impl Scope for Evaluator<'_> {
    fn subscription_id(&self) -> &str {
        &self.target.subscription_id
    }

    fn tenant_id(&self) -> &str {
        &self.target.tenant_id
    }

    fn resource_group(&self) -> (&str, &str) {
        (&self.target.resource_group, &self.target.location)
    }

    fn parameter(&self, name: &str) -> Result<Value, TemplateError> {
        self.params.get(name).cloned().ok_or_else(|| {
            invalid(format!(
                "The template parameter '{name}' is not found. Please see https://aka.ms/arm-syntax-parameters for usage details."
            ))
        })
    }

    fn budget(&self) -> &Budget {
        self.budget
    }

    fn variable(&self, name: &str) -> Result<Value, TemplateError> {
        // Variables resolve recursively (a variable's value names others):
        // each resolution is a level of the budget's depth.
        let _level = self.budget.enter()?;
        let key = name.to_ascii_lowercase();
        if let Some(v) = self.vars.borrow().get(&key) {
            return Ok(v.clone());
        }
        let raw = get_ci(&self.template.variables, name).ok_or_else(|| {
            invalid(format!(
                "The template variable '{name}' is not found. Please see https://aka.ms/arm-syntax-variables for usage details."
            ))
        })?;
        if !self.evaluating.borrow_mut().insert(key.clone()) {
            return Err(invalid(format!(
                "The template variable '{name}' refers to itself."
            )));
        }
        let v = expr::eval_value(raw, self);
        self.evaluating.borrow_mut().remove(&key);
        let v = v?;
        self.vars.borrow_mut().insert(key, v.clone());
        Ok(v)
    }

    fn reference(&self, target: &str, full: bool) -> Result<Value, TemplateError> {
        if self.defer_references.load(Ordering::Relaxed) {
            return Err(TemplateError::Deferred);
        }
        let id = if target.starts_with('/') {
            target.to_owned()
        } else {
            self.names
                .reference(target)
                .and_then(|i| self.ids.get(i))
                .cloned()
                .ok_or_else(|| {
                    invalid(format!(
                        "The template reference '{target}' is not valid: could not find template resource or resource copy with this name."
                    ))
                })?
        };
        self.resources.reference(&id, full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn target() -> Target {
        Target {
            subscription_id: "s1".into(),
            tenant_id: "t1".into(),
            resource_group: "rg1".into(),
            location: "eastus".into(),
        }
    }

    fn res(ty: &str, name: &str, deps: Value) -> Value {
        json!({"type": ty, "name": name, "apiVersion": "2020-01-01", "dependsOn": deps, "properties": {}})
    }

    fn order(resources: Value) -> Result<Vec<String>, TemplateError> {
        let t = Template::parse(
            &json!({"resources": resources, "parameters": {"p": {"type": "string", "defaultValue": "x"}}}),
        )?;
        let tg = target();
        let params = t.resolve_parameters(None, &tg, &Budget::default())?;
        let budget = Budget::default();
        let ev = Evaluator::new(&t, &tg, &params, &NoResources, &budget);
        Ok(t.plan(&ev)?.into_iter().map(|p| p.name).collect())
    }

    #[test]
    fn depends_on_orders_resources() {
        let got = order(json!([
            res(
                "Microsoft.Compute/virtualMachines",
                "vm",
                json!(["Microsoft.Network/networkInterfaces/nic"])
            ),
            res(
                "Microsoft.Network/networkInterfaces",
                "nic",
                json!([
                    "Microsoft.Network/virtualNetworks/vnet",
                    "[resourceId('Microsoft.Network/publicIPAddresses', 'ip')]",
                ])
            ),
            res(
                "Microsoft.Authorization/roleAssignments",
                "ra",
                json!([
                    "/subscriptions/s1/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm"
                ])
            ),
            res("Microsoft.Network/virtualNetworks", "vnet", json!([])),
            // Short form with different casing, like az's `publicIpAddresses`.
            res("Microsoft.Network/publicIPAddresses", "ip", json!(["nsg"])),
            res(
                "Microsoft.Network/networkSecurityGroups",
                "[concat(parameters('p'), 'nsg')]",
                json!([])
            ),
        ]));
        // `ip` depends on the name `nsg` which does not exist (the NSG is `xnsg`).
        assert!(got.is_err());
        let got = order(json!([
            res("Microsoft.Compute/virtualMachines", "vm", json!(["Microsoft.Network/networkInterfaces/nic"])),
            res("Microsoft.Network/networkInterfaces", "nic", json!([
                "Microsoft.Network/virtualNetworks/vnet",
                "Microsoft.Network/publicIpAddresses/ip",
            ])),
            res("Microsoft.Authorization/roleAssignments", "ra", json!(["/subscriptions/s1/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm"])),
            res("Microsoft.Network/virtualNetworks", "vnet", json!([])),
            res("Microsoft.Network/publicIPAddresses", "ip", json!(["xnsg"])),
            res("Microsoft.Network/networkSecurityGroups", "[concat(parameters('p'), 'nsg')]", json!([])),
        ]))
        .unwrap();
        assert_eq!(got, ["vnet", "xnsg", "ip", "nic", "vm", "ra"]);
    }

    #[test]
    fn cycles_are_rejected() {
        let e = order(json!([
            res("A.B/c", "one", json!(["A.B/c/two"])),
            res("A.B/c", "two", json!(["A.B/c/three"])),
            res("A.B/c", "three", json!(["A.B/c/one"])),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("Circular dependency"), "{e}");
        let e = order(json!([res("A.B/c", "self", json!(["A.B/c/self"]))])).unwrap_err();
        assert!(e.to_string().contains("Circular dependency"), "{e}");
    }

    #[test]
    fn ids_of_nested_and_extension_resources() {
        let t = target();
        let rg = "/subscriptions/s1/resourceGroups/rg1";
        assert_eq!(
            resource_id(&t, "Microsoft.Network/virtualNetworks/subnets", "v/s", None).unwrap(),
            format!("{rg}/providers/Microsoft.Network/virtualNetworks/v/subnets/s")
        );
        assert_eq!(
            resource_id(
                &t,
                "Microsoft.Authorization/roleAssignments",
                "g",
                Some("/subscriptions/s1")
            )
            .unwrap(),
            "/subscriptions/s1/providers/Microsoft.Authorization/roleAssignments/g"
        );
        // az's form for a resource scope.
        assert_eq!(
            resource_id(
                &t,
                "Microsoft.KeyVault/vaults/providers/roleAssignments",
                "kv/Microsoft.Authorization/g",
                None
            )
            .unwrap(),
            format!(
                "{rg}/providers/Microsoft.KeyVault/vaults/kv/providers/Microsoft.Authorization/roleAssignments/g"
            )
        );
        assert_eq!(
            resource_id(
                &t,
                "Microsoft.Authorization/roleAssignments",
                "g",
                Some("Microsoft.KeyVault/vaults/kv")
            )
            .unwrap(),
            format!(
                "{rg}/providers/Microsoft.KeyVault/vaults/kv/providers/Microsoft.Authorization/roleAssignments/g"
            )
        );
        assert!(resource_id(&t, "Microsoft.Network/virtualNetworks/subnets", "v", None).is_err());
    }

    #[test]
    fn parameters_defaults_secure_echo_and_errors() {
        let t = Template::parse(&json!({
            "parameters": {
                "adminPassword": {"type": "securestring"},
                "vmName": {"type": "string", "defaultValue": "[concat('vm-', resourceGroup().name)]"},
                "size": {"type": "string", "defaultValue": "B1s", "allowedValues": ["B1s", "B2s"]},
            },
            "variables": {"nic": "[concat(parameters('vmName'), 'Nic')]", "nicId": "[resourceId('Microsoft.Network/networkInterfaces', variables('nic'))]"},
            "resources": [],
            "outputs": {"nicId": {"type": "string", "value": "[variables('nicId')]"}},
        }))
        .unwrap();
        let tg = target();
        let supplied = json!({"adminPassword": {"value": "hunter2"}});
        let p = t
            .resolve_parameters(supplied.as_object(), &tg, &Budget::default())
            .unwrap();
        assert_eq!(
            p.echo(),
            json!({"adminPassword": {"type": "SecureString"}, "size": {"type": "String", "value": "B1s"}, "vmName": {"type": "String", "value": "vm-rg1"}})
        );
        let budget = Budget::default();
        let ev = Evaluator::new(&t, &tg, &p, &NoResources, &budget);
        assert_eq!(ev.parameter("ADMINPASSWORD").unwrap(), json!("hunter2"));
        assert_eq!(
            t.outputs(&ev).unwrap(),
            *json!({"nicId": {"type": "String", "value": "/subscriptions/s1/resourceGroups/rg1/providers/Microsoft.Network/networkInterfaces/vm-rg1Nic"}}).as_object().unwrap()
        );
        assert!(
            t.resolve_parameters(None, &tg, &Budget::default())
                .unwrap_err()
                .to_string()
                .contains("adminPassword")
        );
        let extra = json!({"adminPassword": {"value": "x"}, "nope": {"value": 1}});
        assert!(
            t.resolve_parameters(extra.as_object(), &tg, &Budget::default())
                .is_err()
        );
        let bad = json!({"adminPassword": {"value": "x"}, "size": {"value": "huge"}});
        assert!(
            t.resolve_parameters(bad.as_object(), &tg, &Budget::default())
                .is_err()
        );
    }

    #[test]
    fn unsupported_things_fail_at_parse() {
        let e = Template::parse(&json!({"resources": [{"type": "A.B/c", "name": "[utcNow()]"}]}))
            .unwrap_err();
        assert_eq!(e, TemplateError::UnsupportedFunction("utcNow".into()));
        assert!(
            Template::parse(&json!({"resources": [{"type": "A.B/c", "name": "x", "copy": {}}]}))
                .is_err()
        );
        assert!(Template::parse(&json!({"resources": [{"type": "A.B/c"}]})).is_err());
        assert!(Template::parse(&json!([])).is_err());
    }

    #[test]
    fn nested_resources_are_flattened_after_their_parent() {
        let t = Template::parse(&json!({
            "parameters": {"id": {"type": "string", "defaultValue": "payments"}},
            "resources": [
            {"type": "Microsoft.ManagedIdentity/userAssignedIdentities", "name": "[parameters('id')]",
             "location": "eastus",
             "resources": [
                {"type": "federatedIdentityCredentials", "name": "aks1",
                 "dependsOn": ["[parameters('id')]"],
                 "properties": {"subject": "s"}},
                {"type": "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials",
                 "name": "[concat(parameters('id'), '/gh')]"},
                {"type": "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials",
                 "name": "short"}
             ]},
            {"type": "A.B/c", "name": "off", "condition": false,
             "resources": [{"type": "d", "name": "never"}]}
        ]}))
        .unwrap();
        let target = target();
        let params = t
            .resolve_parameters(None, &target, &Budget::default())
            .unwrap();
        let budget = Budget::default();
        let ev = Evaluator::new(&t, &target, &params, &NoResources, &budget);
        let plan = t.plan(&ev).unwrap();
        let ids: Vec<&str> = plan.iter().map(|p| p.id.as_str()).collect();
        let uami = "/subscriptions/s1/resourceGroups/rg1/providers/Microsoft.ManagedIdentity/userAssignedIdentities/payments";
        assert_eq!(
            ids,
            [
                uami.to_owned(),
                format!("{uami}/federatedIdentityCredentials/aks1"),
                format!("{uami}/federatedIdentityCredentials/gh"),
                format!("{uami}/federatedIdentityCredentials/short"),
            ]
        );
        assert_eq!(plan[1].name, "payments/aks1");
        // The parent's body does not carry its children; the child's is its own.
        let ev = ev.with_plan(&plan);
        assert!(
            ev.resource_body(&plan[0])
                .unwrap()
                .get("resources")
                .is_none()
        );
        assert_eq!(
            ev.resource_body(&plan[1]).unwrap(),
            json!({"properties": {"subject": "s"}})
        );
    }

    #[test]
    fn nesting_is_bounded_and_checked() {
        let mut r = json!({"type": "A.B/c", "name": "x"});
        for _ in 0..=MAX_NESTING {
            r = json!({"type": "A.B/c", "name": "x", "resources": [r]});
        }
        let e = Template::parse(&json!({ "resources": [r] })).unwrap_err();
        assert!(e.to_string().contains("levels deep"), "{e}");
        let e = Template::parse(&json!({"resources": [
            {"type": "A.B/c", "name": "x", "resources": [{"type": "d"}]}
        ]}))
        .unwrap_err();
        assert!(e.to_string().contains("resource 0.0"), "{e}");
        let e = Template::parse(&json!({"resources": [
            {"type": "A.B/c", "name": "x", "resources": {}}
        ]}))
        .unwrap_err();
        assert!(e.to_string().contains("must be an array"), "{e}");
    }

    #[test]
    fn conditions_skip_resources() {
        let t = Template::parse(&json!({"resources": [
            {"type": "A.B/c", "name": "on", "condition": "[equals(1, 1)]"},
            {"type": "A.B/c", "name": "off", "condition": false},
        ]}))
        .unwrap();
        let tg = target();
        let p = t.resolve_parameters(None, &tg, &Budget::default()).unwrap();
        let budget = Budget::default();
        let ev = Evaluator::new(&t, &tg, &p, &NoResources, &budget);
        let names: Vec<String> = t.plan(&ev).unwrap().into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["on"]);
    }

    #[test]
    fn az_vm_create_uses_a_sliver_of_the_budget() {
        for fixture in [
            include_str!("../../tests/it/fixtures/system-assigned-with-role.json"),
            include_str!("../../tests/it/fixtures/user-assigned.json"),
        ] {
            let body: Value = serde_json::from_str(fixture).unwrap();
            let t = Template::parse(&body["properties"]["template"]).unwrap();
            let tg = target();
            let budget = Budget::default();
            let p = t
                .resolve_parameters(body["properties"]["parameters"].as_object(), &tg, &budget)
                .unwrap();
            let ev = Evaluator::new(&t, &tg, &p, &NoResources, &budget);
            let plan = t.plan(&ev).unwrap();
            let ev = ev.with_plan(&plan);
            ev.check_before_deploying(&plan).unwrap();
            assert!(budget.spent() > 0);
            assert!(
                budget.spent() < budget::MAX_WORK / 1000,
                "{} units",
                budget.spent()
            );
        }
    }

    #[test]
    fn the_check_before_deploying_defers_references_and_keeps_other_errors() {
        let t = Template::parse(&json!({
            "variables": {"fine": "[concat('a', 'b')]", "later": "[reference('x').id]", "bad": "[parameters('nope')]"},
            "resources": [{"type": "A.B/c", "name": "r", "properties": {"p": "[reference('r').x]"}}],
        }))
        .unwrap();
        let tg = target();
        let budget = Budget::default();
        let p = t.resolve_parameters(None, &tg, &budget).unwrap();
        let ev = Evaluator::new(&t, &tg, &p, &NoResources, &budget);
        let plan = t.plan(&ev).unwrap();
        let ev = ev.with_plan(&plan);
        ev.check_before_deploying(&plan).unwrap();
        // After the check, reference() is live again (here: NoResources refuses it).
        assert!(matches!(
            ev.variable("later"),
            Err(TemplateError::Invalid(_))
        ));
        let tight = Budget::with_limits(budget::MAX_DEPTH, 3, budget::MAX_WORK);
        let ev = Evaluator::new(&t, &tg, &p, &NoResources, &tight).with_plan(&plan);
        assert!(matches!(
            ev.check_before_deploying(&plan),
            Err(TemplateError::Budget(_))
        ));
    }

    #[test]
    fn parameter_lookups_by_long_names_cost_what_they_are_charged() {
        // 256 parameters whose 4,000-character names differ only at the end,
        // looked up 12,000 times by a computed name: scanning every name on
        // each lookup compared 12 G bytes (seconds of CPU on a budget of
        // 64 M units); each lookup is charged about 4,000 units.
        let name = |i: usize| format!("{}{i:03}", "p".repeat(3_997));
        let params: Map<String, Value> = (0..256)
            .map(|i| (name(i), json!({"type": "int", "defaultValue": i})))
            .collect();
        let calls = vec![json!("[parameters(variables('n'))]"); 12_000];
        let t = Template::parse(&json!({
            "parameters": params,
            "variables": {"n": name(255).to_uppercase(), "calls": calls},
        }))
        .unwrap();
        let tg = target();
        let budget = Budget::default();
        let p = t.resolve_parameters(None, &tg, &budget).unwrap();
        let ev = Evaluator::new(&t, &tg, &p, &NoResources, &budget);
        let v = ev.variable("calls").unwrap();
        assert_eq!(v[11_999], json!(255));
        // Before the index: 199 s in a debug build; now about 1 s.
        // No timing is asserted: a regression shows as a test that runs for
        // minutes, ended by nextest's terminate-after (.config/nextest.toml).
    }

    #[test]
    fn depends_on_entries_are_found_without_comparing_every_resource() {
        // 800 resources with 2,000-character names that differ only at the
        // end, and one with 10,000 dependsOn entries naming another: each
        // entry formatted and compared every resource's type and name
        // (1.6 MB copied and 1.6 M bytes compared per entry).
        let pre = "n".repeat(2_000);
        let resources: Vec<Value> = (0..800)
            .map(|i| {
                let deps = if i == 799 {
                    vec![json!("[concat(variables('pre'), '000')]"); 10_000]
                } else {
                    Vec::new()
                };
                json!({"type": "A.B/c", "name": format!("[concat(variables('pre'), '{i:03}')]"), "dependsOn": deps})
            })
            .collect();
        let t =
            Template::parse(&json!({"variables": {"pre": pre}, "resources": resources})).unwrap();
        let tg = target();
        let budget = Budget::default();
        let p = t.resolve_parameters(None, &tg, &budget).unwrap();
        let ev = Evaluator::new(&t, &tg, &p, &NoResources, &budget);
        let plan = t.plan(&ev).unwrap();
        assert_eq!(plan.len(), 800);
        // Before the index: 264 s in a debug build; now about 1.5 s.
        // No timing is asserted: a regression shows as a test that runs for
        // minutes, ended by nextest's terminate-after (.config/nextest.toml).
    }

    /// Every resource exists, with `{"x": 1}` as its properties.
    struct Everything;

    impl Resources for Everything {
        fn reference(&self, _: &str, _: bool) -> Result<Value, TemplateError> {
            Ok(json!({"x": 1}))
        }
    }

    #[test]
    fn references_by_name_are_found_without_comparing_every_resource() {
        // As above, with 2,000 reference() calls naming the last resource:
        // 52 s in a debug build before the index.
        let pre = "n".repeat(2_000);
        let resources: Vec<Value> = (0..800)
            .map(|i| json!({"type": "A.B/c", "name": format!("[concat(variables('pre'), '{i:03}')]")}))
            .collect();
        let calls = vec![json!("[reference(concat(variables('pre'), '799')).x]"); 2_000];
        let t = Template::parse(
            &json!({"variables": {"pre": pre, "calls": calls}, "resources": resources}),
        )
        .unwrap();
        let tg = target();
        let budget = Budget::default();
        let p = t.resolve_parameters(None, &tg, &budget).unwrap();
        let ev = Evaluator::new(&t, &tg, &p, &Everything, &budget);
        let plan = t.plan(&ev).unwrap();
        let ev = ev.with_plan(&plan);
        let v = ev.variable("calls").unwrap();
        assert_eq!(v[1_999], json!(1));
    }

    #[test]
    fn variable_cycles_are_invalid_not_unbounded() {
        let t = Template::parse(&json!({
            "variables": {"a": "[variables('b')]", "b": "[concat('x', variables('c'))]", "c": "[variables('A')]"},
        }))
        .unwrap();
        let tg = target();
        let budget = Budget::default();
        let p = t.resolve_parameters(None, &tg, &budget).unwrap();
        let ev = Evaluator::new(&t, &tg, &p, &NoResources, &budget);
        let e = ev.variable("a").unwrap_err();
        assert_eq!(
            e,
            TemplateError::Invalid("The template variable 'A' refers to itself.".into())
        );
    }
}
