//! Home scenes (docs/home.md): anyone allowed publishes a command on
//! `iottalk/home/cmd/<target>` and gets one result tree back.
//!
//! - [`command`]: `on`, `off`, `dim`, `med`, `full`, `dim:N` as a brightness.
//! - [`catalog`]: devices (each with a driver) and scenes, from the TOML import format, checked
//!   whole (no cycle, no item naming nothing).
//! - [`tplink`]: the TP-Link local protocol as bytes; [`drivers`]: every driver's network side.
//! - [`run`]: a target's tree under one deadline, retries, substring lookup.
//! - [`request`]: a message to a plan, a result to the messages that go out (pure).
//! - [`service`]: the MQTT loop, rate limits, the retained catalog; [`metrics`]: its figures.

pub mod catalog;
pub mod command;
pub mod drivers;
pub mod metrics;
pub mod request;
pub mod run;
pub mod service;
pub mod tplink;

use serde::{Deserialize, Serialize};

/// `[home]` section of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HomeConfig {
    /// The whole run's deadline when a request gives none, in ms (at most 60000).
    pub deadline_ms: u64,
    /// Attempts after the first for each device, while the deadline allows.
    pub retries: u32,
    /// Commands per client and target, `COUNT/PERIOD`.
    pub rate_limit: String,
    /// Whether DAs (not only `admin` and `app` users) may run home commands when
    /// authentication is on.
    pub allow_das: bool,
}

impl Default for HomeConfig {
    fn default() -> Self {
        Self {
            deadline_ms: 5000,
            retries: 1,
            rate_limit: "30/60s".into(),
            allow_das: false,
        }
    }
}

impl HomeConfig {
    /// Checks the values a start would otherwise trip on.
    pub fn check(&self) -> Result<iot_auth::rate::Rate, String> {
        if self.deadline_ms == 0 || self.deadline_ms > iot_proto::home::MAX_DEADLINE_MS {
            return Err(format!(
                "`home.deadline_ms` must be 1 to {}",
                iot_proto::home::MAX_DEADLINE_MS
            ));
        }
        if self.retries > 10 {
            return Err("`home.retries` is at most 10".into());
        }
        self.rate_limit
            .parse()
            .map_err(|e| format!("`home.rate_limit`: {e}"))
    }
}
