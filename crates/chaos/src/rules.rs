//! Fault rules: what a user asked for (`RuleSpec`, validated once when it is
//! added), the rules as stored, and which one fires for a request.
//!
//! Rules live in memory only: they are test scaffolding, a restart starts
//! clean, and no test can inherit another's faults through a data directory.

use std::time::Duration;

use rand::Rng;

use crate::glob::Glob;
use crate::shapes;
use crate::{ChaosError, Service};

/// At most this many rules per service, so a script in a loop cannot grow
/// the matcher's work without bound.
pub const MAX_RULES: usize = 256;
/// The longest injected latency: longer than any client's timeout already.
pub const MAX_LATENCY: Duration = Duration::from_secs(300);
/// The longest `Retry-After` (msal replays a throttled answer at most an hour).
pub const MAX_RETRY_AFTER: u32 = 3600;
/// VM names, client ids and the like are at most this long.
const MAX_FIELD: usize = 512;

/// A rule as the user gave it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleSpec {
    /// The service that answers.
    pub service: String,
    /// IMDS only: the VM (name or resource id).
    pub vm: Option<String>,
    /// A client id or object id the request carries.
    pub identity: Option<String>,
    /// A path glob.
    pub path: Option<String>,
    /// The status; `None` with a latency only delays.
    pub status: Option<u16>,
    /// Entra only: the AADSTS code.
    pub aadsts: Option<u32>,
    /// Retry-After, seconds.
    pub retry_after: Option<u32>,
    /// Delay.
    pub latency: Duration,
    /// Fire this many times.
    pub count: Option<u32>,
    /// Fire for this fraction of matches.
    pub probability: Option<f64>,
}

/// A validated rule with its state.
#[derive(Debug, Clone)]
pub struct Rule {
    /// `<service>-<n>` (`imds-1`).
    pub id: String,
    /// What was asked (normalised: empty strings are `None`).
    pub spec: RuleSpec,
    /// Counted rules: how many more times it fires.
    pub remaining: Option<u32>,
    /// How many requests it answered or delayed.
    pub hits: u64,
    path: Option<Glob>,
}

/// What a request offers to match against.
#[derive(Debug, Default, Clone)]
pub struct Facts {
    /// The request path (no query).
    pub path: String,
    /// The VM's resource id (IMDS).
    pub vm: Option<String>,
    /// Client and object ids the request names or carries.
    pub identities: Vec<String>,
}

/// A rule that fired: what to do with the request.
#[derive(Debug, Clone)]
pub(crate) struct Firing {
    /// The rule.
    pub(crate) rule_id: String,
    /// The answer's status (`None`: only delay).
    pub(crate) status: Option<u16>,
    /// Entra's AADSTS code.
    pub(crate) aadsts: Option<u32>,
    /// Retry-After seconds.
    pub(crate) retry_after: Option<u32>,
    /// Delay first.
    pub(crate) latency: Duration,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

fn bounded(what: &str, v: &Option<String>) -> Result<(), ChaosError> {
    match v {
        Some(v) if v.len() > MAX_FIELD => Err(ChaosError::invalid(format!(
            "{what} is {} bytes; at most {MAX_FIELD} are allowed",
            v.len()
        ))),
        _ => Ok(()),
    }
}

impl RuleSpec {
    /// Checks the rule as its service would, without adding it: what a scenario file
    /// validates before its first write (the message names the problem).
    pub fn check(&self) -> Result<(), ChaosError> {
        let host = Service::parse(&self.service)?;
        self.clone().validate(host).map(|_| ())
    }

    /// Checks the spec for `host` (the service whose store it goes to) and
    /// normalises it. Every refusal names the problem.
    pub(crate) fn validate(mut self, host: Service) -> Result<(Self, Option<Glob>), ChaosError> {
        let service = Service::parse(&self.service)?;
        if service != host {
            return Err(ChaosError::invalid(format!(
                "this is {host}'s fault service; a rule for {service} goes to {service}'s gRPC"
            )));
        }
        self.service = service.to_string();
        self.vm = non_empty(self.vm);
        self.identity = non_empty(self.identity);
        self.path = non_empty(self.path);
        bounded("--vm", &self.vm)?;
        bounded("--identity", &self.identity)?;
        if self.vm.is_some() && service != Service::Imds {
            return Err(ChaosError::invalid("--vm applies to imds rules only"));
        }
        match self.status {
            None if self.latency.is_zero() => {
                return Err(ChaosError::invalid(
                    "a rule needs --status, or --latency to only delay requests",
                ));
            }
            None if self.aadsts.is_some() || self.retry_after.is_some() => {
                return Err(ChaosError::invalid(
                    "--aadsts and --retry-after describe an answer: give --status too",
                ));
            }
            None => {}
            Some(s) => shapes::check_status(service, s)?,
        }
        if let Some(code) = self.aadsts {
            if service != Service::Entra {
                return Err(ChaosError::invalid("--aadsts applies to entra rules only"));
            }
            if code == 0 || code > 9_999_999 {
                return Err(ChaosError::invalid(format!(
                    "--aadsts {code} is not an AADSTS code (1 to 9999999)"
                )));
            }
        }
        if self.retry_after.is_some_and(|r| r > MAX_RETRY_AFTER) {
            return Err(ChaosError::invalid(format!(
                "--retry-after is at most {MAX_RETRY_AFTER} seconds"
            )));
        }
        if self.latency > MAX_LATENCY {
            return Err(ChaosError::invalid(format!(
                "--latency is at most {} seconds",
                MAX_LATENCY.as_secs()
            )));
        }
        match (self.count, self.probability) {
            (Some(_), Some(_)) => {
                return Err(ChaosError::invalid(
                    "give --count or --probability, not both",
                ));
            }
            (Some(0), _) => return Err(ChaosError::invalid("--count must be at least 1")),
            (_, Some(p)) if !(p > 0.0 && p <= 1.0) => {
                return Err(ChaosError::invalid(format!(
                    "--probability {p} is not in (0, 1]"
                )));
            }
            _ => {}
        }
        let glob = self.path.as_deref().map(Glob::new).transpose()?;
        Ok((self, glob))
    }
}

impl Rule {
    fn matches(&self, f: &Facts) -> bool {
        if let Some(g) = &self.path
            && !g.matches(&f.path)
        {
            return false;
        }
        if let Some(want) = &self.spec.vm {
            let Some(vm) = &f.vm else { return false };
            // A name matches the resource id's last segment; a full id matches whole.
            let name = vm.trim_end_matches('/').rsplit('/').next().unwrap_or(vm);
            if !want.eq_ignore_ascii_case(name)
                && !want
                    .trim_end_matches('/')
                    .eq_ignore_ascii_case(vm.trim_end_matches('/'))
            {
                return false;
            }
        }
        if let Some(want) = &self.spec.identity
            && !f.identities.iter().any(|i| i.eq_ignore_ascii_case(want))
        {
            return false;
        }
        true
    }
}

/// One service's rules, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Rules {
    rules: Vec<Rule>,
    next: u64,
}

impl Rules {
    pub(crate) fn add(&mut self, spec: RuleSpec, host: Service) -> Result<Rule, ChaosError> {
        let (spec, path) = spec.validate(host)?;
        if self.rules.len() >= MAX_RULES {
            return Err(ChaosError::invalid(format!(
                "{host} already has {MAX_RULES} fault rules; clear some first"
            )));
        }
        self.next += 1;
        let rule = Rule {
            // The service in the id: `misim fault clear imds-3` knows where to go.
            id: format!("{host}-{}", self.next),
            remaining: spec.count,
            spec,
            hits: 0,
            path,
        };
        self.rules.push(rule.clone());
        Ok(rule)
    }

    pub(crate) fn list(&self) -> Vec<Rule> {
        self.rules.clone()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub(crate) fn needs_identity(&self) -> bool {
        self.rules.iter().any(|r| r.spec.identity.is_some())
    }

    /// Removes one rule or all; how many went.
    pub(crate) fn clear(&mut self, id: Option<&str>) -> Result<usize, ChaosError> {
        match id {
            None => {
                let n = self.rules.len();
                self.rules.clear();
                Ok(n)
            }
            Some(id) => {
                let before = self.rules.len();
                self.rules.retain(|r| r.id != id);
                if self.rules.len() == before {
                    Err(ChaosError::NotFound(format!("no fault rule {id}")))
                } else {
                    Ok(1)
                }
            }
        }
    }

    /// The first matching rule that fires (its probability rolled with
    /// `rng`), counted; a counted rule that is spent is removed.
    pub(crate) fn fire(&mut self, facts: &Facts, rng: &mut impl Rng) -> Option<Firing> {
        let i = self
            .rules
            .iter()
            .position(|r| r.matches(facts) && r.spec.probability.is_none_or(|p| rng.gen_bool(p)))?;
        let rule = &mut self.rules[i];
        rule.hits += 1;
        let firing = Firing {
            rule_id: rule.id.clone(),
            status: rule.spec.status,
            aadsts: rule.spec.aadsts,
            retry_after: rule.spec.retry_after,
            latency: rule.spec.latency,
        };
        if let Some(n) = &mut rule.remaining {
            *n -= 1;
            if *n == 0 {
                self.rules.remove(i);
            }
        }
        Some(firing)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn spec(service: &str, status: u16) -> RuleSpec {
        RuleSpec {
            service: service.into(),
            status: Some(status),
            ..Default::default()
        }
    }

    fn facts(path: &str) -> Facts {
        Facts {
            path: path.into(),
            ..Default::default()
        }
    }

    #[test]
    fn bad_rules_are_refused_with_the_reason_and_change_nothing() {
        let mut r = Rules::default();
        let cases: Vec<(RuleSpec, &str)> = vec![
            (spec("storage", 429), "unknown service"),
            (spec("arm", 429), "goes to arm's gRPC"),
            (spec("imds", 418), "418"),
            (
                RuleSpec {
                    service: "imds".into(),
                    ..Default::default()
                },
                "needs --status",
            ),
            (
                RuleSpec {
                    aadsts: Some(7000215),
                    ..spec("imds", 429)
                },
                "entra rules only",
            ),
            (
                RuleSpec {
                    count: Some(2),
                    probability: Some(0.5),
                    ..spec("imds", 429)
                },
                "not both",
            ),
            (
                RuleSpec {
                    probability: Some(1.5),
                    ..spec("imds", 429)
                },
                "(0, 1]",
            ),
            (
                RuleSpec {
                    probability: Some(f64::NAN),
                    ..spec("imds", 429)
                },
                "(0, 1]",
            ),
            (
                RuleSpec {
                    count: Some(0),
                    ..spec("imds", 429)
                },
                "at least 1",
            ),
            (
                RuleSpec {
                    latency: Duration::from_secs(301),
                    ..spec("imds", 429)
                },
                "--latency",
            ),
            (
                RuleSpec {
                    retry_after: Some(3601),
                    ..spec("imds", 429)
                },
                "--retry-after",
            ),
            (
                RuleSpec {
                    path: Some("*".repeat(300)),
                    ..spec("imds", 429)
                },
                "glob",
            ),
        ];
        for (s, want) in cases {
            let e = r.add(s.clone(), Service::Imds).unwrap_err().to_string();
            assert!(e.contains(want), "{s:?}: {e}");
        }
        let e = r.add(
            RuleSpec {
                vm: Some("vm1".into()),
                ..spec("entra", 400)
            },
            Service::Entra,
        );
        assert!(e.unwrap_err().to_string().contains("imds rules only"));
        assert!(r.is_empty());
    }

    #[test]
    fn counted_rules_fire_then_retire_and_the_oldest_match_wins() {
        let mut r = Rules::default();
        let mut rng = StdRng::seed_from_u64(1);
        let a = r
            .add(
                RuleSpec {
                    count: Some(2),
                    path: Some("/metadata/*".into()),
                    ..spec("imds", 429)
                },
                Service::Imds,
            )
            .unwrap();
        let b = r.add(spec("imds", 500), Service::Imds).unwrap();
        let f = facts("/metadata/identity/oauth2/token");
        assert_eq!(r.fire(&f, &mut rng).unwrap().rule_id, a.id);
        assert_eq!(r.list()[0].remaining, Some(1));
        assert_eq!(r.fire(&f, &mut rng).unwrap().status, Some(429));
        // Spent: the next match is the second rule.
        assert_eq!(r.fire(&f, &mut rng).unwrap().rule_id, b.id);
        assert_eq!(r.list().len(), 1);
        assert_eq!(
            r.clear(Some("f-9")).unwrap_err().to_string(),
            "no fault rule f-9"
        );
        assert_eq!(r.clear(None).unwrap(), 1);
        assert!(r.fire(&f, &mut rng).is_none());
    }

    #[test]
    fn vm_and_identity_filters() {
        let mut r = Rules::default();
        let mut rng = StdRng::seed_from_u64(1);
        r.add(
            RuleSpec {
                vm: Some("VM1".into()),
                identity: Some("abc".into()),
                ..spec("imds", 410)
            },
            Service::Imds,
        )
        .unwrap();
        let vm1 =
            "/subscriptions/s/resourcegroups/rg/providers/microsoft.compute/virtualmachines/vm1";
        let mut f = Facts {
            path: "/x".into(),
            vm: Some(vm1.into()),
            identities: vec!["ABC".into()],
        };
        assert!(r.fire(&f, &mut rng).is_some());
        f.identities = vec!["other".into()];
        assert!(r.fire(&f, &mut rng).is_none());
        f.identities = vec!["abc".into()];
        f.vm = Some(vm1.replace("vm1", "vm2"));
        assert!(r.fire(&f, &mut rng).is_none());
        f.vm = None;
        assert!(r.fire(&f, &mut rng).is_none());
    }

    #[test]
    fn probability_follows_the_injected_rng() {
        let run = |seed| {
            let mut r = Rules::default();
            let mut rng = StdRng::seed_from_u64(seed);
            r.add(
                RuleSpec {
                    probability: Some(0.5),
                    ..spec("imds", 503)
                },
                Service::Imds,
            )
            .unwrap();
            (0..64)
                .map(|_| r.fire(&facts("/"), &mut rng).is_some())
                .collect::<Vec<_>>()
        };
        let a = run(7);
        assert_eq!(a, run(7), "the same seed gives the same firings");
        let fired = a.iter().filter(|x| **x).count();
        assert!((16..=48).contains(&fired), "{fired} of 64 at p=0.5");
    }
}
