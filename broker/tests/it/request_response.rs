//! Who published a message and the MQTT 5 request/response properties (Response Topic,
//! Correlation Data), between rumqttc v5 clients and the host, on the embedded broker.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use iot_broker::{Broker, Message, Publisher, QoS};
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::mqttbytes::QoS as V5QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use rumqttc::NetworkOptions;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::{client, spawn_broker, within, WAIT};

/// An MQTT 5 rumqttc client whose event loop runs on its own task.
struct V5Client {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Packet>,
    task: JoinHandle<()>,
}

impl Drop for V5Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl V5Client {
    /// Connects as `id` with `username` and waits for the CONNACK.
    async fn connect(addr: SocketAddr, id: &str, username: &str) -> V5Client {
        let mut opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        opts.set_keep_alive(Duration::from_secs(30))
            .set_credentials(username, "secret");
        let mut net = NetworkOptions::new();
        net.set_tcp_nodelay(true);
        net.set_connection_timeout(WAIT.as_secs());
        opts.set_network_options(net);
        let (client, mut eventloop) = AsyncClient::new(opts, 100);
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(p)) => {
                        if tx.send(p).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Outgoing(_)) => {}
                    Err(e) => {
                        eprintln!("v5 test client: {e}");
                        return;
                    }
                }
            }
        });
        let mut c = V5Client { client, rx, task };
        c.next("CONNACK", |p| matches!(p, Packet::ConnAck(_)).then_some(()))
            .await;
        c
    }

    /// The next incoming packet matching `pick`, skipping others.
    async fn next<T>(&mut self, what: &str, mut pick: impl FnMut(Packet) -> Option<T>) -> T {
        within(WAIT, what, async {
            loop {
                let p = self
                    .rx
                    .recv()
                    .await
                    .unwrap_or_else(|| panic!("client closed while waiting for {what}"));
                if let Some(t) = pick(p) {
                    return t;
                }
            }
        })
        .await
    }
}

/// An MQTT 5 client's request (Response Topic and Correlation Data) reaches a host
/// subscription with both properties and with the client id and username that published it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_subscription_sees_publisher_and_request_properties() {
    let b = spawn_broker().await;
    let mut sub = b.broker.subscribe("req/#", 8).await.unwrap();
    let c = V5Client::connect(b.addr(), "v5-requester", "alice").await;
    let props = PublishProperties {
        response_topic: Some("res/v5-requester/1".into()),
        correlation_data: Some(Bytes::from_static(b"\x00corr-1")),
        ..PublishProperties::default()
    };
    c.client
        .publish_with_properties("req/x", V5QoS::AtLeastOnce, false, "on", props)
        .await
        .unwrap();
    let got = within(WAIT, "the request", sub.recv()).await.unwrap();
    let want = Message::new("req/x", "on", QoS::AtLeastOnce, false)
        .with_response_topic("res/v5-requester/1")
        .with_correlation(Bytes::from_static(b"\x00corr-1"))
        .with_from(Publisher {
            client_id: "v5-requester".into(),
            username: Some("alice".into()),
        });
    assert_eq!(got, want);

    // The same client without properties: none on the message, the publisher still known.
    c.client
        .publish("req/y", V5QoS::AtMostOnce, false, "off")
        .await
        .unwrap();
    let got = within(WAIT, "the second message", sub.recv())
        .await
        .unwrap();
    assert_eq!((got.response_topic, got.correlation), (None, None));
    assert_eq!(
        got.from.as_deref().map(|p| p.client_id.as_str()),
        Some("v5-requester")
    );
}

/// A host publish with Correlation Data and a Response Topic reaches an MQTT 5 subscriber with
/// both properties, an MQTT 3.1.1 subscriber with the payload only; a host subscription sees it
/// with `from == None`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_reply_carries_correlation_to_v5_subscribers() {
    let b = spawn_broker().await;
    let mut v5 = V5Client::connect(b.addr(), "v5-replied", "bob").await;
    v5.client
        .subscribe("res/#", V5QoS::AtLeastOnce)
        .await
        .unwrap();
    v5.next("SUBACK", |p| matches!(p, Packet::SubAck(_)).then_some(()))
        .await;
    let mut v3 = client(b.addr(), "v3-replied").await;
    v3.subscribe("res/#", rumqttc::QoS::AtLeastOnce).await;
    let mut host = b.broker.subscribe("res/#", 8).await.unwrap();

    let reply = Message::new("res/v5-replied/1", "done", QoS::AtLeastOnce, false)
        .with_correlation(Bytes::from_static(b"corr-2"))
        .with_response_topic("res/ack")
        // Ignored: the broker says who published.
        .with_from(Publisher {
            client_id: "forged".into(),
            username: None,
        });
    b.broker.publish(reply).await.unwrap();

    let p = v5
        .next("the reply (v5)", |p| match p {
            Packet::Publish(p) => Some(p),
            _ => None,
        })
        .await;
    assert_eq!(p.payload, Bytes::from_static(b"done"));
    let props = p.properties.expect("MQTT 5 properties");
    assert_eq!(props.correlation_data, Some(Bytes::from_static(b"corr-2")));
    assert_eq!(props.response_topic.as_deref(), Some("res/ack"));

    let p = v3.next_publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("res/v5-replied/1", &b"done"[..])
    );

    let got = within(WAIT, "the reply (host)", host.recv()).await.unwrap();
    assert_eq!(got.from, None);
    assert_eq!(got.correlation, Some(Bytes::from_static(b"corr-2")));
    assert_eq!(got.response_topic.as_deref(), Some("res/ack"));
}
