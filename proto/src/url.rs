//! Broker urls: `mqtt://host:port` parsed in one place into an [`MqttUrl`] (scheme, host,
//! port), with a typed [`UrlError`]. Used for `broker.external` in the controller's config, by
//! the external-broker connection and by `iotctl bench broker --url`. Only plain MQTT over TCP: no TLS, no WebSocket, no
//! credentials in the url (they have their own settings). Also [`percent_encode`], for a
//! value placed in any url's path or query.

use std::fmt;
use std::str::FromStr;

/// The scheme of a broker url; both mean plain MQTT over TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Mqtt,
    Tcp,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Mqtt => "mqtt",
            Scheme::Tcp => "tcp",
        }
    }
}

/// A parsed broker url. `host` is without brackets (`::1`, not `[::1]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MqttUrl {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
}

/// Why a broker url was refused. Each variant carries the url as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("invalid broker url `{url}`: expected mqtt://host:port")]
    NoScheme { url: String },
    #[error("invalid broker url `{url}`: only plain MQTT over TCP (mqtt://host:port) is supported, not {scheme}://")]
    Scheme { url: String, scheme: String },
    #[error("invalid broker url `{url}`: missing or invalid host (mqtt://host:port, no user@, path or query)")]
    Host { url: String },
    #[error("invalid broker url `{url}`: the port must be a number from 0 to 65535")]
    Port { url: String },
}

impl MqttUrl {
    /// The port when the url has none.
    pub const DEFAULT_PORT: u16 = 1883;

    /// Parses `mqtt://host[:port][/]` (`tcp://` too); an IPv6 host goes in brackets.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let owned = || url.to_owned();
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| UrlError::NoScheme { url: owned() })?;
        let scheme = match scheme {
            "mqtt" => Scheme::Mqtt,
            "tcp" => Scheme::Tcp,
            other => {
                return Err(UrlError::Scheme {
                    url: owned(),
                    scheme: other.to_owned(),
                })
            }
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| UrlError::Host { url: owned() })?;
            match after {
                "" => (host, None),
                _ => (
                    host,
                    Some(
                        after
                            .strip_prefix(':')
                            .ok_or_else(|| UrlError::Port { url: owned() })?,
                    ),
                ),
            }
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.is_empty() || host.contains(['/', '@', '?', '#', '[', ']', ' ']) {
            return Err(UrlError::Host { url: owned() });
        }
        let port = match port {
            None => Self::DEFAULT_PORT,
            Some(p) => p.parse().map_err(|_| UrlError::Port { url: owned() })?,
        };
        Ok(Self {
            scheme,
            host: host.to_owned(),
            port,
        })
    }

    /// `host:port`, with an IPv6 host in brackets: what `TcpStream::connect` takes.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for MqttUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, UrlError> {
        Self::parse(s)
    }
}

impl fmt::Display for MqttUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.authority())
    }
}

/// `s` percent-encoded for one path segment or query value: letters, digits and `-._~`
/// kept, every other byte `%XX`.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(url: &str) -> (Scheme, String, u16) {
        let u = MqttUrl::parse(url).unwrap();
        (u.scheme, u.host, u.port)
    }

    #[test]
    fn parses_host_port_and_defaults() {
        assert_eq!(
            ok("mqtt://localhost:1884"),
            (Scheme::Mqtt, "localhost".into(), 1884)
        );
        assert_eq!(ok("tcp://10.0.0.1"), (Scheme::Tcp, "10.0.0.1".into(), 1883));
        assert_eq!(ok("mqtt://h/"), (Scheme::Mqtt, "h".into(), 1883));
        assert_eq!(ok("mqtt://[::1]:1885/"), (Scheme::Mqtt, "::1".into(), 1885));
        assert_eq!(ok("mqtt://[::1]"), (Scheme::Mqtt, "::1".into(), 1883));
        let u = MqttUrl::parse("mqtt://[::1]:7").unwrap();
        assert_eq!(
            (u.authority(), u.to_string()),
            ("[::1]:7".into(), "mqtt://[::1]:7".into())
        );
        assert_eq!(
            "tcp://h:1".parse::<MqttUrl>().unwrap().to_string(),
            "tcp://h:1"
        );
    }

    #[test]
    fn says_what_is_wrong() {
        let err = |u: &str| MqttUrl::parse(u).unwrap_err();
        assert!(matches!(err("localhost:1883"), UrlError::NoScheme { .. }));
        assert!(matches!(err("mqtts://h:1"), UrlError::Scheme { scheme, .. } if scheme == "mqtts"));
        assert!(matches!(err("ws://h:1"), UrlError::Scheme { .. }));
        for bad in [
            "mqtt://",
            "mqtt://:1883",
            "mqtt://u@h:1",
            "mqtt://h/x:1",
            "mqtt://[::1",
        ] {
            assert!(matches!(err(bad), UrlError::Host { .. }), "{bad}");
        }
        for bad in ["mqtt://h:x", "mqtt://h:70000", "mqtt://[::1]x"] {
            assert!(matches!(err(bad), UrlError::Port { .. }), "{bad}");
        }
        assert!(err("mqtts://h:1").to_string().contains("mqtts://h:1"));
    }
}
