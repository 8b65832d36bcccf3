//! The controller's configuration: one typed struct with defaults, read from a TOML file and
//! overridden from the environment (`IOTCTL__SECTION__KEY`), validated before anything starts.
//! `default_config.toml` is both what `iotctl genconf` writes and the documentation of
//! every key; a test checks that it parses to the defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use iot_broker::{EmbeddedConfig, MqttUrl, TlsFiles};
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
    pub ccm: iot_ccm::CcmConfig,
    pub home: iot_ccm::home::HomeConfig,
    pub keymanager: iot_ccm::keys::KeysConfig,
    pub auth: AuthConfig,
    pub tls: TlsConfig,
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

/// `[broker]`: the embedded broker's settings (defined, defaulted and validated by
/// `iot-broker`, flattened into this section) and the controller's own keys about which broker
/// DAs use and what they are told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// `listen`, `ws_listen`, `max_payload_bytes`, `max_inflight`, `max_sessions`,
    /// `max_mqueue_len`, `allow_anonymous`, `host_send_timeout_ms`, `max_topic_levels`,
    /// `handshake_timeout_ms`, `session_expiry_seconds`, `sys_interval_seconds`,
    /// `max_topic_aliases`, `tls_listen`, `wss_listen`.
    #[serde(flatten)]
    pub embedded: EmbeddedConfig,
    pub external: String,
    pub advertise_host: String,
    pub advertise_port: u16,
    pub advertise_ws_port: u16,
    pub scheme: String,
    /// Tell DAs the TLS listeners (`mqtts`, `wss`) instead of the plain ones.
    pub advertise_tls: bool,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            embedded: EmbeddedConfig::default(),
            external: String::new(),
            advertise_host: String::new(),
            advertise_port: 0,
            advertise_ws_port: 0,
            scheme: "mqtt".into(),
            advertise_tls: false,
        }
    }
}

/// The embedded broker's keys of `[broker]` alone (other keys and sections are ignored), to
/// name the key of a bad value; see [`Config::parse`].
#[derive(Deserialize)]
struct EmbeddedSection {
    #[serde(default)]
    #[expect(dead_code, reason = "read only for its errors")]
    broker: EmbeddedConfig,
}

/// `[auth]`: users and roles (docs/security.md).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// MQTT clients must authenticate (users, or DAs with their registration credentials);
    /// operator endpoints need an admin.
    pub enabled: bool,
    /// Start even though authentication is off and a listener is reachable from other
    /// machines (logged as a warning at every start).
    pub insecure_allow_public: bool,
}

/// `[tls]`: PEM files; "" = none. `~` is the home directory.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The server certificate, then any intermediate CA certificates.
    pub cert_file: String,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
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
    /// Lines kept for `/logz` (0: none).
    pub logz_lines: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            logz_lines: 200,
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
        let doc = toml::Value::Table(doc);
        // `[broker]` flattens `EmbeddedConfig`, and through serde's flatten a bad value is
        // reported only "in `broker`". Read on its own first, it is "in `broker.max_inflight`".
        doc.clone().try_into::<EmbeddedSection>()?;
        Ok(doc.try_into()?)
    }

    /// Checks values that parse but cannot work. The embedded broker's keys are checked by
    /// `iot-broker` (whether or not this process runs it: `start csm` connects to
    /// `broker.listen`).
    pub fn validate(&self) -> Result<()> {
        self.broker.embedded.validate()?;
        let csm_listen = &self.csm.listen;
        csm_listen.parse::<SocketAddr>().with_context(|| {
            format!("`csm.listen` = \"{csm_listen}\" is not an address such as 127.0.0.1:1883")
        })?;
        if !self.broker.external.is_empty() {
            MqttUrl::parse(&self.broker.external).map_err(|e| anyhow!("`broker.external`: {e}"))?;
        }
        if !matches!(self.broker.scheme.as_str(), "mqtt" | "mqtts") {
            bail!(
                "`broker.scheme` must be \"mqtt\" or \"mqtts\", not \"{}\"",
                self.broker.scheme
            );
        }
        if !self.csm.path_prefix.is_empty() && !self.csm.path_prefix.starts_with('/') {
            bail!("`csm.path_prefix` must start with / (e.g. \"/csm\")");
        }
        let rate = self.csm.registration_rate.trim();
        if !rate.is_empty() {
            rate.parse::<iot_csm::rate::Rate>()
                .map_err(|e| anyhow!("`csm.registration_rate`: {e}"))?;
        }
        if self.auth.enabled && !self.broker.external.is_empty() {
            bail!("`auth.enabled` needs the embedded broker, which enforces it; with `broker.external`, configure that broker's authentication and ACL instead (`iotctl acl export --format mosquitto`)");
        }
        self.home.check().map_err(|e| anyhow!(e))?;
        self.keymanager.check().map_err(|e| anyhow!(e))?;
        if self.log.logz_lines > iot_auth::logz::MAX_LINES {
            bail!("`log.logz_lines` is at most {}", iot_auth::logz::MAX_LINES);
        }
        self.validate_tls()?;
        if self.auth.enabled && !self.csm.da_credentials {
            bail!("`auth.enabled` needs `csm.da_credentials = true`: DAs authenticate with the credentials of their registration reply");
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

/// `[tls]` and the keys that use it.
impl Config {
    /// The files of `[tls]`, `~` expanded; `None` when neither is set.
    pub fn tls_files(&self) -> Option<TlsFiles> {
        let t = &self.tls;
        (!t.cert_file.is_empty() || !t.key_file.is_empty()).then(|| {
            TlsFiles::new(
                iot_migrations::expand_home(&t.cert_file),
                iot_migrations::expand_home(&t.key_file),
            )
        })
    }

    /// The keys that ask for a TLS listener, set in `cfg`.
    fn tls_listeners(&self) -> Vec<&'static str> {
        let b = &self.broker.embedded;
        let mut keys = Vec::new();
        if !b.tls_listen.trim().is_empty() {
            keys.push("broker.tls_listen");
        }
        if !b.wss_listen.trim().is_empty() {
            keys.push("broker.wss_listen");
        }
        if self.csm.tls {
            keys.push("csm.tls");
        }
        keys
    }

    /// Checks `[tls]` and the keys that use it: a TLS listener without both files, one file
    /// without the other, files that cannot be used, `broker.advertise_tls` without a TLS
    /// listener to advertise.
    fn validate_tls(&self) -> Result<()> {
        let t = &self.tls;
        match (t.cert_file.is_empty(), t.key_file.is_empty()) {
            (false, true) => bail!("`tls.cert_file` is set but `tls.key_file` is not: set both"),
            (true, false) => bail!("`tls.key_file` is set but `tls.cert_file` is not: set both"),
            _ => {}
        }
        let users = self.tls_listeners();
        match self.tls_files() {
            None => {
                if let Some(key) = users.first() {
                    bail!("`{key}` needs a certificate: set `tls.cert_file` and `tls.key_file` (PEM files; `iotctl gencert DIR` makes a pair to try it out)");
                }
            }
            Some(f) => f.check()?,
        }
        if self.broker.advertise_tls && self.broker.embedded.tls_listen.trim().is_empty() {
            bail!("`broker.advertise_tls` tells DAs the embedded broker's TLS listener, and `broker.tls_listen` is not set (behind a TLS proxy or with a TLS external broker, set `broker.scheme = \"mqtts\"` and `broker.advertise_port` instead)");
        }
        Ok(())
    }
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
        // `broker.external` is parsed by `iot_broker::MqttUrl` (tested there).
        let mut ext = Config::default();
        ext.broker.external = "mqtt://127.0.0.1:1883".into();
        ext.validate().unwrap();
        ext.broker.external = "http://x".into();
        let err = ext.validate().unwrap_err().to_string();
        assert!(
            err.contains("broker.external") && err.contains("http://x"),
            "{err}"
        );
    }

    /// The embedded broker's keys sit in `[broker]` as before (flattened), take env
    /// overrides, and a bad value or an unknown key is reported with its name.
    #[test]
    fn broker_section_flattens_the_embedded_config() {
        let env = vec![
            ("IOTCTL__BROKER__MAX_INFLIGHT".to_owned(), "256".to_owned()),
            ("IOTCTL__BROKER__LISTEN".to_owned(), "0.0.0.0:1".to_owned()),
            (
                "IOTCTL__BROKER__ALLOW_ANONYMOUS".to_owned(),
                "false".to_owned(),
            ),
        ];
        let c = Config::parse("[broker]\nmax_sessions = 7\nexternal = \"\"\n", &env).unwrap();
        let e = &c.broker.embedded;
        assert_eq!(
            (
                e.max_inflight,
                e.listen.as_str(),
                e.allow_anonymous,
                e.max_sessions
            ),
            (256, "0.0.0.0:1", false, 7)
        );
        let err = |toml: &str, env: &[(String, String)]| {
            format!("{:#}", Config::parse(toml, env).unwrap_err())
        };
        let bad = [("IOTCTL__BROKER__MAX_INFLIGHT".to_owned(), "many".to_owned())];
        assert!(
            err("", &bad).contains("broker.max_inflight"),
            "{}",
            err("", &bad)
        );
        let text = err("[broker]\nmax_payload_bytes = -1\n", &[]);
        assert!(text.contains("broker.max_payload_bytes"), "{text}");
        let text = err("[broker]\nmax_inflite = 64\n", &[]);
        assert!(text.contains("max_inflite"), "{text}");
        let small = Config::parse("[broker]\nmax_inflight = 16\n", &[]).unwrap();
        let text = small.validate().unwrap_err().to_string();
        assert!(
            text.contains("broker.max_inflight") && text.contains("64"),
            "{text}"
        );
    }
}

#[cfg(test)]
#[path = "config_proptests.rs"]
mod proptests;
