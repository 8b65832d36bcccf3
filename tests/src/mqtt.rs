//! [`Mqtt`], a rumqttc test client that collects what it receives, and [`connack_code`].

use std::time::Duration;

use bytes::Bytes;
use rumqttc::{
    AsyncClient, ConnectionError, Event, LastWill, MqttOptions, NetworkOptions, Outgoing, Packet,
    QoS,
};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::{new_id, WAIT};

/// Connects to the broker at `addr` with a username and password; returns the CONNACK code
/// (0 = accepted). While nothing listens on `addr` yet it tries again every few milliseconds
/// (up to [`WAIT`]), so it can be started before the broker to hit its first moments.
pub async fn connack_code(addr: &str, user: &str, password: &str) -> u8 {
    connack_with(addr, Some((user, password)), None).await
}

/// [`connack_code`] with optional credentials (`None`: anonymous) and an optional will on
/// `will_topic`.
pub async fn connack_with(
    addr: &str,
    credentials: Option<(&str, &str)>,
    will_topic: Option<&str>,
) -> u8 {
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let mut opts = MqttOptions::new(
        format!("cred-{}", new_id()),
        host,
        port.parse().expect("port"),
    );
    if let Some((user, password)) = credentials {
        opts.set_credentials(user, password);
    }
    if let Some(topic) = will_topic {
        opts.set_last_will(LastWill::new(topic, "{}", QoS::AtMostOnce, true));
    }
    let (_client, mut ev) = AsyncClient::new(opts, 10);
    // rumqttc gives up on a CONNACK after 5 s; a controller checking a flood of passwords
    // on a loaded machine may take longer: the test's own deadline decides.
    ev.network_options
        .set_connection_timeout(WAIT.as_secs().max(1));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = tokio::time::timeout_at(deadline, ev.poll())
            .await
            .expect("an answer to CONNECT");
        match r {
            Ok(Event::Incoming(Packet::ConnAck(a))) => return a.code as u8,
            Err(rumqttc::ConnectionError::ConnectionRefused(code)) => return code as u8,
            Err(rumqttc::ConnectionError::Io(e))
                if e.kind() == std::io::ErrorKind::ConnectionRefused =>
            {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Ok(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// What a [`Mqtt`] client receives.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub payload: Bytes,
    pub retain: bool,
    pub qos: QoS,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or(Value::Null)
    }
}

/// A rumqttc client for tests: its event loop runs in a task that forwards publishes and
/// SUBACKs; [`Mqtt::kill`] drops the socket without DISCONNECT, so the will fires.
#[derive(Debug)]
pub struct Mqtt {
    pub client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Received>,
    subacks: mpsc::UnboundedReceiver<Vec<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl Mqtt {
    pub async fn connect(addr: &str, will: Option<(String, Value)>) -> Mqtt {
        Self::connect_as(addr, will, None).await
    }

    /// [`Mqtt::connect`] with a username and password; panics if the broker refuses them.
    pub async fn connect_as(
        addr: &str,
        will: Option<(String, Value)>,
        credentials: Option<(&str, &str)>,
    ) -> Mqtt {
        let (host, port) = addr.rsplit_once(':').expect("host:port");
        let client_id = format!("test-{}", new_id());
        let mut opts = MqttOptions::new(client_id.clone(), host, port.parse().expect("port"));
        if let Some((user, password)) = credentials {
            opts.set_credentials(user, password);
        }
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_max_packet_size(4 * 1024 * 1024, 4 * 1024 * 1024);
        if let Some((topic, payload)) = will {
            opts.set_last_will(LastWill::new(
                topic,
                payload.to_string(),
                QoS::AtMostOnce,
                true,
            ));
        }
        let (client, mut ev) = AsyncClient::new(opts, 100);
        // rumqttc's default of 5 s for the TCP connect, the CONNACK and each flush is a time
        // limit a loaded machine can exceed.
        let mut net = NetworkOptions::new();
        net.set_connection_timeout(WAIT.as_secs());
        ev.set_network_options(net);
        let (tx, rx) = mpsc::unbounded_channel();
        let (stx, subacks) = mpsc::unbounded_channel();
        let (ctx, mut connected) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut up = false;
            loop {
                match ev.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send(Received {
                            topic: p.topic.clone(),
                            payload: p.payload.clone(),
                            retain: p.retain,
                            qos: p.qos,
                        });
                    }
                    Ok(Event::Incoming(Packet::SubAck(a))) => {
                        let granted = a
                            .return_codes
                            .iter()
                            .map(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_)))
                            .collect::<Vec<bool>>();
                        let _ = stx.send(granted);
                    }
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        up = true;
                        let _ = ctx.send(());
                    }
                    // `disconnect` waits for this: everything queued before it is written.
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                    Ok(_) => {}
                    // Before the first CONNACK nothing is subscribed: trying again is harmless.
                    Err(e) if !up => {
                        eprintln!("test MQTT client {client_id}: cannot connect yet ({e})");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(ConnectionError::RequestsDone) => return,
                    // rumqttc would connect again with a clean session, without the
                    // subscriptions: the client stops instead, so that a test waiting for a
                    // message fails with "connection closed" rather than a silent timeout.
                    Err(e) => {
                        eprintln!("test MQTT client {client_id}: connection lost ({e}); it stops");
                        return;
                    }
                }
            }
        });
        tokio::time::timeout(WAIT, connected.recv())
            .await
            .expect("CONNACK in time");
        Mqtt {
            client,
            rx,
            subacks,
            task,
        }
    }

    /// Subscribes and waits for the SUBACK; panics if the broker refused the filter.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) {
        let granted = self.subscribe_many(&[filter], qos).await;
        assert_eq!(granted, [true], "SUBSCRIBE {filter} refused");
    }

    /// Subscribes to `filters` in one SUBSCRIBE; returns whether each was granted.
    pub async fn subscribe_many(&mut self, filters: &[&str], qos: QoS) -> Vec<bool> {
        let subs = filters
            .iter()
            .map(|f| rumqttc::SubscribeFilter::new((*f).to_owned(), qos));
        self.client.subscribe_many(subs).await.expect("subscribe");
        tokio::time::timeout(WAIT, self.subacks.recv())
            .await
            .expect("SUBACK in time")
            .expect("the connection is up (see the test MQTT client's message above)")
    }

    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>, qos: QoS, retain: bool) {
        self.client
            .publish(topic, qos, retain, payload.into())
            .await
            .expect("publish");
    }

    pub async fn publish_json(&self, topic: &str, v: &Value, retain: bool) {
        self.publish(topic, v.to_string(), QoS::ExactlyOnce, retain)
            .await;
    }

    /// The next message matching `pred`, skipping others.
    pub async fn recv_until(&mut self, what: &str, pred: impl Fn(&Received) -> bool) -> Received {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(m)) if pred(&m) => return m,
                Ok(Some(_)) => {}
                Ok(None) => panic!("connection closed while waiting for {what}"),
                Err(_) => panic!("timed out waiting for {what}"),
            }
        }
    }

    /// The next message if one arrives within `d` (`None` also when the connection closed).
    pub async fn recv_within(&mut self, d: Duration) -> Option<Received> {
        tokio::time::timeout(d, self.rx.recv()).await.ok().flatten()
    }

    /// Everything received from now until the connection closes (e.g. the controller stops),
    /// at most [`WAIT`]: what reached this client before a restart, read after it.
    pub async fn until_closed(&mut self) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut out = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(m)) => out.push(m),
                Ok(None) => return out,
                Err(_) => panic!("the connection did not close; received {out:?}"),
            }
        }
    }

    /// The next device API announcement `kind` (`register`, `online`, ...) about DA `id`.
    pub async fn announcement(&mut self, kind: &str, id: &str) -> Value {
        self.recv_until(&format!("{kind} announcement of {id}"), |r| {
            let v = r.json();
            v["op"] == "anno" && v["type"] == kind && (v["da"]["id"] == id || v["da"] == id)
        })
        .await
        .json()
    }

    /// The retained messages currently stored for `filter`: subscribes to it, then to a
    /// marker topic with a retained message of its own; once the marker arrives, every
    /// retained message of `filter` has been delivered before it.
    pub async fn retained(&mut self, filter: &str) -> Vec<Received> {
        let marker = format!("test-marker/{}", new_id());
        self.publish(&marker, "m", QoS::AtLeastOnce, true).await;
        self.subscribe(filter, QoS::AtLeastOnce).await;
        self.subscribe(&marker, QoS::AtLeastOnce).await;
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(m)) if m.topic == marker => break,
                Ok(Some(m)) if m.retain => out.push(m),
                Ok(Some(_)) => {}
                _ => panic!("marker not received"),
            }
        }
        let _ = self.client.unsubscribe(filter).await;
        let _ = self.client.unsubscribe(&marker).await;
        self.publish(&marker, "", QoS::AtLeastOnce, true).await;
        out
    }

    /// Polls [`Mqtt::retained`] until `done` holds for what it returns, at most [`WAIT`]: the
    /// broker sends each SUBSCRIBE's retained messages from a task of its own, so the marker
    /// of one call can overtake a message that is stored. For where a message is expected.
    pub async fn retained_until(
        &mut self,
        filter: &str,
        what: &str,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let got = self.retained(filter).await;
            if done(&got) {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what} retained on {filter}; last {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Drops the connection without DISCONNECT: the broker publishes the will.
    pub fn kill(self) {
        self.task.abort();
    }

    /// Sends DISCONNECT (after everything queued before it) and waits until it is written.
    pub async fn disconnect(mut self) {
        if self.client.disconnect().await.is_ok() {
            let _ = tokio::time::timeout(WAIT, &mut self.task).await;
        }
        self.task.abort();
    }
}
