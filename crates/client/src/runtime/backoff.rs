//! Exponential backoff for reconnecting watches and retrying lists.

use std::time::Duration;

/// Doubles from `initial` up to `max`, with up to 20 % random extra so
/// many clients cut off by one apiserver restart do not come back in
/// lockstep. `reset` after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
    jitter: bool,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            next: initial,
            jitter: true,
        }
    }

    /// Exact delays, for tests that assert them.
    pub fn without_jitter(mut self) -> Self {
        self.jitter = false;
        self
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = base.saturating_mul(2).min(self.max);
        if self.jitter && !base.is_zero() {
            let extra = base.mul_f64(rand::random::<f64>() * 0.2);
            (base + extra).min(self.max)
        } else {
            base
        }
    }

    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

impl Default for Backoff {
    /// client-go's reflector backoff: 800 ms doubling to 30 s.
    fn default() -> Self {
        Backoff::new(Duration::from_millis(800), Duration::from_secs(30))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350)).without_jitter();
        let got: Vec<u128> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, [100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn jitter_stays_within_a_fifth_and_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let d = b.next_delay();
        assert!(
            d >= Duration::from_millis(100) && d <= Duration::from_millis(120),
            "{d:?}"
        );
        for _ in 0..10 {
            assert!(b.next_delay() <= Duration::from_millis(1000));
        }
    }
}
