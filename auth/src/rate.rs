//! Rate limits written `COUNT/PERIOD` (`"200/1s"`, `"30/60s"`, `"1000/1m"`), enforced by
//! [`Limiter`]: a token bucket per key (a source address, a client and target, ...) holding
//! up to COUNT tokens, refilled at COUNT per PERIOD. One module for every limit of the
//! controller (registration per address, home commands per client and target, ...). A std
//! `Mutex`: held for a map lookup only, never across an `.await`.

use std::collections::HashMap;
use std::hash::Hash;
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Buckets kept before full ones are forgotten (a full bucket is the same as no bucket).
const MAX_TRACKED: usize = 65_536;

/// `N/PERIOD`: at most N per PERIOD (PERIOD like `1s`, `500ms`, `1m`, `1h`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

/// A rate that is not `N/PERIOD`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid rate `{0}`: use COUNT/PERIOD such as \"200/1s\", \"10/500ms\" or \"1000/1m\"")]
pub struct RateError(String);

impl FromStr for Rate {
    type Err = RateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || RateError(s.chars().take(64).collect());
        let (n, period) = s.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        let period = period.trim();
        let split = period.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (num, unit) = period.split_at(split);
        let num: u64 = if num.is_empty() {
            1
        } else {
            num.parse().map_err(|_| bad())?
        };
        let per = match unit {
            "ms" => Duration::from_millis(num),
            "s" => Duration::from_secs(num),
            "m" => Duration::from_secs(num.saturating_mul(60)),
            "h" => Duration::from_secs(num.saturating_mul(3600)),
            _ => return Err(bad()),
        };
        if count == 0 || per.is_zero() {
            return Err(bad());
        }
        Ok(Rate { count, per })
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets by key.
#[derive(Debug)]
pub struct Limiter<K> {
    rate: Rate,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq> Limiter<K> {
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Takes a token for `key` at `now`; when there is none, how long until there is one.
    pub fn take(&self, key: K, now: Instant) -> Result<(), Duration> {
        let cap = f64::from(self.rate.count);
        let per_token = self.rate.per.as_secs_f64() / cap;
        let mut map = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_TRACKED && !map.contains_key(&key) {
            map.retain(|_, b| refill(b, now, cap, per_token) < cap);
            if map.len() >= MAX_TRACKED {
                // That many keys within one period: start over rather than grow (memory stays
                // bounded; a flood from so many sources is for a firewall).
                map.clear();
            }
        }
        let b = map.entry(key).or_insert(Bucket {
            tokens: cap,
            at: now,
        });
        let tokens = refill(b, now, cap, per_token);
        b.tokens = tokens;
        b.at = now;
        if tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - tokens) * per_token))
        }
    }
}

/// The tokens of `b` at `now`.
fn refill(b: &Bucket, now: Instant, cap: f64, per_token: f64) -> f64 {
    let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
    (b.tokens + elapsed / per_token).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_or_say_how_to_write_them() {
        let r: Rate = "200/1s".parse().unwrap();
        assert_eq!((r.count, r.per), (200, Duration::from_secs(1)));
        assert_eq!(
            "10/500ms".parse::<Rate>().unwrap().per,
            Duration::from_millis(500)
        );
        assert_eq!("5/m".parse::<Rate>().unwrap().per, Duration::from_secs(60));
        assert_eq!(
            "30/60s".parse::<Rate>().unwrap().per,
            Duration::from_secs(60)
        );
        for bad in ["", "200", "0/1s", "5/0s", "x/1s", "5/1d", "5/s1", "-1/1s"] {
            let e = bad.parse::<Rate>().unwrap_err().to_string();
            assert!(e.contains("COUNT/PERIOD"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_bucket_per_key_refills_over_time() {
        let l = Limiter::new("3/3s".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..3 {
            l.take(("ops", "lamp"), t0).unwrap();
        }
        let wait = l.take(("ops", "lamp"), t0).unwrap_err();
        assert!((wait.as_secs_f64() - 1.0).abs() < 1e-6, "{wait:?}");
        l.take(("ops", "porch"), t0).unwrap();
        l.take(("app", "lamp"), t0).unwrap();
        let wait = l
            .take(("ops", "lamp"), t0 + Duration::from_millis(500))
            .unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        l.take(("ops", "lamp"), t0 + Duration::from_millis(1000))
            .unwrap();
        assert!(l
            .take(("ops", "lamp"), t0 + Duration::from_millis(1000))
            .is_err());
    }
}
