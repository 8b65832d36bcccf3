//! The network side of each driver: a TP-Link plug or bulb over TCP, an HTTP GET, an MQTT
//! publish, a value to a DA's ODF through the CSM, a pause. Each returns the `detail` of a
//! failure in a few words; the runner bounds them all by the deadline (dropping the future
//! closes any connection).

use std::io;
use std::time::Duration;

use iot_broker::{BrokerHandle, Message, QoS};
use iot_proto::url::percent_encode;
use iot_proto::DaId;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::catalog::{Catalog, Driver};
use super::command::Command;
use super::run::Drive;
use super::tplink;
use crate::apply::odf::OdfClient;

/// The drivers, with what they need.
#[derive(Debug, Clone)]
pub struct Drivers {
    pub broker: BrokerHandle,
    pub http: reqwest::Client,
    pub odf: OdfClient,
}

impl Drivers {
    /// The drivers of a CCM whose API topics use `client` (see `ccm.api_client`).
    pub async fn connect(broker: BrokerHandle, client: &str) -> Result<Drivers, String> {
        let odf = OdfClient::connect(broker.clone(), client, ODF_TIMEOUT)
            .await
            .map_err(|e| format!("home scenes: {e}"))?;
        let http = reqwest::Client::builder()
            .connect_timeout(HTTP_CONNECT_TIMEOUT)
            .build()
            .map_err(|e| format!("home scenes: cannot build the HTTP client: {e}"))?;
        Ok(Drivers { broker, http, odf })
    }
}

/// The longest a `da` device waits for the CSM (the deadline usually cuts it sooner).
const ODF_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest an `http` device may take to accept a connection.
const HTTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Drive for Drivers {
    async fn drive(&self, _name: &str, driver: &Driver, cmd: Command) -> Result<(), String> {
        let text = cmd.to_string();
        match driver {
            Driver::Tplink { host, port, kind } => {
                tplink_send(host, *port, Catalog::tplink_kind(kind), cmd).await
            }
            Driver::Http { url } => {
                let url = url.replace("{cmd}", &percent_encode(&text));
                http_get(&self.http, &url).await
            }
            Driver::Mqtt { topic, payload } => {
                // (`{cmd}` is `on`, `off` or `dim:N`: the topic stays a valid name.)
                let msg = Message::new(
                    topic.replace("{cmd}", &text),
                    payload.replace("{cmd}", &text),
                    QoS::AtLeastOnce,
                    false,
                );
                self.broker
                    .publish(msg)
                    .await
                    .map_err(|e| format!("broker refused the publish: {e}"))
            }
            Driver::Da { da, odf } => {
                let id: DaId = da.parse().map_err(|_| format!("`{da}` is not a DA id"))?;
                self.odf.write(&id, odf, json!([text])).await
            }
            Driver::Delay { ms } => {
                tokio::time::sleep(Duration::from_millis(*ms)).await;
                Ok(())
            }
        }
    }
}

/// One request to a TP-Link device and its reply, checked for `err_code: 0`.
async fn tplink_send(
    host: &str,
    port: u16,
    kind: tplink::Kind,
    cmd: Command,
) -> Result<(), String> {
    let mut conn = TcpStream::connect((host, port)).await.map_err(io_detail)?;
    conn.write_all(&tplink::frame(&tplink::request(kind, cmd)))
        .await
        .map_err(io_detail)?;
    let len = conn.read_u32().await.map_err(io_detail)? as usize;
    if len > tplink::MAX_REPLY_BYTES {
        return Err(format!("reply too large ({len} bytes)"));
    }
    let mut body = vec![0; len];
    conn.read_exact(&mut body).await.map_err(io_detail)?;
    tplink::check_reply(&tplink::decrypt(&body))
}

/// A GET; any 2xx is success.
async fn http_get(http: &reqwest::Client, url: &str) -> Result<(), String> {
    // Without the URL: it may carry a token, and details go to every reader of the reply.
    let res = http
        .get(url)
        .send()
        .await
        .map_err(|e| http_detail(&e.without_url()))?;
    let status = res.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {}", status.as_u16()))
    }
}

/// A network failure in a few words.
fn io_detail(e: io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::ConnectionReset => "connection reset".into(),
        io::ErrorKind::UnexpectedEof => "connection closed without a reply".into(),
        io::ErrorKind::TimedOut => "connection timed out".into(),
        _ => e.to_string(),
    }
}

fn http_detail(e: &reqwest::Error) -> String {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            return io_detail(io::Error::new(io.kind(), io.to_string()));
        }
        source = s.source();
    }
    if e.is_connect() {
        "cannot connect".into()
    } else {
        format!("HTTP request failed: {e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_encoded_as_one_path_segment() {
        assert_eq!(percent_encode("dim:40"), "dim%3A40");
        assert_eq!(percent_encode("on"), "on");
        assert_eq!(percent_encode("a/b c"), "a%2Fb%20c");
    }

    #[tokio::test]
    async fn a_closed_port_is_connection_refused() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let err = tplink_send("127.0.0.1", port, tplink::Kind::Plug, Command::ON)
            .await
            .unwrap_err();
        assert_eq!(err, "connection refused");
    }
}
