//! Keymanager figures for `/metrics`: requests by result (a fixed set of labels), failed
//! unseals, panic-mode seals, whether the store is sealed, and audit records that could not
//! be written.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// The counters.
#[derive(Debug, Default)]
pub struct KeyMetrics {
    /// By result: `ok`, an error code, or `ignored` (not a JSON object).
    requests: Mutex<BTreeMap<&'static str, u64>>,
    unseal_failures: AtomicU64,
    panics: AtomicU64,
    audit_failures: AtomicU64,
    /// `/api/keys` calls refused for coming from another machine or a web page.
    admin_refused: AtomicU64,
    sealed: AtomicBool,
    initialised: AtomicBool,
}

impl KeyMetrics {
    pub fn request(&self, result: &'static str) {
        *self
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(result)
            .or_default() += 1;
    }

    pub fn unseal_failed(&self) {
        self.unseal_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn panicked(&self) {
        self.panics.fetch_add(1, Ordering::Relaxed);
    }

    pub fn admin_refused(&self) {
        self.admin_refused.fetch_add(1, Ordering::Relaxed);
    }

    pub fn audit_failed(&self, n: u64) {
        self.audit_failures.fetch_add(n, Ordering::Relaxed);
    }

    /// The store's state, after every change of it.
    pub fn state(&self, initialised: bool, sealed: bool) {
        self.initialised.store(initialised, Ordering::Relaxed);
        self.sealed.store(sealed, Ordering::Relaxed);
    }

    /// Appends the Prometheus text.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP iotctl_km_requests_total Keymanager requests by result (ok or the error code).\n\
             # TYPE iotctl_km_requests_total counter"
        );
        for (result, n) in self
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(out, "iotctl_km_requests_total{{result=\"{result}\"}} {n}");
        }
        let gauge = |b: &AtomicBool| u8::from(b.load(Ordering::Relaxed));
        let _ = writeln!(
            out,
            "# HELP iotctl_km_unseal_failures_total Unseal attempts refused for a wrong password.\n\
             # TYPE iotctl_km_unseal_failures_total counter\n\
             iotctl_km_unseal_failures_total {}\n\
             # HELP iotctl_km_panics_total Times panic mode sealed the store.\n\
             # TYPE iotctl_km_panics_total counter\n\
             iotctl_km_panics_total {}\n\
             # HELP iotctl_km_audit_failures_total Audit records that could not be written.\n\
             # TYPE iotctl_km_audit_failures_total counter\n\
             iotctl_km_audit_failures_total {}\n\
             # HELP iotctl_km_admin_refused_total Calls of /api/keys refused for coming from another machine or a web page.\n\
             # TYPE iotctl_km_admin_refused_total counter\n\
             iotctl_km_admin_refused_total {}\n\
             # HELP iotctl_km_initialised Whether the key store exists (1) or not (0).\n\
             # TYPE iotctl_km_initialised gauge\n\
             iotctl_km_initialised {}\n\
             # HELP iotctl_km_sealed Whether the key store is sealed (1) or not (0).\n\
             # TYPE iotctl_km_sealed gauge\n\
             iotctl_km_sealed {}",
            self.unseal_failures.load(Ordering::Relaxed),
            self.panics.load(Ordering::Relaxed),
            self.audit_failures.load(Ordering::Relaxed),
            self.admin_refused.load(Ordering::Relaxed),
            gauge(&self.initialised),
            gauge(&self.sealed),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_render_as_prometheus_text() {
        let m = KeyMetrics::default();
        m.request("ok");
        m.request("denied");
        m.request("denied");
        m.unseal_failed();
        m.state(true, true);
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("iotctl_km_requests_total{result=\"denied\"} 2\n"));
        assert!(out.contains("iotctl_km_requests_total{result=\"ok\"} 1\n"));
        assert!(out.contains("iotctl_km_unseal_failures_total 1\n"));
        assert!(out.contains("iotctl_km_sealed 1\n"));
        assert!(out.contains("iotctl_km_panics_total 0\n"));
    }
}
