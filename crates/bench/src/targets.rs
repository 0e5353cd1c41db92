//! The summary table of issue #11's targets: one row per target with what was
//! measured, the baseline measured in the same run, their ratio and whether
//! the target is met. Printed last, after the detailed tables.

/// One target's outcome.
#[derive(Debug, Clone)]
pub(crate) struct TargetRow {
    /// The target, with its goal ("VM PUT SystemAssigned: ≥ 1000/s, p99 < 20 ms").
    pub target: String,
    /// The subject's numbers.
    pub measured: String,
    /// The baseline's numbers.
    pub baseline: String,
    /// Subject over baseline (rates), or baseline over subject (latencies): above 1 is
    /// faster than the baseline either way.
    pub ratio: f64,
    /// Whether the goal is met.
    pub pass: bool,
}

/// Prints the rows as one table (nothing when there are none).
pub(crate) fn print(rows: &[TargetRow]) {
    if rows.is_empty() {
        return;
    }
    println!();
    println!("## Targets (issue #11)");
    println!(
        "| {:<64} | {:<30} | {:<30} | {:>7} | {:<9} |",
        "target", "measured", "baseline", "ratio", "pass/fail"
    );
    for r in rows {
        println!(
            "| {:<64} | {:<30} | {:<30} | {:>7.3} | {:<9} |",
            r.target,
            r.measured,
            r.baseline,
            r.ratio,
            if r.pass { "pass" } else { "FAIL" }
        );
    }
}
