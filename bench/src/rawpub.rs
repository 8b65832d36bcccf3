//! A QoS 0 publisher that speaks just enough MQTT 3.1.1 (CONNECT, PUBLISH, DISCONNECT) to
//! send pre-encoded messages in batches: one `write` per batch instead of one per message.
//!
//! Why not rumqttc here: rumqttc 0.25 writes and flushes every request on its own, so a
//! publisher costs a syscall and a loopback TCP transmission per message, CPU that the
//! controller under test needs when both run on one small machine. `--batch 1` restores one message per write (what a single small device does);
//! QoS 1 and 2 still go through rumqttc (acknowledgements, in-flight windows). What the
//! broker receives is the same PUBLISH packet either way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::error::BenchError;

/// Keepalive announced in CONNECT: the bench publishes continuously, and sends nothing but
/// PUBLISH, so it only has to cover the setup before a run.
const KEEP_ALIVE_S: u16 = 600;

/// One raw connection.
#[derive(Debug)]
pub struct RawPublisher {
    write: OwnedWriteHalf,
    buf: Vec<u8>,
    closed: Arc<AtomicBool>,
    reader: JoinHandle<()>,
}

/// Appends MQTT's variable-length "remaining length".
fn push_len(buf: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        buf.push(byte);
        if n == 0 {
            break;
        }
    }
}

fn push_str(buf: &mut Vec<u8>, s: &[u8]) -> Result<(), BenchError> {
    let len = u16::try_from(s.len()).map_err(|_| {
        BenchError::InvalidOption(format!(
            "a topic or client id of {} bytes: an MQTT string is at most 65535",
            s.len()
        ))
    })?;
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(s);
    Ok(())
}

/// A CONNECT packet (MQTT 3.1.1, clean session, no will, no credentials).
fn connect_packet(client_id: &str) -> Result<Vec<u8>, BenchError> {
    let mut body = Vec::with_capacity(16 + client_id.len());
    push_str(&mut body, b"MQTT")?;
    body.push(4); // protocol level 3.1.1
    body.push(0x02); // clean session
    body.extend_from_slice(&KEEP_ALIVE_S.to_be_bytes());
    push_str(&mut body, client_id.as_bytes())?;
    let mut p = vec![0x10];
    push_len(&mut p, body.len());
    p.extend_from_slice(&body);
    Ok(p)
}

/// Appends a QoS 0 PUBLISH of `payload` on `topic`.
pub fn push_publish(buf: &mut Vec<u8>, topic: &str, payload: &[u8]) -> Result<(), BenchError> {
    buf.push(0x30);
    push_len(buf, 2 + topic.len() + payload.len());
    push_str(buf, topic.as_bytes())?;
    buf.extend_from_slice(payload);
    Ok(())
}

impl RawPublisher {
    /// Connects and waits for a successful CONNACK.
    pub async fn connect(
        host: &str,
        port: u16,
        client_id: &str,
    ) -> Result<RawPublisher, BenchError> {
        let addr = format!("{host}:{port}");
        let failed = |reason: String| BenchError::MqttConnect {
            addr: addr.clone(),
            reason,
        };
        let packet = connect_packet(client_id)?;
        let mut stream =
            tokio::time::timeout(Duration::from_secs(10), TcpStream::connect((host, port)))
                .await
                .map_err(|_| failed("timed out".into()))?
                .map_err(|e| failed(e.to_string()))?;
        stream
            .set_nodelay(true)
            .map_err(|e| failed(e.to_string()))?;
        stream
            .write_all(&packet)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let mut connack = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut connack))
            .await
            .map_err(|_| failed("no CONNACK within 10 s".into()))?
            .map_err(|e| failed(format!("the connection closed instead of a CONNACK ({e})")))?;
        if connack[0] != 0x20 || connack[1] != 2 {
            return Err(failed(
                "it answered CONNECT with something other than a CONNACK".into(),
            ));
        }
        if connack[3] != 0 {
            return Err(failed(format!(
                "refused (CONNACK return code {})",
                connack[3]
            )));
        }
        let (mut read, write) = stream.into_split();
        let closed = Arc::new(AtomicBool::new(false));
        let flag = closed.clone();
        // Nothing is expected from the broker for QoS 0; read (and drop) whatever comes so the
        // socket never fills, and notice when it closes.
        let reader = tokio::spawn(async move {
            let mut sink = vec![0u8; 4096];
            while let Ok(n) = read.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
            flag.store(true, Ordering::Relaxed);
        });
        Ok(RawPublisher {
            write,
            buf: Vec::with_capacity(64 * 1024),
            closed,
            reader,
        })
    }

    /// Queues one message; [`Self::flush`] sends everything queued.
    pub fn push(&mut self, topic: &str, payload: &[u8]) -> Result<(), BenchError> {
        push_publish(&mut self.buf, topic, payload)
    }

    /// Writes everything queued, in one write where the socket takes it.
    pub async fn flush(&mut self) -> Result<(), BenchError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(BenchError::PublisherClosed);
        }
        self.write
            .write_all(&self.buf)
            .await
            .map_err(|_| BenchError::PublisherClosed)?;
        self.buf.clear();
        Ok(())
    }

    /// Sends DISCONNECT and closes.
    pub async fn disconnect(mut self) {
        let _ = self.write.write_all(&[0xE0, 0x00]).await;
        let _ = self.write.shutdown().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut self.reader).await;
        self.reader.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_are_encoded_as_mqtt_3_1_1() {
        let c = connect_packet("ab").unwrap();
        assert_eq!(
            c,
            [0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0x02, 0x58, 0, 2, b'a', b'b']
        );
        let mut p = Vec::new();
        push_publish(&mut p, "t/x", b"[1]").unwrap();
        assert_eq!(p, [0x30, 8, 0, 3, b't', b'/', b'x', b'[', b'1', b']']);
        let mut l = Vec::new();
        push_len(&mut l, 321);
        assert_eq!(l, [0xC1, 0x02]);
        let mut l = Vec::new();
        push_len(&mut l, 127);
        assert_eq!(l, [0x7F]);
    }
}
