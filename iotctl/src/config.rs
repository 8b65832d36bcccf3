//! The controller's configuration: one typed struct with defaults, read from a TOML file and
//! overridden from the environment (`IOTCTL__SECTION__KEY`), validated before anything starts.
//! `default_config.toml` is both what `iotctl genconf` writes and the documentation of
//! every key; a test checks that it parses to the defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use iot_broker::EmbeddedConfig;
use iot_csm::{CsmConfig, FunctionsConfig};
use serde::{Deserialize, Serialize};

/// The documented default configuration, written by `iotctl genconf`.
pub const DEFAULT_CONFIG: &str = include_str!("default_config.toml");

/// Prefix of environment overrides: `IOTCTL__CSM__LISTEN=...`.
const ENV_PREFIX: &str = "IOTCTL__";

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub paths: PathsConfig,
    pub broker: BrokerConfig,
    pub csm: CsmConfig,
    pub functions: FunctionsConfig,
    pub ccm: CcmConfig,
    pub database: DatabaseConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PathsConfig {
    pub data_dir: String,
}

impl Default for PathsConfig {
    fn default() -> Self {
        Self {
            data_dir: "~/.iotctl".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    pub listen: String,
    pub ws_listen: String,
    pub external: String,
    pub advertise_host: String,
    pub advertise_port: u16,
    pub advertise_ws_port: u16,
    pub scheme: String,
    pub max_payload_bytes: usize,
    pub max_inflight: u16,
    pub max_sessions: usize,
    pub max_mqueue_len: usize,
    pub allow_anonymous: bool,
    pub host_send_timeout_ms: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        let e = EmbeddedConfig::default();
        Self {
            listen: e.listen,
            ws_listen: e.ws_listen,
            external: String::new(),
            advertise_host: String::new(),
            advertise_port: 0,
            advertise_ws_port: 0,
            scheme: "mqtt".into(),
            max_payload_bytes: e.max_payload_bytes,
            max_inflight: e.max_inflight,
            max_sessions: e.max_sessions,
            max_mqueue_len: e.max_mqueue_len,
            allow_anonymous: e.allow_anonymous,
            host_send_timeout_ms: e.host_send_timeout_ms,
        }
    }
}

impl BrokerConfig {
    pub fn embedded(&self) -> EmbeddedConfig {
        EmbeddedConfig {
            listen: self.listen.clone(),
            ws_listen: self.ws_listen.clone(),
            max_payload_bytes: self.max_payload_bytes,
            max_inflight: self.max_inflight,
            max_sessions: self.max_sessions,
            max_mqueue_len: self.max_mqueue_len,
            allow_anonymous: self.allow_anonymous,
            host_send_timeout_ms: self.host_send_timeout_ms,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CcmConfig {
    pub listen: String,
}

impl Default for CcmConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7788".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: String,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://~/.iotctl/iotctl.db".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
        }
    }
}

impl Config {
    /// Reads `path` (or the defaults when `None`), then applies environment overrides.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p)
                .with_context(|| format!("cannot read config {}", p.display()))?,
            None => String::new(),
        };
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        let cfg = Self::parse(&text, &env).with_context(|| match path {
            Some(p) => format!("invalid config {}", p.display()),
            None => "invalid configuration".into(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses TOML text with `IOTCTL__SECTION__KEY` overrides applied on top.
    pub fn parse(text: &str, env: &[(String, String)]) -> Result<Self> {
        let mut doc: toml::Table = toml::from_str(text)?;
        for (k, v) in env {
            let Some(path) = k.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let Some((section, key)) = path.split_once("__") else {
                bail!("environment variable {k}: expected {ENV_PREFIX}SECTION__KEY");
            };
            let section = doc
                .entry(section.to_ascii_lowercase())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let toml::Value::Table(t) = section else {
                bail!("environment variable {k}: not a section")
            };
            // A value that parses as TOML (number, bool) keeps its type; anything else is a string.
            let value = toml::from_str::<toml::Table>(&format!("v = {v}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(v.clone()));
            t.insert(key.to_ascii_lowercase(), value);
        }
        Ok(toml::Value::Table(doc).try_into()?)
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<()> {
        let addr = |key: &str, v: &str| -> Result<SocketAddr> {
            v.parse().with_context(|| {
                format!("`{key}` = \"{v}\" is not an address such as 127.0.0.1:1883")
            })
        };
        addr("broker.listen", &self.broker.listen)?;
        if !self.broker.ws_listen.is_empty() {
            addr("broker.ws_listen", &self.broker.ws_listen)?;
        }
        addr("csm.listen", &self.csm.listen)?;
        if !self.broker.external.is_empty() {
            external_host_port(&self.broker.external)?;
        }
        if !matches!(self.broker.scheme.as_str(), "mqtt" | "mqtts") {
            bail!(
                "`broker.scheme` must be \"mqtt\" or \"mqtts\", not \"{}\"",
                self.broker.scheme
            );
        }
        if self.broker.max_inflight < 64 {
            bail!("`broker.max_inflight` must be at least 64 (paho clients send up to 20 QoS 2 messages at once)");
        }
        if self.broker.max_payload_bytes == 0 || self.broker.max_payload_bytes > 256 * 1024 * 1024 {
            bail!("`broker.max_payload_bytes` must be between 1 and 268435456");
        }
        if !self.csm.path_prefix.is_empty() && !self.csm.path_prefix.starts_with('/') {
            bail!("`csm.path_prefix` must start with / (e.g. \"/csm\")");
        }
        Ok(())
    }

    pub fn data_dir(&self) -> PathBuf {
        iot_migrations::expand_home(&self.paths.data_dir)
    }

    pub fn pidfile(&self) -> PathBuf {
        self.data_dir().join("iotctl.pid")
    }

    pub fn statefile(&self) -> PathBuf {
        self.data_dir().join("iotctl.state.json")
    }
}

/// `(host, port)` of an `mqtt://host:port` URL.
pub fn external_host_port(url: &str) -> Result<(String, u16)> {
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
        .with_context(|| format!("`broker.external` = \"{url}\": expected mqtt://host:port"))?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse()
                .with_context(|| format!("`broker.external`: bad port in \"{url}\""))?,
        ),
        None => (rest, 1883),
    };
    if host.is_empty() {
        bail!("`broker.external` = \"{url}\": missing host");
    }
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_default_is_the_default() {
        assert_eq!(
            Config::parse(DEFAULT_CONFIG, &[]).unwrap(),
            Config::default()
        );
        assert_eq!(Config::parse("", &[]).unwrap(), Config::default());
        Config::default().validate().unwrap();
    }

    #[test]
    fn every_key_is_documented() {
        let documented: toml::Table = toml::from_str(DEFAULT_CONFIG).unwrap();
        let all = toml::Table::try_from(Config::default()).unwrap();
        for (section, keys) in &all {
            let keys = keys.as_table().unwrap();
            for key in keys.keys() {
                assert!(
                    documented[section].get(key).is_some(),
                    "{section}.{key} missing from default_config.toml"
                );
            }
        }
    }

    #[test]
    fn env_overrides_and_errors() {
        let env = vec![
            ("IOTCTL__CSM__LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
            (
                "IOTCTL__CSM__OFFLINE_EXPIRY_SECONDS".to_owned(),
                "5".to_owned(),
            ),
        ];
        let c = Config::parse("[csm]\nlisten = \"1.2.3.4:5\"", &env).unwrap();
        assert_eq!(c.csm.listen, "127.0.0.1:0");
        assert_eq!(c.csm.offline_expiry_seconds, 5);
        let err = Config::parse("[csm]\nlistn = \"x\"", &[]).unwrap_err();
        assert!(format!("{err:#}").contains("listn"), "{err:#}");
        let bad = Config::parse("[broker]\nlisten = \"nope\"", &[]).unwrap();
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("broker.listen"));
        assert_eq!(
            external_host_port("mqtt://127.0.0.1:1883").unwrap(),
            ("127.0.0.1".into(), 1883)
        );
        assert!(external_host_port("http://x").is_err());
    }
}
