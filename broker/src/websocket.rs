//! MQTT over WebSocket, what both cores' listeners share: the upgrade (the `mqtt`
//! subprotocol is required and echoed) and tungstenite's settings. The rmqtt core bridges
//! the upgraded connection to a loopback listener (`embedded/ws.rs`); the native core reads
//! it as a byte stream (`native/io.rs`).

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

/// Bytes tungstenite reads from the socket at a time.
pub(crate) const READ_CHUNK: usize = 4096;
/// Smallest limit of a WebSocket message and frame: MQTT clients may put several packets in
/// one message (MQTT.js in a browser joins buffered writes), so it is not the packet limit.
const MIN_MESSAGE_BYTES: usize = 16 << 20;

/// tungstenite's settings for a broker whose largest packet is `max_packet_bytes`.
fn config(max_packet_bytes: usize) -> WebSocketConfig {
    let mut config = WebSocketConfig::default();
    // tungstenite reserves 128 KiB per connection by default; MQTT packets are mostly small.
    config.read_buffer_size = READ_CHUNK;
    // Each message is written at once (flow control waits for it to be written).
    config.write_buffer_size = 0;
    let limit = MIN_MESSAGE_BYTES.max(max_packet_bytes.saturating_mul(4));
    config.max_message_size = Some(limit);
    config.max_frame_size = Some(limit);
    config
}

/// The WebSocket upgrade of `stream` (refused without the `mqtt` subprotocol).
pub(crate) async fn upgrade<S>(
    stream: S,
    max_packet_bytes: usize,
) -> Result<WebSocketStream<S>, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = config(max_packet_bytes);
    tokio_tungstenite::accept_hdr_async_with_config(stream, choose_protocol, Some(config))
        .await
        .map_err(|e| format!("WebSocket upgrade: {e}"))
}

/// The `Sec-WebSocket-Protocol` MQTT asks for (`mqtt`; `mqttv3.1` of old clients), echoed;
/// without one the upgrade is refused. (The error type is tungstenite's callback's.)
#[allow(clippy::result_large_err)]
fn choose_protocol(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    let offered = req
        .headers()
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find(|p| *p == "mqtt" || *p == "mqttv3.1");
    match offered {
        Some(p) => {
            resp.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_static(if p == "mqtt" { "mqtt" } else { "mqttv3.1" }),
            );
            Ok(resp)
        }
        None => {
            let mut refused = ErrorResponse::new(Some(
                "MQTT over WebSocket needs the subprotocol `mqtt` (Sec-WebSocket-Protocol)".into(),
            ));
            *refused.status_mut() = StatusCode::BAD_REQUEST;
            Err(refused)
        }
    }
}
