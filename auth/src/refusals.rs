//! [`Refusals`]: how many requests were refused, by reason, for `/metrics`
//! (`iotctl_auth_refused_total{reason="..."}`). Shared by the broker gate and the HTTP server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Why a client was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// MQTT CONNECT without a username while authentication is on.
    MqttAnonymous,
    /// MQTT CONNECT with an unknown username or a wrong password.
    MqttBadCredentials,
    /// MQTT CONNECT with a client id whose session belongs to another username.
    MqttClientIdTaken,
    /// An operator endpoint asked without credentials.
    HttpNoCredentials,
    /// An operator endpoint asked with an unknown user or a wrong password.
    HttpBadCredentials,
    /// An operator endpoint asked by a user who is not an admin.
    HttpNotAdmin,
    /// A re-registration of an online DA without its credentials (409).
    Takeover,
    /// Registration over the per-address rate (429).
    RateLimited,
}

impl Refusal {
    pub const ALL: [Refusal; 8] = [
        Refusal::MqttAnonymous,
        Refusal::MqttBadCredentials,
        Refusal::MqttClientIdTaken,
        Refusal::HttpNoCredentials,
        Refusal::HttpBadCredentials,
        Refusal::HttpNotAdmin,
        Refusal::Takeover,
        Refusal::RateLimited,
    ];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::MqttAnonymous => "mqtt_anonymous",
            Refusal::MqttBadCredentials => "mqtt_bad_credentials",
            Refusal::MqttClientIdTaken => "mqtt_client_id_taken",
            Refusal::HttpNoCredentials => "http_no_credentials",
            Refusal::HttpBadCredentials => "http_bad_credentials",
            Refusal::HttpNotAdmin => "http_not_admin",
            Refusal::Takeover => "takeover",
            Refusal::RateLimited => "rate_limited",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Refusal counters. Cheap to clone: clones share the counts.
#[derive(Debug, Clone, Default)]
pub struct Refusals(Arc<[AtomicU64; Refusal::ALL.len()]>);

impl Refusals {
    pub fn add(&self, why: Refusal) {
        self.0[why.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, why: Refusal) -> u64 {
        self.0[why.index()].load(Ordering::Relaxed)
    }

    /// Every reason with its count, in [`Refusal::ALL`] order.
    pub fn snapshot(&self) -> Vec<(Refusal, u64)> {
        Refusal::ALL.iter().map(|&r| (r, self.get(r))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_reason() {
        let r = Refusals::default();
        r.add(Refusal::Takeover);
        r.clone().add(Refusal::Takeover);
        r.add(Refusal::RateLimited);
        assert_eq!(r.get(Refusal::Takeover), 2);
        assert_eq!(r.get(Refusal::MqttAnonymous), 0);
        let labels: Vec<_> = r.snapshot().iter().map(|(w, _)| w.as_str()).collect();
        assert_eq!(labels.len(), 8);
        for (i, w) in Refusal::ALL.iter().enumerate() {
            assert_eq!(w.index(), i);
        }
    }
}
