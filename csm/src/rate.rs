//! The per-source-address rate limit of registrations (`csm.registration_rate`, e.g.
//! `"200/1s"`): a token bucket per source (an IPv4 address, an IPv6 /64) holding up to N
//! tokens, refilled at N per period. A std `Mutex`: held for a map lookup only, never across an `.await`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Buckets kept before full ones are forgotten (a full bucket is the same as no bucket).
const MAX_TRACKED: usize = 65_536;

/// `N/PERIOD`: at most N requests per PERIOD from one address (PERIOD like `1s`, `500ms`,
/// `1m`, `1h`).
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

/// Token buckets by source address.
#[derive(Debug)]
pub struct Limiter {
    rate: Rate,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl Limiter {
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `ip` at `now`; when there is none, the whole seconds to wait
    /// (at least 1) for the `Retry-After` header.
    pub fn take(&self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        let ip = source(ip);
        let cap = f64::from(self.rate.count);
        let per_token = self.rate.per.as_secs_f64() / cap;
        let mut map = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_TRACKED && !map.contains_key(&ip) {
            map.retain(|_, b| refill(b, now, cap, per_token) < cap);
            if map.len() >= MAX_TRACKED {
                // That many sources within one period: start over rather than grow (memory
                // stays bounded; a flood from so many addresses is for a firewall).
                map.clear();
            }
        }
        let b = map.entry(ip).or_insert(Bucket {
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
            let wait = (1.0 - tokens) * per_token;
            Err((wait.ceil() as u64).max(1))
        }
    }
}

/// The source a bucket is kept for: an IPv4 address, or the /64 network of an IPv6 one (one
/// host usually has a whole /64 to pick addresses from).
fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
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
        for bad in ["", "200", "0/1s", "5/0s", "x/1s", "5/1d", "5/s1", "-1/1s"] {
            let e = bad.parse::<Rate>().unwrap_err().to_string();
            assert!(e.contains("COUNT/PERIOD"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_bucket_per_address_refills_over_time() {
        let l = Limiter::new("3/3s".parse().unwrap());
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..3 {
            l.take(a, t0).unwrap();
        }
        assert_eq!(l.take(a, t0), Err(1), "a 4th within the period");
        l.take(b, t0).unwrap();
        assert_eq!(l.take(a, t0 + Duration::from_millis(500)), Err(1));
        l.take(a, t0 + Duration::from_millis(1000)).unwrap();
        assert!(l.take(a, t0 + Duration::from_millis(1000)).is_err());
        // One IPv6 /64 is one source.
        let v6 = Limiter::new("1/1h".parse().unwrap());
        v6.take("2001:db8::1".parse().unwrap(), t0).unwrap();
        assert!(v6.take("2001:db8::2".parse().unwrap(), t0).is_err());
        v6.take("2001:db8:0:1::1".parse().unwrap(), t0).unwrap();
        let slow = Limiter::new("1/1h".parse().unwrap());
        slow.take(a, t0).unwrap();
        assert_eq!(slow.take(a, t0), Err(3600));
    }
}
