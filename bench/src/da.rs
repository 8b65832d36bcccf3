//! A bench device application, speaking the public protocol only (docs/protocol.md):
//! `PUT /{id}` to register, an MQTT connection with the offline will on `<id>/ctrl/i`, a
//! subscription to `<id>/ctrl/o`, `{"state": "online", "rev"}` retained; then it answers
//! CONNECT/DISCONNECT signals as an SDK does (an ODF subscribes to its data topic *before*
//! it acks, so nothing sent after the ack is missed) and reports each link to the bench.
//! `DELETE /{id}` with the rev deregisters it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use iot_proto::topics;
use iot_proto::wire::{Command, Direction, ErrorBody, Presence, RegisterResponse, Signal, Uplink};
use iot_proto::{DaId, Rev};
use rumqttc::{LastWill, QoS};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::BenchError;
use crate::mqtt::{Conn, ConnCounters, ConnEvent, ConnSpec};
use crate::payload::UNITS;
use crate::stats::SharedRecorder;

/// Feature names of the bench DAs.
pub const IDF: &str = "Bench_In";
pub const ODF: &str = "Bench_Out";
/// `profile.model` of the bench DAs.
pub const MODEL: &str = "Iotctl_Bench";

/// The registration body of a bench DA with an IDF and/or an ODF of the bench's width.
pub fn register_body(name: &str, idf: bool, odf: bool) -> Value {
    let mut body = json!({
        "name": name,
        "accept_protos": ["mqtt"],
        "profile": {"model": MODEL},
    });
    if idf {
        body["idf_list"] = json!([[IDF, UNITS]]);
    }
    if odf {
        body["odf_list"] = json!([[ODF, UNITS]]);
    }
    body
}

/// `PUT {csm}/{id}`.
pub async fn register(
    http: &reqwest::Client,
    csm: &str,
    id: &DaId,
    body: &Value,
) -> Result<RegisterResponse, BenchError> {
    let url = format!("{csm}/{id}");
    let r = http
        .put(&url)
        .json(body)
        .send()
        .await
        .map_err(|source| BenchError::Request {
            method: "PUT",
            url: url.clone(),
            source,
        })?;
    let status = r.status();
    let bytes = r.bytes().await.map_err(|source| BenchError::Request {
        method: "PUT",
        url: url.clone(),
        source,
    })?;
    if !status.is_success() {
        return Err(BenchError::Refused {
            method: "PUT",
            url,
            status,
            reason: reason(&bytes),
        });
    }
    serde_json::from_slice(&bytes).map_err(|e| BenchError::Reply {
        method: "PUT",
        url,
        reason: e.to_string(),
    })
}

/// `DELETE {csm}/{id}` with `{"rev"}`.
pub async fn deregister(
    http: &reqwest::Client,
    csm: &str,
    id: &DaId,
    rev: &Rev,
) -> Result<(), BenchError> {
    let url = format!("{csm}/{id}");
    let r = http
        .delete(&url)
        .json(&json!({ "rev": rev }))
        .send()
        .await
        .map_err(|source| BenchError::Request {
            method: "DELETE",
            url: url.clone(),
            source,
        })?;
    let status = r.status();
    if !status.is_success() {
        let bytes = r.bytes().await.unwrap_or_default();
        return Err(BenchError::Refused {
            method: "DELETE",
            url,
            status,
            reason: reason(&bytes),
        });
    }
    Ok(())
}

fn reason(body: &[u8]) -> String {
    serde_json::from_slice::<ErrorBody>(body)
        .map(|e| e.reason)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).chars().take(200).collect())
}

/// A link the controller connected (a CONNECT the DA acked).
#[derive(Debug, Clone)]
pub struct LinkUp {
    /// Index of the DA in the bench's list.
    pub da: usize,
    pub direction: Direction,
    pub topic: String,
}

/// A bench DA that is registered and online; its control task answers signals.
#[derive(Debug)]
pub struct BenchDa {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// What a bench DA's connection needs.
#[derive(Debug, Clone)]
pub struct DaConnect {
    pub host: String,
    pub port: u16,
    /// QoS of the data subscription of an ODF.
    pub data_qos: QoS,
    pub keep_alive: Duration,
}

impl BenchDa {
    /// Connects a registered DA and publishes online; links are reported on `links`.
    pub async fn connect(
        index: usize,
        id: DaId,
        rev: Rev,
        how: &DaConnect,
        recorder: Option<SharedRecorder>,
        links: mpsc::Sender<LinkUp>,
        counters: Arc<ConnCounters>,
    ) -> Result<BenchDa, BenchError> {
        let ctrl_i = topics::ctrl_i(&id);
        let ctrl_o = topics::ctrl_o(&id);
        let offline = Uplink::presence_json(Presence::Offline, &rev).to_string();
        let online = Uplink::presence_json(Presence::Online, &rev).to_string();
        let mut spec = ConnSpec::new(&how.host, how.port, format!("iotctl-bench-{id}"));
        spec.keep_alive = how.keep_alive;
        spec.request_cap = 16;
        spec.event_cap = 16;
        spec.will = Some(LastWill::new(
            ctrl_i.clone(),
            offline,
            QoS::ExactlyOnce,
            true,
        ));
        spec.birth = Some((ctrl_i.clone(), online.clone().into_bytes()));
        spec.forward = vec![ctrl_o.clone()];
        spec.recorder = recorder;
        let mut conn = Conn::connect(spec, counters).await?;
        let early = conn.subscribe(&ctrl_o, QoS::ExactlyOnce).await?;
        conn.client
            .publish(ctrl_i.clone(), QoS::ExactlyOnce, true, online.into_bytes())
            .await
            .map_err(|_| BenchError::Publish {
                topic: ctrl_i.clone(),
            })?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(control(
            conn,
            index,
            ctrl_i,
            how.data_qos,
            early.into(),
            links,
            stop.clone(),
        ));
        Ok(BenchDa { stop, task })
    }

    /// Disconnects cleanly (no will: the DA stays registered until deregistered).
    pub async fn close(self) {
        self.stop.cancel();
        let abort = self.task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(3), self.task)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}

/// The DA's control task: answers signals on `ctrl/o` until stopped, then disconnects.
async fn control(
    mut conn: Conn,
    index: usize,
    ctrl_i: String,
    data_qos: QoS,
    mut pending: VecDeque<ConnEvent>,
    links: mpsc::Sender<LinkUp>,
    stop: CancellationToken,
) {
    loop {
        let event = match pending.pop_front() {
            Some(e) => e,
            None => tokio::select! {
                _ = stop.cancelled() => break,
                e = conn.events.recv() => match e {
                    Some(e) => e,
                    None => break,
                },
            },
        };
        let ConnEvent::Message { payload, .. } = event else {
            continue;
        };
        let Ok(signal) = Signal::from_json(&payload) else {
            tracing::warn!(da.index = index, "ignoring a malformed signal");
            continue;
        };
        let ack = match (signal.command, signal.direction) {
            (Command::Connect, Direction::Odf) => {
                match conn.subscribe(&signal.topic, data_qos).await {
                    Ok(early) => {
                        pending.extend(early);
                        json!({"msg_id": signal.msg_id, "state": "ok"})
                    }
                    Err(e) => {
                        json!({"msg_id": signal.msg_id, "state": "error", "reason": e.to_string()})
                    }
                }
            }
            (Command::Disconnect, Direction::Odf) => {
                conn.unsubscribe(&signal.topic).await;
                json!({"msg_id": signal.msg_id, "state": "ok"})
            }
            _ => json!({"msg_id": signal.msg_id, "state": "ok"}),
        };
        if conn
            .client
            .publish(ctrl_i.clone(), QoS::ExactlyOnce, false, ack.to_string())
            .await
            .is_err()
        {
            break;
        }
        if signal.command == Command::Connect {
            // The bench may have stopped listening (setup failed); that is not this task's error.
            let _ = links
                .send(LinkUp {
                    da: index,
                    direction: signal.direction,
                    topic: signal.topic,
                })
                .await;
        }
    }
    conn.disconnect().await;
}
