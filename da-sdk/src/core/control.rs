//! The DA's task (`Core`) on the control plane and ODF data: signals from the server
//! (CONNECT/DISCONNECT on `<id>/ctrl/o`) applied to the features and answered, our own
//! uplink watched for a late will, subscriptions acknowledged by the broker, and ODF
//! samples handed to their consumers. Not here: what a signal does to the features
//! (`features`, which does no I/O), request/response (`requests`).

use bytes::Bytes;
use iot_proto::wire::{Presence, Signal, Uplink};
use iot_proto::QoS;
use serde_json::json;

use super::{loose_str, Core};
use crate::features::Effect;
use crate::transport::{Out, Tag};

impl Core {
    pub(super) fn on_signal(&mut self, payload: &[u8]) {
        // The token of an ODF subscription the answer must wait for.
        let mut wait_for = None;
        let (msg_id, result) = match Signal::from_json(payload) {
            Ok(sig) => {
                let r = self.features.apply(&sig, self.hook.as_ref());
                if let Ok(effects) = &r {
                    self.features_changed = true;
                    for fx in effects {
                        match fx {
                            Effect::Subscribe(t) => {
                                let token = self.next_token;
                                self.next_token += 1;
                                wait_for = Some((token, sig.feature.to_string()));
                                self.enqueue(Out::Subscribe(
                                    vec![(t.clone(), self.opts.odf_qos)],
                                    Some(token),
                                ));
                            }
                            Effect::Unsubscribe(t) => self.enqueue(Out::Unsubscribe(t.clone())),
                        }
                    }
                    tracing::info!(command = ?sig.command, direction = sig.direction.as_str(), feature = %sig.feature, "signal applied");
                    if self.resume_deadline.is_some() && self.features.resumed() {
                        self.resume_deadline = None;
                    }
                }
                (sig.msg_id.to_string(), r.map(|_| ()))
            }
            Err(e) => {
                // Answer anything that names a msg_id (e.g. an unknown command); ignore the rest.
                match loose_str(payload, "msg_id") {
                    Some(m) => (m, Err(format!("cannot handle this signal: {e}"))),
                    None => {
                        tracing::warn!(error = %e, "ignored a malformed signal");
                        return;
                    }
                }
            }
        };
        let body = match result {
            Ok(()) => json!({"msg_id": msg_id, "state": "ok"}),
            Err(reason) => {
                tracing::warn!(%reason, "refused a signal");
                self.status.signals_refused += 1;
                json!({"msg_id": msg_id, "state": "error", "reason": reason})
            }
        };
        match wait_for {
            // An ODF is answered once the broker has its subscription, so data routed to it
            // after the server sees the answer is not lost.
            Some((token, odf)) => {
                self.odf_pending.insert(token, (odf, body));
            }
            None => self.publish_json(
                self.ctrl_i.clone(),
                &body,
                QoS::ExactlyOnce,
                false,
                Tag::Other,
            ),
        }
    }

    /// Our own uplink, watched for a late will: when the broker publishes the will of our
    /// previous connection after our new `online`, we announce `online` again. This replaces
    /// the Python SDK's 1 s sleep.
    pub(super) fn on_own_uplink(&mut self, payload: &[u8], retain: bool) {
        if retain || payload.is_empty() || self.stopping.is_some() || self.session.is_none() {
            return;
        }
        if let Ok(Uplink::Presence {
            state: Presence::Offline,
            rev,
        }) = Uplink::from_json(payload)
        {
            if rev == self.reg.rev {
                tracing::info!("a late will marked us offline; announcing online again");
                self.publish_online();
            }
        }
    }

    pub(super) fn deliver(&mut self, odf: &str, payload: Bytes) {
        let Some(subs) = self.odf_subs.get_mut(odf) else {
            tracing::debug!(odf, "ODF data with no consumer");
            return;
        };
        subs.retain(|tx| !tx.is_closed());
        for tx in subs.iter() {
            if tx.try_send(payload.clone()).is_err() {
                self.status.odf_dropped += 1;
                if self.status.odf_dropped.is_power_of_two() {
                    tracing::warn!(
                        odf,
                        dropped = self.status.odf_dropped,
                        "an ODF consumer is too slow; samples dropped"
                    );
                }
            }
        }
    }

    /// The broker acknowledged the subscription `token`.
    pub(super) fn subscribed(&mut self, token: u64) {
        if self.serve_pending == Some(token) {
            self.serve_pending = None;
        }
        if let Some((_, body)) = self.odf_pending.remove(&token) {
            self.features_changed = true;
            self.publish_json(
                self.ctrl_i.clone(),
                &body,
                QoS::ExactlyOnce,
                false,
                Tag::Other,
            );
        }
        for w in self.sub_waiters.remove(&token).unwrap_or_default() {
            let _ = w.send(Ok(()));
        }
    }
}
