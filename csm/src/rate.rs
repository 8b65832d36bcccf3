//! The per-source-address rate limit of registrations (`csm.registration_rate`, e.g.
//! `"200/1s"`): the controller's token bucket ([`iot_auth::rate`]) keyed by source (an IPv4
//! address, an IPv6 /64).

use std::net::IpAddr;
use std::time::Instant;

pub use iot_auth::rate::{Rate, RateError};

/// Token buckets by source address.
#[derive(Debug)]
pub struct Limiter(iot_auth::rate::Limiter<IpAddr>);

impl Limiter {
    pub fn new(rate: Rate) -> Self {
        Self(iot_auth::rate::Limiter::new(rate))
    }

    /// Takes a token for `ip` at `now`; when there is none, the whole seconds to wait
    /// (at least 1) for the `Retry-After` header.
    pub fn take(&self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        self.0
            .take(source(ip), now)
            .map_err(|wait| (wait.as_secs_f64().ceil() as u64).max(1))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
