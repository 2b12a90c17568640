//! Waiting in tests: poll a condition until it holds or a timeout passes.

use std::future::Future;
use std::time::Duration;

/// How often the condition is looked at again.
const POLL: Duration = Duration::from_millis(25);

/// What one look at an awaited condition found: the awaited value, or a
/// description of what was seen instead (reported if the wait times out).
pub trait Observation {
    type Value;
    fn observe(self) -> Result<Self::Value, String>;
}

/// `true` holds; `false` is "not yet".
impl Observation for bool {
    type Value = ();
    fn observe(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err("the condition was false".into())
        }
    }
}

/// `Some(value)` holds; `None` is "not yet".
impl<T> Observation for Option<T> {
    type Value = T;
    fn observe(self) -> Result<T, String> {
        self.ok_or_else(|| "nothing yet (None)".into())
    }
}

/// `Ok` is looked into; an error is "not yet", and the last one is what a
/// timeout reports: `Err(anyhow!("replicas are {n}"))` says what was seen.
/// Only anyhow's `Result`, so that `?` in a check needs no annotation.
impl<O: Observation> Observation for anyhow::Result<O> {
    type Value = O::Value;
    fn observe(self) -> Result<O::Value, String> {
        match self {
            Ok(o) => o.observe(),
            Err(e) => Err(format!("{e:#}")),
        }
    }
}

/// Polls `check` until what it returns holds (`true`, `Some`, `Ok(..)` of
/// those), and returns the awaited value; fails after `timeout` with an
/// error naming `what` was awaited and what the last look saw. Errors of
/// `check` do not end the wait: a condition may fail before it holds.
///
/// Timing is tokio's, so in a test with paused time the timeout is
/// simulated too.
pub async fn eventually<F, Fut>(
    what: &str,
    timeout: Duration,
    mut check: F,
) -> anyhow::Result<<Fut::Output as Observation>::Value>
where
    F: FnMut() -> Fut,
    Fut: Future,
    Fut::Output: Observation,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match check().await.observe() {
            Ok(value) => return Ok(value),
            Err(last) => last,
        };
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn returns_the_value_once_the_condition_holds() {
        let mut n = 0;
        let got = eventually("n reaches 3", Duration::from_secs(1), || {
            n += 1;
            std::future::ready((n >= 3).then_some(n))
        })
        .await
        .unwrap();
        assert_eq!(got, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_names_what_was_awaited_and_the_last_error() {
        let mut n = 0;
        let err = eventually("the pod is ready", Duration::from_secs(1), || {
            n += 1;
            std::future::ready(Err::<bool, _>(anyhow::anyhow!("phase Pending after {n} looks")))
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("waiting for the pod is ready"), "{err}");
        assert!(err.contains("last seen: phase Pending after"), "{err}");
        assert!(err.contains("timed out after 1s"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_false_condition_times_out() {
        let err = eventually("never", Duration::from_millis(100), || async { false })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("the condition was false"), "{err}");
    }
}
