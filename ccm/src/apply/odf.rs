//! The CCM's ODF-write client: hands a value to one ODF of one DA through the CSM's ODF-write
//! API (`iottalk/api/req/<client>/odf`, replies on `iottalk/api/res/<client>/odf` matched by
//! `nonce`, see [`replies`](super::replies)), as a home device of driver `da` does. The CSM
//! publishes the value on the ODF's data topic as if a graph had routed it there.
//! Not here: which value to send (the home commands), the checks the CSM makes.

use std::time::Duration;

use iot_broker::BrokerHandle;
use iot_proto::topics;
use iot_proto::wire::odf_api::{self, OdfWrite};
use iot_proto::DaId;
use serde_json::Value;

use super::replies::{NoReply, Replies};

/// An ODF-write client; cheap to clone.
#[derive(Debug, Clone)]
pub struct OdfClient {
    broker: BrokerHandle,
    client: String,
    replies: Replies<Result<(), String>>,
    timeout: Duration,
}

impl OdfClient {
    /// Subscribes to this client's ODF-write replies (before anything is sent) and starts
    /// the task handing each reply to its request.
    pub async fn connect(
        broker: BrokerHandle,
        client: &str,
        timeout: Duration,
    ) -> Result<OdfClient, String> {
        let replies = Replies::subscribe(&broker, &topics::odf_res(client), |p| {
            let (nonce, outcome) = odf_api::read_reply(p)?;
            Some((nonce?, outcome))
        })
        .await
        .map_err(|e| format!("cannot subscribe to the ODF-write replies: {e}"))?;
        Ok(OdfClient {
            broker,
            client: client.to_owned(),
            replies,
            timeout,
        })
    }

    /// Hands `data` (a JSON array, as routed data) to ODF `odf` of DA `da`. `Ok` once the CSM
    /// delivered it to the online DA; else the CSM's reason, or why no reply came.
    #[tracing::instrument(level = "debug", skip(self, data), fields(da.id = %da, link.feature = %odf))]
    pub async fn write(&self, da: &DaId, odf: &str, data: Value) -> Result<(), String> {
        let body = OdfWrite::request_body(da, odf, data);
        let topic = topics::odf_req(&self.client);
        match self
            .replies
            .request(&self.broker, topic, body, self.timeout)
            .await
        {
            Ok(outcome) => outcome,
            Err(NoReply::Broker(e)) => Err(format!("the broker refused the ODF write: {e}")),
            Err(NoReply::Timeout) => Err(format!(
                "no reply from the CSM within {} s: is the CSM running on this broker?",
                self.timeout.as_secs_f64()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use iot_broker::{EmbeddedConfig, Message, NativeBroker, QoS, Security};
    use tokio_util::sync::CancellationToken;

    use super::*;

    /// An embedded broker on free ports, and a stand-in CSM on it answering each request
    /// with `answer(request)` (`None`: no reply).
    async fn broker_with_csm(
        answer: fn(&Value) -> Option<Value>,
    ) -> (BrokerHandle, CancellationToken) {
        let shutdown = CancellationToken::new();
        let cfg = EmbeddedConfig {
            listen: "127.0.0.1:0".into(),
            ws_listen: String::new(),
            ..EmbeddedConfig::default()
        };
        let (broker, _task) = NativeBroker::start(&cfg, Security::default(), shutdown.clone())
            .await
            .expect("broker starts");
        let broker: BrokerHandle = Arc::new(broker);
        let mut sub = broker
            .subscribe(topics::ODF_REQ_FILTER, 16)
            .await
            .expect("subscribe");
        let b = broker.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.recv().await {
                let req: Value = serde_json::from_slice(&m.payload).unwrap_or(Value::Null);
                if let Some(reply) = answer(&req) {
                    let topic = m.topic.replacen("/req/", "/res/", 1);
                    let msg = Message::new(topic, reply.to_string(), QoS::ExactlyOnce, false);
                    let _ = b.publish(msg).await;
                }
            }
        });
        (broker, shutdown)
    }

    #[tokio::test]
    async fn writes_are_answered_by_nonce_refused_with_the_csms_reason_or_time_out() {
        let (broker, shutdown) = broker_with_csm(|req| {
            let mut reply = req.clone();
            match req["data"][0].as_str() {
                Some("silent") => return None,
                Some("no") => {
                    reply["state"] = "error".into();
                    reply["reason"] = "DA x is offline".into();
                }
                _ => reply["state"] = "ok".into(),
            }
            Some(reply)
        })
        .await;
        let odf = OdfClient::connect(broker, "ccm", Duration::from_millis(300))
            .await
            .unwrap();
        let da = DaId::new_v4();
        let other = odf.clone();
        let (a, b) = tokio::join!(
            odf.write(&da, "Switch", serde_json::json!([1])),
            other.write(&da, "Switch", serde_json::json!(["no"]))
        );
        assert_eq!(a, Ok(()));
        assert_eq!(b, Err("DA x is offline".to_owned()));
        let e = odf
            .write(&da, "Switch", serde_json::json!(["silent"]))
            .await
            .unwrap_err();
        assert_eq!(
            e,
            "no reply from the CSM within 0.3 s: is the CSM running on this broker?"
        );
        shutdown.cancel();
    }
}
