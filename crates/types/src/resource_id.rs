//! `ResourceId`: ARM resource ids, compared case-insensitively but echoed with their original
//! casing.

use std::fmt;

/// An ARM resource id such as
/// `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/vm1`.
///
/// ARM treats ids case-insensitively but echoes names as created, so a
/// `ResourceId` keeps the original text and compares by [`ResourceId::key`].
#[derive(Clone, Debug, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ResourceId {
    text: String,
}

/// Why a string is not a resource id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceIdError(pub String);

impl fmt::Display for ResourceIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid resource id {:?}", self.0)
    }
}

impl std::error::Error for ResourceIdError {}

impl ResourceId {
    /// Parses an id. Accepts `/` (the root scope), subscriptions, resource
    /// groups and provider resources (nested and extension resources too).
    /// Trailing slashes are dropped.
    pub fn parse(s: &str) -> Result<Self, ResourceIdError> {
        let err = || ResourceIdError(s.to_owned());
        if !s.starts_with('/') {
            return Err(err());
        }
        let trimmed = s.trim_end_matches('/');
        if trimmed.is_empty() {
            return Ok(Self { text: "/".into() });
        }
        let segs: Vec<&str> = trimmed[1..].split('/').collect();
        if segs.iter().any(|p| p.is_empty()) {
            return Err(err());
        }
        let first = segs[0].to_ascii_lowercase();
        if first != "subscriptions" && first != "providers" {
            return Err(err());
        }
        if first == "subscriptions" && segs.len() < 2 {
            return Err(err());
        }
        Ok(Self {
            text: trimmed.to_owned(),
        })
    }

    /// The id as created (original casing).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The comparison key: lower case.
    pub fn key(&self) -> String {
        self.text.to_ascii_lowercase()
    }

    fn segments(&self) -> Vec<&str> {
        if self.text == "/" {
            return Vec::new();
        }
        self.text[1..].split('/').collect()
    }

    fn value_after(&self, name: &str) -> Option<&str> {
        let segs = self.segments();
        segs.windows(2)
            .find(|w| w[0].eq_ignore_ascii_case(name))
            .map(|w| w[1])
    }

    /// The subscription id, if the id lies within one.
    pub fn subscription(&self) -> Option<&str> {
        let segs = self.segments();
        match segs.as_slice() {
            [s, sub, ..] if s.eq_ignore_ascii_case("subscriptions") => Some(sub),
            _ => None,
        }
    }

    /// The resource group name, if the id lies within one.
    pub fn resource_group(&self) -> Option<&str> {
        let segs = self.segments();
        match segs.as_slice() {
            [_, _, rg, name, ..] if rg.eq_ignore_ascii_case("resourceGroups") => Some(name),
            _ => None,
        }
    }

    /// The last `providers/{namespace}/...` part as (namespace, type path, name):
    /// `("Microsoft.Compute", "virtualMachines", "vm1")`. Nested types join with `/`.
    pub fn provider_resource(&self) -> Option<(&str, String, &str)> {
        let segs = self.segments();
        let pos = segs
            .iter()
            .rposition(|s| s.eq_ignore_ascii_case("providers"))?;
        let rest = &segs[pos + 1..];
        if rest.len() < 3 || rest.len().is_multiple_of(2) {
            return None;
        }
        let ns = rest[0];
        let types: Vec<&str> = rest[1..].iter().step_by(2).copied().collect();
        let name = rest[rest.len() - 1];
        Some((ns, types.join("/"), name))
    }

    /// The full resource type, e.g. `Microsoft.Compute/virtualMachines`,
    /// `Microsoft.Resources/resourceGroups` or `Microsoft.Resources/subscriptions`.
    pub fn resource_type(&self) -> String {
        if let Some((ns, ty, _)) = self.provider_resource() {
            return format!("{ns}/{ty}");
        }
        if self.resource_group().is_some() {
            "Microsoft.Resources/resourceGroups".into()
        } else if self.subscription().is_some() {
            "Microsoft.Resources/subscriptions".into()
        } else {
            "Microsoft.Resources/tenants".into()
        }
    }

    /// The resource name (last segment); empty for the root scope.
    pub fn name(&self) -> &str {
        self.segments().last().copied().unwrap_or("")
    }

    /// True when `self` equals `scope` or lies below it (case-insensitive,
    /// on segment boundaries). Every id lies below the root scope `/`.
    pub fn is_within(&self, scope: &ResourceId) -> bool {
        if scope.text == "/" {
            return true;
        }
        let me = self.key();
        let sc = scope.key();
        me == sc || (me.starts_with(&sc) && me.as_bytes().get(sc.len()) == Some(&b'/'))
    }

    /// Looks up the value after a segment name, e.g. `virtualMachines`.
    pub fn segment_value(&self, name: &str) -> Option<&str> {
        self.value_after(name)
    }
}

impl PartialEq for ResourceId {
    fn eq(&self, other: &Self) -> bool {
        self.text.eq_ignore_ascii_case(&other.text)
    }
}

impl std::hash::Hash for ResourceId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state)
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl TryFrom<String> for ResourceId {
    type Error = ResourceIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<ResourceId> for String {
    fn from(r: ResourceId) -> Self {
        r.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VM: &str =
        "/subscriptions/s1/resourceGroups/RG1/providers/Microsoft.Compute/virtualMachines/vm1";

    #[test]
    fn parses_parts_case_insensitively() {
        let id = ResourceId::parse(&VM.replace("resourceGroups", "resourcegroups")).unwrap();
        assert_eq!(id.subscription(), Some("s1"));
        assert_eq!(id.resource_group(), Some("RG1"));
        assert_eq!(id.resource_type(), "Microsoft.Compute/virtualMachines");
        assert_eq!(id.name(), "vm1");
        assert_eq!(
            id,
            ResourceId::parse(
                &VM.to_uppercase()
                    .replace("SUBSCRIPTIONS/S1", "subscriptions/s1")
            )
            .unwrap()
        );
    }

    #[test]
    fn scopes_nest_on_segment_boundaries() {
        let vm = ResourceId::parse(VM).unwrap();
        let rg = ResourceId::parse("/subscriptions/s1/resourcegroups/rg1").unwrap();
        let rg10 = ResourceId::parse("/subscriptions/s1/resourcegroups/rg").unwrap();
        assert!(vm.is_within(&rg));
        assert!(!vm.is_within(&rg10));
        assert!(vm.is_within(&ResourceId::parse("/").unwrap()));
        assert!(rg.is_within(&rg));
    }

    #[test]
    fn types_of_scopes() {
        assert_eq!(
            ResourceId::parse("/subscriptions/s1")
                .unwrap()
                .resource_type(),
            "Microsoft.Resources/subscriptions"
        );
        assert_eq!(
            ResourceId::parse("/subscriptions/s1/resourceGroups/x/")
                .unwrap()
                .resource_type(),
            "Microsoft.Resources/resourceGroups"
        );
        let nested = ResourceId::parse("/subscriptions/s/resourceGroups/r/providers/Microsoft.Network/virtualNetworks/v/subnets/s1").unwrap();
        assert_eq!(
            nested.resource_type(),
            "Microsoft.Network/virtualNetworks/subnets"
        );
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "subscriptions/x",
            "/foo/bar",
            "/subscriptions",
            "/subscriptions//x",
        ] {
            assert!(ResourceId::parse(bad).is_err(), "{bad}");
        }
    }
}
