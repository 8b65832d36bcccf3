//! The ODF-write API side of the registry: a request on `iottalk/api/req/<client>/odf` hands
//! its `data` to one ODF of one DA, published on the ODF's link topic exactly as the engine
//! publishes a routed output ([`engine::odf_output`]), then answered on
//! `iottalk/api/res/<client>/odf`. Only an online DA whose ODF is linked in some graph and
//! subscribed (CONNECT acknowledged, or waited for) is written to: anything else is refused
//! with its reason, since nothing would receive the value. Who may send is the topic ACL's
//! business (admins only), not this file's.

use iot_proto::topics;
use iot_proto::wire::odf_api::{self, OdfApiError, OdfWrite};
use iot_proto::wire::Direction;

use super::{PresenceState, Registry};
use crate::effect::{publish, Effect};
use crate::engine;
use iot_proto::log::Escaped;

impl Registry {
    /// A request on `iottalk/api/req/<client>/odf`: the data (when accepted), then the reply.
    /// Returns whether it was accepted.
    pub fn odf_request(&self, client: &str, payload: &[u8], fx: &mut Vec<Effect>) -> bool {
        let checked = OdfWrite::parse(payload).and_then(|w| match self.odf_write(&w) {
            Ok(data) => Ok((w, data)),
            Err(e) => Err((w.fields, e)),
        });
        let (reply, accepted) = match checked {
            Ok((w, data)) => {
                tracing::debug!(client.id = ?client, da.id = %w.da, link.feature = %w.odf, "ODF write");
                fx.push(data);
                (odf_api::reply_ok(&w.fields), true)
            }
            Err((fields, e)) => {
                tracing::debug!(client.id = ?client, reason = %Escaped(&e), "ODF write refused");
                (odf_api::reply_error(&fields, &e), false)
            }
        };
        fx.push(publish(topics::odf_res(client), &reply, false));
        accepted
    }

    /// The publish that delivers `w`, or why it cannot be delivered.
    fn odf_write(&self, w: &OdfWrite) -> Result<Effect, OdfApiError> {
        let da = self.das.get(&w.da).ok_or(OdfApiError::UnknownDa(w.da))?;
        if da.record.feature(false, &w.odf).is_none() {
            return Err(OdfApiError::NoOdf {
                da: w.da,
                odf: w.odf.clone(),
            });
        }
        if da.presence != PresenceState::Online {
            return Err(OdfApiError::Offline(w.da));
        }
        let link = da
            .links
            .get(&(Direction::Odf, w.odf.clone()))
            .ok_or_else(|| OdfApiError::Unlinked {
                da: w.da,
                odf: w.odf.clone(),
            })?;
        if !link.open {
            return Err(OdfApiError::NotSubscribed {
                da: w.da,
                odf: w.odf.clone(),
            });
        }
        let payload = engine::odf_payload(&w.data);
        let limit = self.cfg.max_reply_bytes;
        if payload.len() > limit {
            return Err(OdfApiError::TooLarge {
                bytes: payload.len(),
                limit,
            });
        }
        Ok(Effect::Publish(engine::odf_output(&link.topic, payload)))
    }
}

#[cfg(test)]
mod tests {
    use iot_proto::QoS;
    use serde_json::{json, Value};

    use super::super::tests::{
        id, odf_connect_id, presence, publishes, registered, reply, uplink1,
    };
    use super::*;

    /// An ODF write of `data` to `odf` of DA `n`: the reply's state and reason, and what was
    /// published on data topics (`iottalk/esm/...`) with its QoS.
    fn odf_write(
        st: &Registry,
        n: u8,
        odf: &str,
        data: Value,
    ) -> (Value, Vec<(String, Value, QoS)>) {
        let mut fx = Vec::new();
        let body = json!({"da": id(n), "odf": odf, "data": data, "nonce": "n1"});
        let accepted = st.odf_request("ccm", body.to_string().as_bytes(), &mut fx);
        let replies = publishes(&fx);
        let (topic, reply, _) = replies.last().expect("a reply").clone();
        assert_eq!(topic, "iottalk/api/res/ccm/odf");
        assert_eq!(reply["nonce"], "n1", "{reply}");
        assert_eq!(accepted, reply["state"] == "ok", "{reply}");
        let data = fx
            .iter()
            .filter_map(|e| match e {
                Effect::Publish(m) if m.topic.starts_with("iottalk/esm/") => Some((
                    m.topic.clone(),
                    serde_json::from_slice(&m.payload).unwrap_or(Value::Null),
                    m.qos,
                )),
                _ => None,
            })
            .collect();
        let outcome = if accepted {
            json!("ok")
        } else {
            reply["reason"].clone()
        };
        (outcome, data)
    }

    #[test]
    fn odf_writes_reach_an_open_odf_and_are_refused_with_a_reason_otherwise() {
        let mut st = Registry::default();
        let unknown = odf_write(&st, 1, "Dummy_Control", json!([1]));
        assert_eq!(
            unknown,
            (json!(format!("DA {} is not registered", id(1))), vec![])
        );
        let rev = registered(&mut st, 1);
        let no_odf = odf_write(&st, 1, "Dummy_Sensor", json!([1])).0;
        assert_eq!(
            no_odf,
            json!(format!("DA {} has no ODF `Dummy_Sensor`", id(1)))
        );
        let offline = format!("DA {} is offline: nothing would receive the value", id(1));
        assert_eq!(
            odf_write(&st, 1, "Dummy_Control", json!([1])).0,
            json!(offline)
        );
        uplink1(&mut st, &presence(&rev, "online"), true);
        let unlinked = format!(
            "ODF `Dummy_Control` of DA {} is in no graph: link it in a project first",
            id(1)
        );
        assert_eq!(
            odf_write(&st, 1, "Dummy_Control", json!([1])).0,
            json!(unlinked)
        );
        // Linked: refused until the DA acknowledged CONNECT (it is not subscribed before).
        let odf = (Direction::Odf, "Dummy_Control".parse().unwrap());
        let mut fx = Vec::new();
        let topic = st.link_acquire(&id(1), odf, None, &mut fx).unwrap();
        let (why, sent) = odf_write(&st, 1, "Dummy_Control", json!([1]));
        assert!(
            why.as_str().unwrap().contains("has not subscribed yet"),
            "{why}"
        );
        assert!(sent.is_empty());
        uplink1(&mut st, &reply(&odf_connect_id(&fx), "ok"), false);
        // Delivered as the engine delivers routed data: the list on the link topic, QoS 0.
        let (ok, sent) = odf_write(&st, 1, "Dummy_Control", json!([0.5, "on"]));
        assert_eq!(ok, json!("ok"));
        assert_eq!(
            sent,
            vec![(topic.clone(), json!([0.5, "on"]), QoS::AtMostOnce)]
        );
        // Not a list, or larger than the broker carries: refused, nothing sent.
        let (why, sent) = odf_write(&st, 1, "Dummy_Control", json!({"v": 1}));
        assert!(why
            .as_str()
            .unwrap()
            .starts_with("field `data` must be a JSON array"));
        assert!(sent.is_empty());
        st.cfg.max_reply_bytes = 10;
        let (why, sent) = odf_write(&st, 1, "Dummy_Control", json!(["0123456789"]));
        assert_eq!(
            why,
            json!("data too large (14 bytes > broker.max_payload_bytes 10)")
        );
        assert!(sent.is_empty());
        // Garbage: a reason, never a panic.
        let mut fx = Vec::new();
        assert!(!st.odf_request("ccm", b"\xff{", &mut fx));
        assert!(publishes(&fx)[0].1["reason"]
            .as_str()
            .unwrap()
            .starts_with("malformed JSON"));
    }
}
