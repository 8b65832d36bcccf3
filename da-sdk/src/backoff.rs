//! Jittered exponential backoff between reconnect (and registration retry) attempts: the
//! delay doubles from `min` up to `max`, and each wait is drawn uniformly from its upper half
//! so that a fleet restarted at once does not reconnect in lockstep. Pure, no I/O.

use std::time::Duration;

use rand::Rng;

/// Reconnect delays: from `min`, doubling per failed attempt, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            min: Duration::from_millis(250),
            max: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The ceiling of the `failures`-th wait (1-based): `min * 2^(failures-1)`, capped at `max`.
    pub fn ceiling(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(30);
        self.min
            .saturating_mul(1u32 << exp)
            .min(self.max)
            .max(self.min.min(self.max))
    }

    /// The wait before attempt `failures + 1`: uniform in `[ceiling/2, ceiling]`.
    pub fn delay(&self, failures: u32) -> Duration {
        let top = self.ceiling(failures);
        let low = top / 2;
        if top <= low {
            return top;
        }
        let span = (top - low).as_micros().min(u128::from(u64::MAX)) as u64;
        low + Duration::from_micros(rand::rng().random_range(0..=span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let b = Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(b.ceiling(1), Duration::from_millis(100));
        assert_eq!(b.ceiling(2), Duration::from_millis(200));
        assert_eq!(b.ceiling(4), Duration::from_millis(800));
        assert_eq!(b.ceiling(5), Duration::from_secs(1));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(1));
        for failures in 1..12 {
            for _ in 0..50 {
                let d = b.delay(failures);
                let top = b.ceiling(failures);
                assert!(
                    d >= top / 2 && d <= top,
                    "{d:?} outside [{:?}, {top:?}]",
                    top / 2
                );
            }
        }
    }

    #[test]
    fn degenerate_settings_do_not_panic() {
        let zero = Backoff {
            min: Duration::ZERO,
            max: Duration::ZERO,
        };
        assert_eq!(zero.delay(3), Duration::ZERO);
        let inverted = Backoff {
            min: Duration::from_secs(5),
            max: Duration::from_secs(1),
        };
        assert!(inverted.delay(1) <= Duration::from_secs(1));
    }
}
