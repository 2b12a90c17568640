//! Latency samples and the numbers the tables show.

use std::time::Duration;

/// Latencies of one phase, sorted on demand.
#[derive(Debug, Default, Clone)]
pub struct Samples(Vec<Duration>);

impl Samples {
    pub fn extend(&mut self, more: impl IntoIterator<Item = Duration>) {
        self.0.extend(more);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The `q` quantile (0..=1) by nearest rank, in milliseconds; NaN
    /// without samples.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let mut v = self.0.clone();
        v.sort_unstable();
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1].as_secs_f64() * 1e3
    }
}

/// One timed phase: how many operations in how long, and their latencies.
#[derive(Debug, Default, Clone)]
pub struct Phase {
    /// The sequence numbers of the operations done.
    pub done: Vec<u64>,
    pub ops: u64,
    pub elapsed: Duration,
    pub latencies: Samples,
}

impl Phase {
    pub fn per_second(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
}
