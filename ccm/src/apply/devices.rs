//! The device API from the CCM's side: `attach` on `iottalk/api/req/<client>/device`, its
//! reply (possibly in pages) and the announcements that follow on
//! `iottalk/api/res/<client>/device`, read into [`DeviceInfo`]s for [`Live`]. [`run`] is the
//! task that keeps [`Live`]'s device list and CSM connection flag current: it re-attaches
//! every 30 s (or when asked), so a restarted CSM is noticed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use iot_broker::{BrokerHandle, Message, QoS};
use iot_proto::topics;
use iot_proto::wire::paging::Pages;
use iot_proto::DaId;
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::live::{DeviceInfo, Live};
use crate::Ccm;

/// How often the CCM attaches again.
pub const REATTACH_EVERY: Duration = Duration::from_secs(30);
/// How long an `attach` may go unanswered before the CSM counts as gone.
pub const ATTACH_TIMEOUT: Duration = Duration::from_secs(15);

/// A message on the device-API reply topic, read.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceMsg {
    /// The whole reply to `attach`: the DAs, or the CSM's refusal.
    Attached(Result<Vec<DeviceInfo>, String>),
    /// An announcement: its type and the DA (only its id for `deregister`).
    Anno {
        kind: String,
        da: Result<DeviceInfo, DaId>,
    },
    /// A page of a longer reply, or anything else.
    Nothing,
}

/// Names of the features of an `idf_list`/`odf_list`: `[name, units]`, `[name]` or `name`.
fn feature_names(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|f| match f {
                    Value::String(s) => Some(s.clone()),
                    Value::Array(a) => a.first().and_then(Value::as_str).map(str::to_owned),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A DA's record as the device API shows it (`id` from the key when missing).
pub fn parse_record(key: Option<&str>, v: &Value) -> Option<DeviceInfo> {
    let id: DaId = v.get("id").and_then(Value::as_str).or(key)?.parse().ok()?;
    let profile = v.get("profile");
    let model = ["dm_name", "model"]
        .iter()
        .find_map(|k| profile.and_then(|p| p.get(*k)).and_then(Value::as_str))
        .unwrap_or_default();
    Some(DeviceInfo {
        id,
        name: v
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        model: model.to_owned(),
        idf: feature_names(v.get("idf_list")),
        odf: feature_names(v.get("odf_list")),
        online: v.get("state").and_then(Value::as_str) == Some("online"),
    })
}

/// Reads one message; `pages` collects a paged `attach` reply.
pub fn parse_message(payload: &[u8], pages: &mut Pages) -> DeviceMsg {
    let Ok(v) = serde_json::from_slice::<Value>(payload) else {
        return DeviceMsg::Nothing;
    };
    match v.get("op").and_then(Value::as_str) {
        Some("attach") if v.get("state").is_some() => {
            let Some(whole) = pages.add(v) else {
                return DeviceMsg::Nothing;
            };
            if whole.get("state").and_then(Value::as_str) != Some("ok") {
                let why = whole.get("reason").and_then(Value::as_str);
                return DeviceMsg::Attached(Err(why.unwrap_or("no reason given").to_owned()));
            }
            let list = whole
                .get("da_list")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, r)| parse_record(Some(k), r))
                        .collect()
                })
                .unwrap_or_default();
            DeviceMsg::Attached(Ok(list))
        }
        Some("anno") => {
            let kind = v.get("type").and_then(Value::as_str).unwrap_or_default();
            let da = match v.get("da") {
                Some(Value::String(id)) => match id.parse() {
                    Ok(id) => Err(id),
                    Err(_) => return DeviceMsg::Nothing,
                },
                Some(r) => match parse_record(None, r) {
                    Some(d) => Ok(d),
                    None => return DeviceMsg::Nothing,
                },
                None => return DeviceMsg::Nothing,
            };
            DeviceMsg::Anno {
                kind: kind.to_owned(),
                da,
            }
        }
        _ => DeviceMsg::Nothing,
    }
}

async fn attach(broker: &BrokerHandle, client: &str) {
    let msg = Message::new(
        topics::device_req(client),
        json!({"op": "attach"}).to_string(),
        QoS::ExactlyOnce,
        false,
    );
    if let Err(e) = broker.publish(msg).await {
        tracing::warn!(error = %e, "cannot send the device API attach");
    }
}

fn same_devices(live: &Live, list: &[DeviceInfo]) -> bool {
    let now: BTreeMap<DaId, DeviceInfo> = live.devices().into_iter().map(|d| (d.id, d)).collect();
    now.len() == list.len() && list.iter().all(|d| now.get(&d.id) == Some(d))
}

/// Keeps [`Live`]'s devices and CSM flag current until `shutdown`; kicks the applier on
/// every change. `reattach` asks for an `attach` now (a graph request timed out).
pub async fn run(
    ccm: Ccm,
    broker: BrokerHandle,
    reattach: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let client = ccm.config().api_client.clone();
    let live = ccm.live().clone();
    let mut sub = loop {
        match broker.subscribe(&topics::device_res(&client), 1024).await {
            Ok(s) => break s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe to the device API; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        }
    };
    let mut pages = Pages::new("da_list");
    let mut tick = tokio::time::interval_at(Instant::now() + REATTACH_EVERY, REATTACH_EVERY);
    attach(&broker, &client).await;
    let mut deadline = Some(Instant::now() + ATTACH_TIMEOUT);
    loop {
        let wait_reply = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {
                attach(&broker, &client).await;
                deadline.get_or_insert(Instant::now() + ATTACH_TIMEOUT);
            }
            () = reattach.notified() => {
                attach(&broker, &client).await;
                deadline.get_or_insert(Instant::now() + ATTACH_TIMEOUT);
            }
            () = wait_reply => {
                deadline = None;
                if live.csm_connected() {
                    tracing::warn!(timeout_s = ATTACH_TIMEOUT.as_secs(), "the CSM does not answer the device API");
                }
                live.set_csm_connected(false);
            }
            msg = sub.recv() => {
                let Some(msg) = msg else { break };
                match parse_message(&msg.payload, &mut pages) {
                    DeviceMsg::Attached(list) => {
                        deadline = None;
                        let was = live.csm_connected();
                        match list {
                            Ok(list) => {
                                let changed = !same_devices(&live, &list);
                                if changed {
                                    live.set_devices(list);
                                }
                                live.set_csm_connected(true);
                                if changed || !was {
                                    if !was {
                                        tracing::info!(csm.devices = live.devices().len(), "the CSM answers the device API");
                                    }
                                    ccm.kick();
                                }
                            }
                            Err(reason) => {
                                tracing::warn!(reason = %iot_proto::log::Escaped(&reason), "the CSM refused the device API attach");
                                live.set_csm_connected(true);
                            }
                        }
                    }
                    DeviceMsg::Anno { kind, da } => {
                        let info = match da {
                            Ok(d) => d,
                            Err(id) => live.device(&id).unwrap_or(DeviceInfo {
                                id,
                                name: String::new(),
                                model: String::new(),
                                idf: vec![],
                                odf: vec![],
                                online: false,
                            }),
                        };
                        tracing::debug!(da.id = %info.id, anno = %kind, "device announcement");
                        live.device_event(&kind, info);
                        ccm.kick();
                    }
                    DeviceMsg::Nothing => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "df682f01-7c3a-49fd-8f5f-72ce0b6e68c0";

    fn record(state: &str) -> Value {
        json!({"id": ID, "rev": "r", "name": "Sensor1", "accept_protos": ["mqtt"],
            "idf_list": [["Temp", ["C"]], "Hum"], "odf_list": [],
            "profile": {"dm_name": "Dummy_Sensor"}, "state": state})
    }

    #[test]
    fn attach_replies_and_announcements_are_read() {
        let mut pages = Pages::new("da_list");
        let body = json!({"op": "attach", "state": "ok", "da_list": {ID: record("online")}});
        let DeviceMsg::Attached(Ok(list)) = parse_message(body.to_string().as_bytes(), &mut pages)
        else {
            panic!()
        };
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].model, "Dummy_Sensor");
        assert_eq!(list[0].idf, vec!["Temp".to_owned(), "Hum".to_owned()]);
        assert!(list[0].online);
        // In pages: nothing until the last one.
        let p1 = json!({"op": "attach", "state": "ok", "page": 1, "pages": 2, "da_list": {ID: record("offline")}});
        let p2 = json!({"op": "attach", "state": "ok", "page": 2, "pages": 2, "da_list": {}});
        assert_eq!(
            parse_message(p1.to_string().as_bytes(), &mut pages),
            DeviceMsg::Nothing
        );
        let DeviceMsg::Attached(Ok(list)) = parse_message(p2.to_string().as_bytes(), &mut pages)
        else {
            panic!()
        };
        assert!(!list[0].online);
        let anno =
            json!({"op": "anno", "type": "online", "timestamp": 1.0, "da": record("online")});
        let DeviceMsg::Anno { kind, da } = parse_message(anno.to_string().as_bytes(), &mut pages)
        else {
            panic!()
        };
        assert_eq!(kind, "online");
        assert!(da.unwrap().online);
        let gone = json!({"op": "anno", "type": "deregister", "timestamp": 1.0, "da": ID});
        let DeviceMsg::Anno { da, .. } = parse_message(gone.to_string().as_bytes(), &mut pages)
        else {
            panic!()
        };
        assert_eq!(da, Err(ID.parse().unwrap()));
        // Our own request, echoed to nobody, is not a reply.
        assert_eq!(
            parse_message(br#"{"op": "attach"}"#, &mut pages),
            DeviceMsg::Nothing
        );
    }
}
