//! docs/scenario.schema.json checked against the Rust types (every object's properties are
//! exactly the fields serde reads, `required` exactly those it cannot do without) and every
//! example in examples/scenarios checked against the schema by a small validator of the
//! keywords the schema uses (`pattern` aside: the Rust validation checks names and GUIDs).

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::model::*;

fn schema() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/scenario.schema.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn def<'a>(schema: &'a Value, name: &str) -> &'a Value {
    if name == "scenario" {
        schema
    } else {
        &schema["$defs"][name]
    }
}

/// `value`'s keys are the schema object's properties; dropping a required one fails to
/// parse as `T`, dropping any other parses.
fn matches_type<T: Serialize + DeserializeOwned>(schema: &Value, name: &str, full: &T) {
    let d = def(schema, name);
    let value = serde_json::to_value(full).unwrap();
    let mut fields: Vec<&String> = value.as_object().unwrap().keys().collect();
    let mut props: Vec<&String> = d["properties"].as_object().unwrap().keys().collect();
    fields.sort();
    props.sort();
    assert_eq!(fields, props, "{name}: schema properties vs Rust fields");
    assert_eq!(d["additionalProperties"], false, "{name}");
    let required: Vec<&str> = d["required"]
        .as_array()
        .map(|r| r.iter().map(|v| v.as_str().unwrap()).collect())
        .unwrap_or_default();
    for f in fields {
        let mut without = value.clone();
        without.as_object_mut().unwrap().remove(f);
        let parses = serde_json::from_value::<T>(without).is_ok();
        assert_eq!(
            parses,
            !required.contains(&f.as_str()),
            "{name}.{f}: required?"
        );
    }
}

fn s(v: &str) -> Option<String> {
    Some(v.into())
}

#[test]
fn the_schema_describes_the_rust_types() {
    let sc = schema();
    let ids = PinnedIds {
        client_id: s("c"),
        principal_id: s("p"),
    };
    let principal = Principal {
        identity: s("i"),
        vm: s("v"),
        principal_id: s("p"),
    };
    let scope = Scope {
        subscription: Some(true),
        resource_group: s("g"),
        vault: s("v"),
        identity: s("i"),
        vm: s("m"),
        id: s("/subscriptions/x"),
    };
    let fault = Fault {
        service: "imds".into(),
        vm: s("v"),
        identity: s("i"),
        path: s("/p"),
        status: Some(429),
        aadsts: Some(1),
        retry_after: Some(1),
        latency: s("1s"),
        count: Some(1),
        probability: Some(0.5),
    };
    let secret = Secret {
        name: "n".into(),
        value: s("v"),
    };
    let group = Group {
        name: "g".into(),
        location: s("l"),
    };
    let identity = Identity {
        name: "n".into(),
        resource_group: "g".into(),
        location: s("l"),
        client_id: s("c"),
        principal_id: s("p"),
    };
    let vault = Vault {
        name: "n".into(),
        resource_group: "g".into(),
        location: s("l"),
        secrets: vec![secret.clone()],
    };
    let vm = Vm {
        name: "n".into(),
        resource_group: "g".into(),
        location: s("l"),
        system_assigned: Some(ids.clone()),
        user_assigned: vec!["i".into()],
    };
    let assignment = Assignment {
        role: "r".into(),
        principal: principal.clone(),
        scope: scope.clone(),
    };
    let clock = Clock {
        at: "2027-01-01".into(),
    };
    let scenario = Scenario {
        api_version: API_VERSION.into(),
        clock: Some(clock.clone()),
        resource_groups: vec![group.clone()],
        identities: vec![identity.clone()],
        vaults: vec![vault.clone()],
        vms: vec![vm.clone()],
        role_assignments: vec![assignment.clone()],
        faults: vec![fault.clone()],
    };
    matches_type(&sc, "scenario", &scenario);
    matches_type(&sc, "clock", &clock);
    matches_type(&sc, "resourceGroup", &group);
    matches_type(&sc, "identity", &identity);
    matches_type(&sc, "pinnedIds", &ids);
    matches_type(&sc, "vault", &vault);
    matches_type(&sc, "secret", &secret);
    matches_type(&sc, "vm", &vm);
    matches_type(&sc, "principal", &principal);
    matches_type(&sc, "scope", &scope);
    matches_type(&sc, "roleAssignment", &assignment);
    matches_type(&sc, "fault", &fault);
}

/// Problems of `v` against schema node `s` (the keywords docs/scenario.schema.json uses).
fn check(root: &Value, s: &Value, v: &Value, path: &str, out: &mut Vec<String>) {
    if let Some(r) = s["$ref"].as_str() {
        let name = r.strip_prefix("#/$defs/").unwrap();
        check(root, &root["$defs"][name], v, path, out);
    }
    let mut bad = |what: String| out.push(format!("{path}: {what}"));
    if let Some(c) = s.get("const").filter(|c| *c != v) {
        bad(format!("not {c}"));
    }
    if let Some(e) = s["enum"].as_array().filter(|e| !e.contains(v)) {
        bad(format!("not one of {e:?}"));
    }
    let ty_ok = match s["type"].as_str() {
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        _ => true,
    };
    if !ty_ok {
        bad(format!("not a {}", s["type"]));
        return;
    }
    let num = |k: &str| s[k].as_f64();
    if let Some(x) = v.as_f64()
        && (num("minimum").is_some_and(|m| x < m)
            || num("maximum").is_some_and(|m| x > m)
            || num("exclusiveMinimum").is_some_and(|m| x <= m))
    {
        bad(format!("{x} is out of range"));
    }
    if let Some(t) = v.as_str() {
        let n = t.chars().count() as f64;
        if num("minLength").is_some_and(|m| n < m) || num("maxLength").is_some_and(|m| n > m) {
            bad("wrong length".into());
        }
    }
    if let Some(items) = v.as_array() {
        for (i, item) in items.iter().enumerate() {
            check(root, &s["items"], item, &format!("{path}[{i}]"), out);
        }
    }
    if let Some(o) = v.as_object() {
        object(root, s, o, path, out);
    }
}

fn object(root: &Value, s: &Value, o: &Map<String, Value>, path: &str, out: &mut Vec<String>) {
    let props = s["properties"].as_object();
    for (k, val) in o {
        match props.and_then(|p| p.get(k)) {
            Some(ps) => check(root, ps, val, &format!("{path}.{k}"), out),
            None if s["additionalProperties"] == false => out.push(format!("{path}: unknown {k}")),
            None => {}
        }
    }
    for r in s["required"].as_array().into_iter().flatten() {
        if !o.contains_key(r.as_str().unwrap()) {
            out.push(format!("{path}: {r} is required"));
        }
    }
    let n = o.len() as u64;
    if s["minProperties"].as_u64().is_some_and(|m| n < m)
        || s["maxProperties"].as_u64().is_some_and(|m| n > m)
    {
        out.push(format!("{path}: {n} properties"));
    }
    for (k, deps) in s["dependentRequired"].as_object().into_iter().flatten() {
        for d in deps.as_array().unwrap() {
            if o.contains_key(k) && !o.contains_key(d.as_str().unwrap()) {
                out.push(format!("{path}: {k} needs {d}"));
            }
        }
    }
}

fn problems(v: &Value) -> Vec<String> {
    let root = schema();
    let mut out = Vec::new();
    check(&root, &root, v, "$", &mut out);
    out
}

#[test]
fn every_example_follows_the_schema() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/scenarios");
    let mut seen = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let scenario = parse(&text, Format::of(&path, &text)).unwrap();
        let v = serde_json::to_value(&scenario).unwrap();
        assert_eq!(problems(&v), Vec::<String>::new(), "{}", path.display());
        seen += 1;
    }
    assert!(seen >= 3);
}

#[test]
fn the_validator_refuses_what_the_schema_forbids() {
    let bad = json!({
        "apiVersion": "misim/v2",
        "identities": [{"name": "id1", "resourceGroup": "g", "clientId": "x"}],
        "roleAssignments": [{"role": "r", "principal": {}, "scope": {"subscription": true, "vm": "v"}}],
        "faults": [{"service": "dns", "probability": 2}],
        "extra": 1
    });
    let got = problems(&bad);
    for want in [
        "$.apiVersion: not",
        "$.identities[0]: clientId needs",
        "$.roleAssignments[0].principal: 0 properties",
        "$.roleAssignments[0].scope: 2 properties",
        "$.faults[0].service: not one of",
        "$.faults[0].probability: 2 is out of range",
        "$: unknown extra",
    ] {
        assert!(
            got.iter().any(|g| g.starts_with(want)),
            "{want:?} in {got:#?}"
        );
    }
}
