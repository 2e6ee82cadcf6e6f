//! The one backoff of every retry loop (client calls and logins, log appends,
//! the sync outbox): exponential with jitter, from `backon`.

use backon::BackoffBuilder;
use std::time::Duration;

/// Pauses between attempts: about `first` at first, doubling up to about `max`,
/// each drawn from `[d/2, d)` (jitter, so clients that failed together do not
/// retry together). Unbounded: the caller's own deadline ends the loop.
pub fn delays(first: Duration, max: Duration) -> impl Iterator<Item = Duration> {
    // backon's jitter adds up to one delay again: [d, 2d) with d = first/2.
    backon::ExponentialBuilder::default()
        .with_min_delay(first / 2)
        .with_max_delay(max / 2)
        .with_max_times(usize::MAX)
        .with_jitter()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_with_jitter_and_stay_bounded() {
        let first = Duration::from_millis(40);
        let max = Duration::from_millis(400);
        let d: Vec<Duration> = delays(first, max).take(20).collect();
        assert_eq!(d.len(), 20, "unbounded");
        assert!(d[0] >= first / 2 && d[0] < first, "{:?}", d[0]);
        assert!(d[1] >= first && d[1] < first * 2, "{:?}", d[1]);
        for x in &d {
            assert!(*x < max, "{x:?}");
        }
        assert!(d[19] >= max / 2);
    }
}
