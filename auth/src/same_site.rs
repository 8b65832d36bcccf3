//! Web pages on the controller's own machine. With authentication off the controller trusts
//! whoever reaches it, and `iotctl start` keeps its listeners on loopback for that reason; but
//! a page open in a browser on the same machine reaches loopback too: by DNS rebinding (its
//! own domain resolved to 127.0.0.1: same-origin for the browser, but `Host` names that
//! domain) or by a cross-site request (`Origin` names another site). [`from_other_site`]
//! tells such requests; the CCM (all of it) and the CSM's operator endpoints refuse them
//! while authentication is off.

/// Whether a `Host` header names an address (`127.0.0.1:7788`, `[::1]:7788`) or
/// `localhost`, not a domain: a page that rebinds its domain to 127.0.0.1 still sends its
/// domain.
pub fn host_is_address(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or("", |(h, _)| h),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// Whether `origin` (`http://127.0.0.1:7788`) names the host `host` (`127.0.0.1:7788`).
fn same_origin(origin: &str, host: &str) -> bool {
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|authority| authority.eq_ignore_ascii_case(host))
}

/// Whether a request with these `Host` and `Origin` headers (as sent; `None` when absent,
/// or not text) comes from another site's page or a rebound domain: no `Host`, a `Host` that
/// is a domain name, or an `Origin` other than that host.
pub fn from_other_site(host: Option<&str>, origin: Option<&str>) -> bool {
    let Some(host) = host.filter(|h| host_is_address(h)) else {
        return true;
    };
    origin.is_some_and(|o| !same_origin(o, host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_addresses_pass_as_host_and_only_the_same_origin() {
        for ok in [
            "127.0.0.1:7788",
            "127.0.0.1",
            "[::1]:7788",
            "localhost:7788",
            "LOCALHOST:7788",
            "192.0.2.2",
        ] {
            assert!(host_is_address(ok), "{ok}");
        }
        for bad in [
            "evil.example:7788",
            "evil.example",
            "127.0.0.1.nip.io:80",
            "",
            "[::1",
        ] {
            assert!(!host_is_address(bad), "{bad}");
        }
        let h = Some("127.0.0.1:7788");
        assert!(!from_other_site(h, None), "a script");
        assert!(
            !from_other_site(h, Some("http://127.0.0.1:7788")),
            "the GUI"
        );
        assert!(from_other_site(h, Some("http://127.0.0.1:7789")));
        assert!(from_other_site(h, Some("http://evil.example")));
        assert!(from_other_site(h, Some("null")));
        assert!(from_other_site(Some("evil.example:7788"), None));
        assert!(from_other_site(None, None));
    }
}
