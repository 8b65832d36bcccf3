//! Web pages on the controller's own machine. With authentication off the API trusts whoever
//! reaches it, and `iotctl start` keeps it on loopback for that reason; but a page open in a
//! browser on the same machine reaches loopback too: by DNS rebinding (its own domain
//! resolved to 127.0.0.1, same-origin for the browser, but `Host` names that domain) or by a
//! cross-site request (`Origin` names another site). [`same_site_only`] refuses both while
//! authentication is off: `Host` must be an address or `localhost`, and an `Origin` must
//! name that same host and port (the GUI's own requests do). With authentication on, a login
//! is needed anyway and the session cookie is `SameSite=Strict`.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

use crate::error::CcmError;
use crate::Ccm;

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

/// With authentication off, refuses requests from another site's page or a rebound domain.
pub async fn same_site_only(
    State(ccm): State<Ccm>,
    req: Request,
    next: Next,
) -> Result<Response, CcmError> {
    if ccm.users().is_some() {
        return Ok(next.run(req).await);
    }
    let headers = req.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| host_is_address(h));
    let Some(host) = host else {
        return Err(CcmError::Forbidden(
            "with authentication off, the configuration manager answers only requests for an address (127.0.0.1:PORT), not for a domain name".into(),
        ));
    };
    if let Some(origin) = headers.get(header::ORIGIN) {
        let ok = origin.to_str().is_ok_and(|o| same_origin(o, host));
        if !ok {
            return Err(CcmError::Forbidden(
                "a request from another site's page is refused".into(),
            ));
        }
    }
    Ok(next.run(req).await)
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
        assert!(same_origin("http://127.0.0.1:7788", "127.0.0.1:7788"));
        assert!(!same_origin("http://127.0.0.1:7789", "127.0.0.1:7788"));
        assert!(!same_origin("http://evil.example", "127.0.0.1:7788"));
        assert!(!same_origin("null", "127.0.0.1:7788"));
    }
}
