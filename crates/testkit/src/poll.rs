//! Bounded polling for state that converges asynchronously (background reconcilers, queued
//! operations): ask again with a growing pause until the answer is right or the deadline passes.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How long [`eventually`] waits: `MISIM_TEST_PATIENCE_SECS` if set (slow machines), else 60 s.
pub fn patience() -> Duration {
    std::env::var("MISIM_TEST_PATIENCE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(60), Duration::from_secs)
}

/// Runs `check` until it returns `Ok`, and returns that value. `Err` means "not yet" and says
/// why; after [`patience`] the test fails with `what` and the last reason. The pause between
/// attempts grows from 10 ms to 250 ms, and an attempt that hangs past the deadline fails too.
pub async fn eventually<T, E, F, Fut>(what: &str, check: F) -> T
where
    E: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    eventually_within(what, patience(), check).await
}

/// [`eventually`] with an explicit patience.
pub async fn eventually_within<T, E, F, Fut>(what: &str, patience: Duration, mut check: F) -> T
where
    E: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + patience;
    let mut pause = Duration::from_millis(10);
    loop {
        let last = match tokio::time::timeout_at(deadline, check()).await {
            Ok(Ok(value)) => return value,
            Ok(Err(reason)) => reason,
            Err(_) => panic!("{what}: the last attempt was still running at the deadline"),
        };
        if Instant::now() + pause > deadline {
            panic!("{what}: not after {patience:?}; last: {last:?}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn returns_the_first_passing_answer() {
        let tries = AtomicU32::new(0);
        let n = eventually("the third try", || async {
            match tries.fetch_add(1, Ordering::SeqCst) + 1 {
                n if n >= 3 => Ok(n),
                n => Err(n),
            }
        })
        .await;
        assert_eq!(n, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "never: not after 50ms; last: \"still no\"")]
    async fn gives_up_at_the_deadline() {
        let patience = Duration::from_millis(50);
        eventually_within("never", patience, || async { Err::<(), _>("still no") }).await;
    }

    #[tokio::test]
    #[should_panic(expected = "hangs: the last attempt was still running at the deadline")]
    async fn an_attempt_that_hangs_fails_at_the_deadline() {
        let patience = Duration::from_millis(50);
        eventually_within("hangs", patience, std::future::pending::<Result<(), ()>>).await;
    }
}
