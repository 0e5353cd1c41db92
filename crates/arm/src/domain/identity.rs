//! The VM `identity` block: type strings and PATCH merge rules (docs/azure-protocol.md, ARM: VM
//! identity block). Pure: no IO, unit-tested against the merge table there.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::ArmError;

/// Which kinds of identity a VM has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IdentityType {
    /// System-assigned identity enabled.
    pub system: bool,
    /// User-assigned identities attached.
    pub user: bool,
}

impl IdentityType {
    /// Parses a type string case- and space-insensitively:
    /// `SystemAssigned,UserAssigned`, `systemassigned, userassigned`, `None`, …
    pub fn parse(s: &str) -> Result<Self, ArmError> {
        let bad = || {
            ArmError::InvalidParameter(format!(
                "The identity type '{s}' is not valid. Allowed values: SystemAssigned, UserAssigned, 'SystemAssigned, UserAssigned', None."
            ))
        };
        let cleaned: String = s
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_lowercase();
        let mut t = IdentityType::default();
        let mut none = false;
        for part in cleaned.split(',') {
            match part {
                "systemassigned" if !t.system => t.system = true,
                "userassigned" if !t.user => t.user = true,
                "none" if !none => none = true,
                _ => return Err(bad()),
            }
        }
        if none && (t.system || t.user) {
            return Err(bad());
        }
        Ok(t)
    }

    /// The canonical form Azure returns (with the space that az relies on).
    pub fn canonical(self) -> &'static str {
        match (self.system, self.user) {
            (true, true) => "SystemAssigned, UserAssigned",
            (true, false) => "SystemAssigned",
            (false, true) => "UserAssigned",
            (false, false) => "None",
        }
    }
}

/// The `userAssignedIdentities` field of a request.
#[derive(Debug, Clone, PartialEq)]
pub enum UamiField {
    /// Not sent.
    Absent,
    /// Sent as `null`: the map is unchanged.
    Null,
    /// Entries by id as sent: `true` = attach (`{}`), `false` = detach (`null`).
    Map(Vec<(String, bool)>),
}

/// A request's `identity` block.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityRequest {
    /// The requested type, if sent.
    pub kind: Option<IdentityType>,
    /// `userAssignedIdentities`: absent, `null`, or the ids to attach and detach.
    pub uamis: UamiField,
}

impl IdentityRequest {
    /// Parses the block as sent: 400 `InvalidRequestContent` for a wrong shape,
    /// `InvalidParameter` for an unknown `type`.
    pub fn from_json(v: &Value) -> Result<Self, ArmError> {
        let obj = v
            .as_object()
            .ok_or_else(|| ArmError::InvalidRequestContent("identity must be an object".into()))?;
        let kind = match obj.get("type") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(IdentityType::parse(s)?),
            Some(_) => {
                return Err(ArmError::InvalidRequestContent(
                    "identity.type must be a string".into(),
                ));
            }
        };
        let uamis = match obj.get("userAssignedIdentities") {
            None => UamiField::Absent,
            Some(Value::Null) => UamiField::Null,
            Some(Value::Object(m)) => {
                UamiField::Map(m.iter().map(|(k, v)| (k.clone(), !v.is_null())).collect())
            }
            Some(_) => {
                return Err(ArmError::InvalidRequestContent(
                    "identity.userAssignedIdentities must be an object".into(),
                ));
            }
        };
        Ok(Self { kind, uamis })
    }
}

/// A VM's identities: SAMI on/off and UAMIs by lower-case id (value: id as sent).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdentityState {
    /// System-assigned identity enabled.
    pub system: bool,
    /// Attached UAMIs, lower-case id → original id.
    pub uamis: BTreeMap<String, String>,
}

impl IdentityState {
    /// The type this state shows.
    pub fn kind(&self) -> IdentityType {
        IdentityType {
            system: self.system,
            user: !self.uamis.is_empty(),
        }
    }
}

/// Applies a PATCH `identity` block to `current` (the merge table in docs/azure-protocol.md, ARM:
/// VM identity block).
pub fn merge(current: &IdentityState, req: &IdentityRequest) -> Result<IdentityState, ArmError> {
    let kind = req.kind.unwrap_or_else(|| {
        // No type: keep the SAMI as is; UAMIs follow the map.
        let mut k = current.kind();
        if let UamiField::Map(m) = &req.uamis {
            k.user = k.user || m.iter().any(|(_, add)| *add);
        }
        k
    });
    let mut uamis = BTreeMap::new();
    if kind.user {
        uamis = current.uamis.clone();
        if let UamiField::Map(entries) = &req.uamis {
            for (id, add) in entries {
                if *add {
                    uamis.insert(id.to_ascii_lowercase(), id.clone());
                } else {
                    uamis.remove(&id.to_ascii_lowercase());
                }
            }
        }
        if uamis.is_empty() {
            return Err(ArmError::InvalidParameter(
                "The identity type includes UserAssigned but no user-assigned identities are specified.".into(),
            ));
        }
    } else if let UamiField::Map(entries) = &req.uamis
        && entries.iter().any(|(_, add)| *add)
    {
        return Err(ArmError::InvalidParameter(format!(
            "User-assigned identities can only be given with an identity type that includes UserAssigned, not '{}'.",
            kind.canonical()
        )));
    }
    Ok(IdentityState {
        system: kind.system,
        uamis,
    })
}

/// Applies a PUT (replace) `identity` block: the SAMI survives when still
/// requested, the UAMI map is exactly the one sent.
pub fn replace(
    current: &IdentityState,
    req: Option<&IdentityRequest>,
) -> Result<IdentityState, ArmError> {
    match req {
        None => Ok(IdentityState::default()),
        Some(r) => merge(
            &IdentityState {
                system: current.system,
                uamis: BTreeMap::new(),
            },
            r,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ID1: &str = "/subscriptions/s/resourceGroups/rg1/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1";
    const ID2: &str = "/subscriptions/s/resourceGroups/rg1/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id2";

    #[test]
    fn type_strings_parse_loosely_and_print_canonically() {
        let cases = [
            (
                "SystemAssigned,UserAssigned",
                "SystemAssigned, UserAssigned",
            ),
            (
                "systemassigned, userassigned",
                "SystemAssigned, UserAssigned",
            ),
            (
                "UserAssigned , SystemAssigned",
                "SystemAssigned, UserAssigned",
            ),
            ("SYSTEMASSIGNED", "SystemAssigned"),
            ("userAssigned", "UserAssigned"),
            ("None", "None"),
            ("none", "None"),
        ];
        for (input, want) in cases {
            assert_eq!(
                IdentityType::parse(input).unwrap().canonical(),
                want,
                "{input}"
            );
        }
        for bad in [
            "",
            "Both",
            "None,SystemAssigned",
            "SystemAssigned,SystemAssigned",
        ] {
            assert!(IdentityType::parse(bad).is_err(), "{bad}");
        }
    }

    fn state(system: bool, ids: &[&str]) -> IdentityState {
        IdentityState {
            system,
            uamis: ids
                .iter()
                .map(|i| (i.to_ascii_lowercase(), i.to_string()))
                .collect(),
        }
    }

    fn req(v: Value) -> IdentityRequest {
        IdentityRequest::from_json(&v).unwrap()
    }

    #[test]
    fn patch_merge_table() {
        let cases = [
            // SAMI created on a VM with no identity.
            (
                state(false, &[]),
                json!({"type":"SystemAssigned"}),
                state(true, &[]),
            ),
            // SAMI kept, UAMI added.
            (
                state(true, &[ID1]),
                json!({"type":"SystemAssigned,UserAssigned","userAssignedIdentities":{ID1:{}, ID2:{}}}),
                state(true, &[ID1, ID2]),
            ),
            (
                state(true, &[]),
                json!({"type":"SystemAssigned,UserAssigned","userAssignedIdentities":{ID1:{}}}),
                state(true, &[ID1]),
            ),
            // Remove id1 only.
            (
                state(true, &[ID1, ID2]),
                json!({"type":"SystemAssigned,UserAssigned","userAssignedIdentities":{ID1:null}}),
                state(true, &[ID2]),
            ),
            // Drop all UAMIs, keep the SAMI.
            (
                state(true, &[ID1, ID2]),
                json!({"type":"SystemAssigned","userAssignedIdentities":null}),
                state(true, &[]),
            ),
            // Drop the SAMI, keep the UAMIs (null map = unchanged).
            (
                state(true, &[ID1, ID2]),
                json!({"type":"UserAssigned","userAssignedIdentities":null}),
                state(false, &[ID1, ID2]),
            ),
            // Remove everything.
            (
                state(true, &[ID1]),
                json!({"type":"None","userAssignedIdentities":null}),
                state(false, &[]),
            ),
            (
                state(true, &[ID1]),
                json!({"type":"None"}),
                state(false, &[]),
            ),
            // Case-insensitive ids: removal matches regardless of casing.
            (
                state(false, &[ID1, ID2]),
                json!({"type":"UserAssigned","userAssignedIdentities":{ID1.to_uppercase():null}}),
                state(false, &[ID2]),
            ),
        ];
        for (current, body, want) in cases {
            let got = merge(&current, &req(body.clone())).unwrap();
            assert_eq!(got, want, "{body}");
        }
    }

    #[test]
    fn inconsistent_requests_are_rejected() {
        assert!(merge(&state(false, &[]), &req(json!({"type":"UserAssigned"}))).is_err());
        assert!(
            merge(
                &state(false, &[]),
                &req(json!({"type":"SystemAssigned","userAssignedIdentities":{ID1:{}}}))
            )
            .is_err()
        );
        assert!(IdentityRequest::from_json(&json!({"type": 3})).is_err());
    }

    #[test]
    fn put_replaces_the_map_but_keeps_the_sami() {
        let cur = state(true, &[ID1]);
        let got = replace(
            &cur,
            Some(&req(
                json!({"type":"SystemAssigned, UserAssigned","userAssignedIdentities":{ID2:{}}}),
            )),
        )
        .unwrap();
        assert_eq!(got, state(true, &[ID2]));
        assert_eq!(replace(&cur, None).unwrap(), state(false, &[]));
    }
}
