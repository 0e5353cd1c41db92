//! One evaluation budget per deployment: how deep evaluation may nest
//! (variables, template functions and nested JSON values together), how large
//! one value may grow, and how much work the whole deployment may do.
//!
//! Without it one template could take down every service in the process: a
//! chain of 2,000 variables each naming the previous one overflowed the
//! stack, and `concat(v, v)` repeated 20 times grew to gigabytes. Exceeding
//! any limit is ARM's `InvalidTemplate` (400) before anything is deployed.
//!
//! Atomics rather than `Cell`s only so that an evaluator holding a
//! `&Budget` stays `Send` across the deployment's awaits; one deployment
//! evaluates on one task at a time.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use serde_json::Value;

use super::TemplateError;

/// Deepest nesting of evaluation (each variable resolution, expression node
/// and JSON level counts one; a chain of variables costs three levels per
/// link). Measured in a debug build at up to 3 KB of stack per level, so the
/// deepest evaluation takes about 0.75 MiB of a 2 MiB tokio worker stack
/// (`deepest_allowed_chain_runs_on_a_worker_stack` in the component tests
/// runs it there). Real templates nest a few dozen levels at most.
pub const MAX_DEPTH: usize = 256;

/// Largest single value, in bytes of its JSON form. ARM limits a template
/// to 4 MB "after it has been expanded with ... values for variables and
/// parameters", so no one value of a valid template is larger:
/// https://learn.microsoft.com/azure/azure-resource-manager/templates/best-practices#template-limits
pub const MAX_VALUE_BYTES: usize = 4 * 1024 * 1024;

/// Total work of one deployment: one unit per value evaluated plus the bytes
/// of every value materialised (parsed, produced by a function or copied
/// from a variable or parameter). So memory held by the evaluation is
/// bounded too. `az vm create` templates use well under 1% of it.
pub const MAX_WORK: u64 = 64 * 1024 * 1024;

/// The budget of one deployment, shared by every evaluator it creates.
#[derive(Debug)]
pub struct Budget {
    depth: AtomicUsize,
    work: AtomicU64,
    max_depth: usize,
    max_value_bytes: usize,
    max_work: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Self::with_limits(MAX_DEPTH, MAX_VALUE_BYTES, MAX_WORK)
    }
}

fn exceeded(what: String) -> TemplateError {
    TemplateError::Budget(format!(
        "Deployment template validation failed: 'The template {what}. Please reduce the template's nesting or the size of its values.'"
    ))
}

impl Budget {
    /// A budget with other limits (tests).
    pub fn with_limits(max_depth: usize, max_value_bytes: usize, max_work: u64) -> Self {
        Self {
            depth: AtomicUsize::new(0),
            work: AtomicU64::new(0),
            max_depth,
            max_value_bytes,
            max_work,
        }
    }

    /// One level deeper until the guard drops.
    pub fn enter(&self) -> Result<DepthGuard<'_>, TemplateError> {
        let d = self.depth.fetch_add(1, Ordering::Relaxed) + 1;
        let guard = DepthGuard(self);
        if d > self.max_depth {
            return Err(exceeded(format!(
                "evaluation nests deeper than {} levels (variables, template functions and nested values)",
                self.max_depth
            )));
        }
        Ok(guard)
    }

    /// Spends `units` of work.
    pub fn charge(&self, units: usize) -> Result<(), TemplateError> {
        let units = u64::try_from(units).unwrap_or(u64::MAX);
        let before = self.work.fetch_add(units, Ordering::Relaxed);
        if before.saturating_add(units) > self.max_work {
            return Err(exceeded(format!(
                "evaluation needs more than {} units of work",
                self.max_work
            )));
        }
        Ok(())
    }

    /// Refuses a value (or the arguments of one function call) larger than
    /// one value may be.
    pub fn check_size(&self, bytes: usize) -> Result<(), TemplateError> {
        if bytes > self.max_value_bytes {
            return Err(exceeded(format!(
                "evaluation produces a value larger than {} bytes",
                self.max_value_bytes
            )));
        }
        Ok(())
    }

    /// Work spent so far.
    pub fn spent(&self) -> u64 {
        self.work.load(Ordering::Relaxed)
    }
}

/// Leaves the level [`Budget::enter`] entered.
#[derive(Debug)]
pub struct DepthGuard<'b>(&'b Budget);

impl Drop for DepthGuard<'_> {
    fn drop(&mut self) {
        self.0.depth.fetch_sub(1, Ordering::Relaxed);
    }
}

/// About the size of a value's JSON text, without recursion (values come
/// from stored resources too, whose nesting the template did not choose).
pub fn size_of(v: &Value) -> usize {
    let mut total = 0usize;
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        total = total.saturating_add(match v {
            Value::Null | Value::Bool(_) => 5,
            Value::Number(_) => 8,
            Value::String(s) => s.len() + 2,
            Value::Array(a) => {
                stack.extend(a.iter());
                2 + a.len()
            }
            Value::Object(o) => {
                stack.extend(o.values());
                2 + o.keys().map(|k| k.len() + 4).sum::<usize>()
            }
        });
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn depth_is_released_by_guards_even_on_error() {
        let b = Budget::with_limits(2, 100, 100);
        {
            let _a = b.enter().unwrap();
            let _b = b.enter().unwrap();
            assert!(matches!(b.enter(), Err(TemplateError::Budget(_))));
        }
        let _a = b.enter().unwrap();
        let _b = b.enter().unwrap();
    }

    #[test]
    fn work_and_size_limits() {
        let b = Budget::with_limits(10, 10, 100);
        b.charge(60).unwrap();
        b.charge(40).unwrap();
        let e = b.charge(1).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("Deployment template validation failed: '"),
            "{e}"
        );
        assert!(b.check_size(10).is_ok());
        assert!(b.check_size(11).is_err());
        assert_eq!(size_of(&json!("abc")), 5);
        assert_eq!(size_of(&json!({"k": [1, "x"]})), 2 + 5 + 2 + 2 + 8 + 3);
    }
}
