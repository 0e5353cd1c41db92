//! The name → IPv4 map the server answers from: exact names and one-label
//! wildcards (`*.vault.azure.net`), parsed from `name=ip,name=ip,…`.

use std::net::Ipv4Addr;

use crate::DnsError;

/// A configured name: matched case-insensitively, label by label.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// Exactly this name.
    Exact(Vec<Vec<u8>>),
    /// One label of any value followed by these labels: a vault name is one
    /// label, so `a.b.vault.azure.net` is no vault and gets NXDOMAIN.
    Wildcard(Vec<Vec<u8>>),
}

/// What the server knows: every other name does not exist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Records {
    entries: Vec<(Pattern, Ipv4Addr)>,
}

impl Records {
    /// Parses `pattern=ipv4` entries separated by commas (whitespace around
    /// entries ignored; a pattern is a host name, or `*.` and a host name).
    pub fn parse(spec: &str) -> Result<Self, DnsError> {
        let mut records = Self::default();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, ip) = entry
                .split_once('=')
                .ok_or_else(|| DnsError::Records(format!("{entry:?} is not name=ipv4")))?;
            let ip: Ipv4Addr = ip
                .trim()
                .parse()
                .map_err(|e| DnsError::Records(format!("{entry:?}: {e}")))?;
            records.insert(name.trim(), ip)?;
        }
        Ok(records)
    }

    /// Adds `pattern` → `ip`; the same pattern twice is an error (which one
    /// was meant?).
    pub fn insert(&mut self, pattern: &str, ip: Ipv4Addr) -> Result<(), DnsError> {
        let bad = |why: &str| DnsError::Records(format!("{pattern:?}: {why}"));
        let lower = pattern.trim_end_matches('.').to_ascii_lowercase();
        let (wildcard, rest) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let labels: Vec<Vec<u8>> = rest.split('.').map(|l| l.as_bytes().to_vec()).collect();
        for label in &labels {
            if label.is_empty() || label.len() > 63 {
                return Err(bad("labels are 1 to 63 characters"));
            }
            if !label
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
            {
                return Err(bad(
                    "a name is letters, digits, dashes and dots (`*.` only in front)",
                ));
            }
        }
        if rest.len() > 253 {
            return Err(bad("longer than 253 characters"));
        }
        let p = if wildcard {
            Pattern::Wildcard(labels)
        } else {
            Pattern::Exact(labels)
        };
        if self.entries.iter().any(|(q, _)| *q == p) {
            return Err(bad("given twice"));
        }
        self.entries.push((p, ip));
        Ok(())
    }

    /// True when nothing is configured.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The address of a name given as its labels (as they arrive on the wire,
    /// any case): an exact entry wins over a wildcard.
    pub fn lookup<'a>(&self, labels: impl IntoIterator<Item = &'a [u8]>) -> Option<Ipv4Addr> {
        let name: Vec<Vec<u8>> = labels.into_iter().map(|l| l.to_ascii_lowercase()).collect();
        let exact = self.entries.iter().find_map(|(p, ip)| match p {
            Pattern::Exact(l) if *l == name => Some(*ip),
            _ => None,
        });
        exact.or_else(|| {
            self.entries.iter().find_map(|(p, ip)| match p {
                Pattern::Wildcard(l) if name.len() == l.len() + 1 && name[1..] == l[..] => {
                    Some(*ip)
                }
                _ => None,
            })
        })
    }
}

impl std::fmt::Display for Records {
    /// The map as [`Records::parse`] reads it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (p, ip)) in self.entries.iter().enumerate() {
            let (star, labels) = match p {
                Pattern::Exact(l) => ("", l),
                Pattern::Wildcard(l) => ("*.", l),
            };
            let name: Vec<_> = labels.iter().map(|l| String::from_utf8_lossy(l)).collect();
            let sep = if i == 0 { "" } else { "," };
            write!(f, "{sep}{star}{}={ip}", name.join("."))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(r: &Records, name: &str) -> Option<Ipv4Addr> {
        r.lookup(name.split('.').map(str::as_bytes))
    }

    #[test]
    fn exact_names_and_one_label_wildcards_any_case() {
        let r = Records::parse(
            " management.azure.com=169.254.169.2, *.vault.azure.net=169.254.169.4,\
             special.vault.azure.net=10.0.0.9 ,",
        )
        .unwrap();
        let arm = Some(Ipv4Addr::new(169, 254, 169, 2));
        let kv = Some(Ipv4Addr::new(169, 254, 169, 4));
        assert_eq!(find(&r, "management.azure.com"), arm);
        assert_eq!(find(&r, "MANAGEMENT.Azure.COM"), arm);
        assert_eq!(find(&r, "kv1.vault.azure.net"), kv);
        assert_eq!(find(&r, "Any-New-Vault.VAULT.azure.net"), kv);
        assert_eq!(
            find(&r, "special.vault.azure.net"),
            Some(Ipv4Addr::new(10, 0, 0, 9))
        );
        for other in [
            "vault.azure.net",
            "a.b.vault.azure.net",
            "azure.com",
            "example.com",
            "x.management.azure.com",
        ] {
            assert_eq!(find(&r, other), None, "{other}");
        }
    }

    #[test]
    fn bad_specs_are_refused_with_the_entry() {
        for bad in [
            "management.azure.com",
            "management.azure.com=1.2.3",
            "management.azure.com=::1",
            "a..b=1.2.3.4",
            "*=1.2.3.4",
            "a.*.b=1.2.3.4",
            "under_score.com=1.2.3.4",
            "a.com=1.2.3.4,A.com=1.2.3.5",
        ] {
            assert!(Records::parse(bad).is_err(), "{bad}");
        }
        assert!(Records::parse("").unwrap().is_empty());
        let spec = "management.azure.com=1.2.3.4,*.vault.azure.net=1.2.3.5";
        assert_eq!(Records::parse(spec).unwrap().to_string(), spec);
    }
}
