//! The keymanager (docs/keymanager.md): secrets sealed under a key derived from an unseal
//! password, handed over MQTT to clients bound to a machine, every access audited.
//!
//! - [`crypto`]: the key-encryption key and sealed values (the formulas a client shares are
//!   `iot_proto::km`'s).
//! - [`store`]: the store in memory, sealed at load, unsealed by the password.
//! - [`request`]: a request's checks in order (sealed, MAC, clock, replay, rate, panic mode).
//! - [`handler`]: one request answered without a network.
//! - [`service`]: the MQTT loop, persistence, the audit trail and the admin operations;
//!   [`metrics`]: its figures.

pub mod crypto;
pub mod handler;
pub mod metrics;
pub mod request;
pub mod service;
pub mod store;

use std::time::Duration;

pub use iot_proto::km::valid_name;
use serde::{Deserialize, Serialize};

/// `[keymanager]` section of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeysConfig {
    /// How far a request's `ts` may be from the server's clock, in seconds.
    pub clock_skew_seconds: u64,
    /// Requests per client, `COUNT/PERIOD`.
    pub rate_limit: String,
    /// `denied` answers within `panic_window_seconds` that seal the store (0: never).
    pub panic_after_failures: u32,
    pub panic_window_seconds: u64,
    /// Argon2id memory of a new store (`iotctl key init`), in MiB; at least 64.
    pub kdf_memory_mib: u32,
    /// Argon2id passes of a new store; at least 3.
    pub kdf_passes: u32,
}

impl Default for KeysConfig {
    fn default() -> Self {
        Self {
            clock_skew_seconds: 90,
            rate_limit: "60/60s".into(),
            panic_after_failures: 0,
            panic_window_seconds: 60,
            kdf_memory_mib: 64,
            kdf_passes: 3,
        }
    }
}

impl KeysConfig {
    /// Checks the values a start would otherwise trip on, and gives the checks' limits.
    pub fn check(&self) -> Result<request::Limits, String> {
        if self.clock_skew_seconds == 0 || self.clock_skew_seconds > 3600 {
            return Err("`keymanager.clock_skew_seconds` must be 1 to 3600".into());
        }
        if self.panic_window_seconds == 0 {
            return Err("`keymanager.panic_window_seconds` must be at least 1".into());
        }
        self.kdf_params()?;
        let rate = self
            .rate_limit
            .parse()
            .map_err(|e| format!("`keymanager.rate_limit`: {e}"))?;
        Ok(request::Limits {
            clock_skew: Duration::from_secs(self.clock_skew_seconds),
            rate,
            panic_after: self.panic_after_failures,
            panic_window: Duration::from_secs(self.panic_window_seconds),
        })
    }

    /// The key derivation parameters of a new store.
    pub fn kdf_params(&self) -> Result<crypto::KdfParams, String> {
        if self.kdf_memory_mib < 64 || self.kdf_memory_mib > 4096 || self.kdf_passes < 3 {
            return Err(
                "`keymanager.kdf_memory_mib` must be 64 to 4096 and `kdf_passes` at least 3".into(),
            );
        }
        Ok(crypto::KdfParams {
            m_kib: self.kdf_memory_mib * 1024,
            t: self.kdf_passes,
            p: 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_weak_settings_are_refused() {
        let l = KeysConfig::default().check().unwrap();
        assert_eq!(l.clock_skew, Duration::from_secs(90));
        assert_eq!(l.panic_after, 0);
        let weak = KeysConfig {
            kdf_memory_mib: 16,
            ..KeysConfig::default()
        };
        assert!(weak.check().unwrap_err().contains("kdf_memory_mib"));
        let bad_rate = KeysConfig {
            rate_limit: "lots".into(),
            ..KeysConfig::default()
        };
        assert!(bad_rate.check().unwrap_err().contains("rate_limit"));
    }
}
