//! The device API side of the registry: `attach` answers the list of DAs and subscribes the
//! client to announcements, `detach` stops them; every change of a DA is announced to the
//! attached clients. An `attach` reply larger than `max_reply_bytes` goes out in pages.

use iot_proto::topics;
use iot_proto::wire::device_api::{self, DeviceOp, DeviceRequest};
use iot_proto::wire::DaRecord;
use serde_json::{Map, Value};

pub use iot_proto::wire::device_api::AnnoKind;

use super::{PresenceState, Registry};
use crate::effect::{publish, Effect};

impl Registry {
    /// A request on `iottalk/api/req/<client>/device`.
    pub fn device_request(&mut self, client: &str, payload: &[u8], fx: &mut Vec<Effect>) {
        let res = topics::device_res(client);
        let reply = match DeviceRequest::parse(payload) {
            Ok(DeviceRequest {
                fields,
                op: DeviceOp::Attach,
            }) => {
                let list: Map<String, Value> = self
                    .das
                    .values()
                    .map(|d| {
                        let shown = self.shown(da_json(&d.record, d.presence));
                        (d.record.id.to_string(), shown)
                    })
                    .collect();
                match device_api::attach_replies(&fields, list, self.cfg.max_reply_bytes) {
                    Ok(pages) => {
                        self.device_clients.insert(client.to_owned());
                        fx.extend(pages.iter().map(|p| publish(res.clone(), p, false)));
                        return;
                    }
                    // One DA's record alone is larger than a message may be: refused
                    // (whether the client was attached before is unchanged).
                    Err(reply) => {
                        tracing::warn!(client.id = ?client, "device API attach reply too large: refused");
                        reply
                    }
                }
            }
            Ok(DeviceRequest {
                fields,
                op: DeviceOp::Detach,
            }) => {
                self.device_clients.remove(client);
                device_api::reply_ok(&fields, None)
            }
            Err((fields, e)) => device_api::reply_error(&fields, &e),
        };
        fx.push(publish(res, &reply, false));
    }

    /// Tells every attached client about a change of a DA.
    pub(super) fn announce(&self, kind: AnnoKind, da: Value, now: f64, fx: &mut Vec<Effect>) {
        if self.device_clients.is_empty() {
            return;
        }
        let body = device_api::announcement(kind, now, self.shown(da));
        for client in &self.device_clients {
            fx.push(publish(topics::device_res(client), &body, false));
        }
    }
}

impl Registry {
    /// `da` as device-API clients see it: with authentication on, without its `rev` (which
    /// is enough to deregister the DA; admins read it with `GET /{id}`).
    fn shown(&self, mut da: Value) -> Value {
        if self.cfg.hide_rev {
            if let Value::Object(m) = &mut da {
                m.remove("rev");
            }
        }
        da
    }
}

/// A DA's record with its presence, as the device API shows it.
pub(super) fn da_json(record: &DaRecord, presence: PresenceState) -> Value {
    let mut v = serde_json::to_value(record).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("state".into(), presence.as_str().into());
    }
    v
}
