//! The public-bind check of `iotctl start`: with authentication off, no listener may be
//! reachable from another machine unless `auth.insecure_allow_public` says so.

use std::net::{SocketAddr, ToSocketAddrs};

use anyhow::{bail, Result};

use crate::config::Config;
use crate::Component;

/// Every listener `component` would bind, as (config key, address).
pub fn listeners(cfg: &Config, component: Component) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let embedded =
        cfg.broker.external.is_empty() && matches!(component, Component::All | Component::Broker);
    if embedded {
        out.push(("broker.listen", cfg.broker.embedded.listen.clone()));
        if !cfg.broker.embedded.ws_listen.is_empty() {
            out.push(("broker.ws_listen", cfg.broker.embedded.ws_listen.clone()));
        }
        let b = &cfg.broker.embedded;
        for (key, addr) in [
            ("broker.tls_listen", &b.tls_listen),
            ("broker.wss_listen", &b.wss_listen),
        ] {
            if !addr.trim().is_empty() {
                out.push((key, addr.clone()));
            }
        }
    }
    if matches!(component, Component::All | Component::Csm) {
        out.push(("csm.listen", cfg.csm.listen.clone()));
    }
    if matches!(component, Component::All | Component::Ccm) {
        out.push(("ccm.listen", cfg.ccm.listen.clone()));
    }
    out
}

/// Whether `addr` ("host:port") is reachable only from this machine. A name that does not
/// resolve counts as public: the check fails closed.
pub fn is_loopback(addr: &str) -> bool {
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return a.ip().is_loopback();
    }
    match addr.to_socket_addrs() {
        Ok(mut all) => {
            let all: Vec<SocketAddr> = all.by_ref().collect();
            !all.is_empty() && all.iter().all(|a| a.ip().is_loopback())
        }
        Err(_) => false,
    }
}

/// Refuses to start with authentication off and a public listener, unless allowed (then
/// warns).
pub fn check(cfg: &Config, component: Component) -> Result<()> {
    if cfg.auth.enabled {
        return Ok(());
    }
    let public: Vec<String> = listeners(cfg, component)
        .into_iter()
        .filter(|(_, addr)| !is_loopback(addr))
        .map(|(key, addr)| format!("`{key}` = \"{addr}\""))
        .collect();
    if public.is_empty() {
        return Ok(());
    }
    let list = public.join(", ");
    if cfg.auth.insecure_allow_public {
        tracing::warn!(listeners = %list, "authentication is off and these listeners are reachable from other machines: anyone who reaches them controls every device (auth.insecure_allow_public = true)");
        return Ok(());
    }
    bail!(
        "refusing to start: authentication is off and {list} can be reached from other machines, \
         where anyone could control every device. Either turn authentication on \
         (`[auth] enabled = true`, then `iotctl user add NAME --role admin`; see docs/security.md), \
         bind to 127.0.0.1, or set `auth.insecure_allow_public = true` if the network is trusted"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_listeners_need_auth_or_an_override() {
        let mut cfg = Config::default();
        check(&cfg, Component::All).unwrap();
        cfg.csm.listen = "0.0.0.0:9992".into();
        let err = check(&cfg, Component::All).unwrap_err().to_string();
        assert!(err.contains("csm.listen") && err.contains("auth"), "{err}");
        // Not bound by `start broker`.
        check(&cfg, Component::Broker).unwrap();
        cfg.broker.embedded.ws_listen = "[::]:1884".into();
        let err = check(&cfg, Component::Broker).unwrap_err().to_string();
        assert!(err.contains("broker.ws_listen"), "{err}");
        cfg.broker.embedded.ws_listen = String::new();
        for key in ["tls_listen", "wss_listen"] {
            let mut c = cfg.clone();
            let addr = "0.0.0.0:8883".to_owned();
            match key {
                "tls_listen" => c.broker.embedded.tls_listen = addr,
                _ => c.broker.embedded.wss_listen = addr,
            }
            let err = check(&c, Component::Broker).unwrap_err().to_string();
            assert!(err.contains(&format!("broker.{key}")), "{err}");
        }
        cfg.auth.insecure_allow_public = true;
        check(&cfg, Component::All).unwrap();
        cfg.auth.insecure_allow_public = false;
        cfg.auth.enabled = true;
        check(&cfg, Component::All).unwrap();
    }

    #[test]
    fn loopback_by_address_or_name() {
        assert!(is_loopback("127.0.0.1:1"));
        assert!(is_loopback("[::1]:1"));
        assert!(is_loopback("localhost:1883"));
        assert!(!is_loopback("0.0.0.0:1"));
        assert!(!is_loopback("192.168.1.2:1"));
        assert!(!is_loopback("no-such-host.invalid:1"));
    }
}
