//! Measuring loops and the report tables.
//!
//! Every number is a rate over a fixed wall-clock window measured with
//! `tokio::time::Instant`; the tables always put a subject next to a baseline
//! measured in the same process, moments before, with the same settings, and
//! the number that matters is their ratio.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// The outcome of one measurement window.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    /// What was measured.
    pub label: String,
    /// Successful operations.
    pub ops: u64,
    /// Failed operations (wrong status, error).
    pub errors: u64,
    /// Wall-clock length of the window.
    pub elapsed: Duration,
    /// Per-operation latencies in microseconds, sorted (HTTP runs only).
    pub latencies_us: Vec<u32>,
}

impl Run {
    /// Successful operations per second.
    pub(crate) fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// A window measured from `warm_end` until now: it closes when the last
    /// request started in it completes.
    fn closed_at(
        label: String,
        ops: u64,
        errors: u64,
        warm_end: Instant,
        mut latencies_us: Vec<u32>,
    ) -> Run {
        latencies_us.sort_unstable();
        Run {
            label,
            ops,
            errors,
            elapsed: Instant::now().saturating_duration_since(warm_end),
            latencies_us,
        }
    }

    /// Adds another window of the same measurement (interleaved rounds).
    pub(crate) fn merge(mut self, other: Run) -> Run {
        self.ops += other.ops;
        self.errors += other.errors;
        self.elapsed += other.elapsed;
        self.latencies_us.extend(other.latencies_us);
        self.latencies_us.sort_unstable();
        self
    }

    /// The `q` quantile (0..=1) of the latencies.
    pub(crate) fn quantile(&self, q: f64) -> Option<Duration> {
        if self.latencies_us.is_empty() {
            return None;
        }
        let i = ((self.latencies_us.len() - 1) as f64 * q).round() as usize;
        Some(Duration::from_micros(u64::from(self.latencies_us[i])))
    }
}

/// Merges `Some(acc)` with `run` (or starts with `run`).
pub(crate) fn accumulate(acc: &mut Option<Run>, run: Run) {
    *acc = Some(match acc.take() {
        Some(a) => a.merge(run),
        None => run,
    });
}

/// Runs `op` in a loop on `threads` OS threads for `window` (after the same
/// loop ran for `warmup`); `make` builds each thread's operation.
/// The operation returns false on failure.
pub(crate) fn on_threads<F, Op>(
    label: impl Into<String>,
    threads: usize,
    warmup: Duration,
    window: Duration,
    make: F,
) -> Run
where
    F: Fn(usize) -> Op + Sync,
    Op: FnMut() -> bool,
{
    let barrier = std::sync::Barrier::new(threads + 1);
    let (ops, errors, elapsed) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let barrier = &barrier;
                let make = &make;
                s.spawn(move || {
                    let mut op = make(i);
                    let warm_end = Instant::now() + warmup;
                    while Instant::now() < warm_end {
                        op();
                    }
                    barrier.wait();
                    let end = Instant::now() + window;
                    let (mut ok, mut bad) = (0u64, 0u64);
                    loop {
                        if op() {
                            ok += 1;
                        } else {
                            bad += 1;
                        }
                        if Instant::now() >= end {
                            break;
                        }
                    }
                    (ok, bad)
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let (mut ok, mut bad) = (0, 0);
        for h in handles {
            let (o, b) = h.join().unwrap_or((0, 1));
            ok += o;
            bad += b;
        }
        (ok, bad, start.elapsed())
    });
    Run {
        label: label.into(),
        ops,
        errors,
        elapsed,
        latencies_us: Vec::new(),
    }
}

/// Runs `concurrency` tasks that each issue requests back to back (one in
/// flight per task) for `window`, after a `warmup` of the same. `request`
/// resolves to true on success. Records every request's latency.
pub(crate) async fn in_flight<F, Fut>(
    label: impl Into<String>,
    concurrency: usize,
    warmup: Duration,
    window: Duration,
    request: F,
) -> Run
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let request = Arc::new(request);
    let warm_end = Instant::now() + warmup;
    let end = warm_end + window;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let request = request.clone();
        tasks.spawn(async move {
            let (mut ok, mut bad, mut lat) = (0u64, 0u64, Vec::<u32>::with_capacity(4096));
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let success = request().await;
                let t1 = Instant::now();
                // Count a request in the window it started in.
                if t0 >= warm_end {
                    if success {
                        ok += 1;
                        let us = (t1 - t0).as_micros().min(u128::from(u32::MAX)) as u32;
                        lat.push(us);
                    } else {
                        bad += 1;
                    }
                }
            }
            (ok, bad, lat)
        });
    }
    let (mut ops, mut errors, mut latencies_us) = (0, 0, Vec::new());
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok((o, b, l)) => {
                ops += o;
                errors += b;
                latencies_us.extend(l);
            }
            Err(_) => errors += 1,
        }
    }
    Run::closed_at(label.into(), ops, errors, warm_end, latencies_us)
}

/// Starts requests at a fixed `rate` (open loop) for `window`, after a
/// `warmup` of the same, with at most `max_in_flight` at once. A request's
/// latency runs from the moment it was due, so time spent waiting for a free
/// slot counts against it (no coordinated omission): a server that cannot keep
/// up shows it in the tail, not as a slower schedule.
pub(crate) async fn paced<F, Fut>(
    label: impl Into<String>,
    rate: f64,
    max_in_flight: usize,
    warmup: Duration,
    window: Duration,
    request: F,
) -> Run
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let request = Arc::new(request);
    let slots = Arc::new(tokio::sync::Semaphore::new(max_in_flight.max(1)));
    let interval = Duration::from_secs_f64(1.0 / rate.max(1e-3));
    let start = Instant::now();
    let warm_end = start + warmup;
    let end = warm_end + window;
    let mut tasks = tokio::task::JoinSet::new();
    let mut due = start;
    while due < end {
        tokio::time::sleep_until(due).await;
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let request = request.clone();
        let measured = due >= warm_end;
        tasks.spawn(async move {
            let success = request().await;
            drop(slot);
            let us = due.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
            (measured, success, us)
        });
        due += interval;
    }
    let (mut ops, mut errors, mut latencies_us) = (0, 0, Vec::new());
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok((false, _, _)) => {}
            Ok((true, true, us)) => {
                ops += 1;
                latencies_us.push(us);
            }
            Ok((true, false, _)) => errors += 1,
            Err(_) => errors += 1,
        }
    }
    Run::closed_at(label.into(), ops, errors, warm_end, latencies_us)
}

pub(crate) fn fmt_latency(d: Option<Duration>) -> String {
    match d {
        None => "-".into(),
        Some(d) if d < Duration::from_millis(10) => format!("{:.0} µs", d.as_secs_f64() * 1e6),
        Some(d) => format!("{:.1} ms", d.as_secs_f64() * 1e3),
    }
}

/// Prints a small table: the baseline, the subject(s), and each subject's
/// ratio to the baseline. Returns the ratios.
pub(crate) fn report(title: &str, baseline: &Run, subjects: &[&Run]) -> Vec<f64> {
    let with_latency = std::iter::once(baseline)
        .chain(subjects.iter().copied())
        .any(|r| !r.latencies_us.is_empty());
    println!();
    println!("## {title}");
    print!(
        "| {:<8} | {:<52} | {:>9} | {:>6} | {:>6} | {:>11} |",
        "", "measurement", "N", "errors", "secs", "rate (/s)"
    );
    if with_latency {
        print!(" {:>9} | {:>9} |", "p50", "p99");
    }
    println!(" {:>15} |", "ratio to base");
    let mut ratios = Vec::new();
    let row = |role: &str, r: &Run, ratio: Option<f64>| {
        print!(
            "| {:<8} | {:<52} | {:>9} | {:>6} | {:>6.2} | {:>11.1} |",
            role,
            r.label,
            r.ops,
            r.errors,
            r.elapsed.as_secs_f64(),
            r.rate()
        );
        if with_latency {
            print!(
                " {:>9} | {:>9} |",
                fmt_latency(r.quantile(0.50)),
                fmt_latency(r.quantile(0.99))
            );
        }
        match ratio {
            Some(x) => println!(" {x:>15.3} |"),
            None => println!(" {:>15} |", "1"),
        }
    };
    row("baseline", baseline, None);
    for s in subjects {
        let ratio = s.rate() / baseline.rate().max(1e-9);
        ratios.push(ratio);
        row("subject", s, Some(ratio));
    }
    ratios
}
