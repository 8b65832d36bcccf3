//! One client connection of the native core: a single task that owns the socket, reads with
//! a buffer that exists only while bytes are being decoded, writes from a buffer that exists
//! only while bytes are waiting, and moves messages between the socket and its session.
//!
//! An idle TCP connection therefore holds no I/O buffer at all: its cost is this task's
//! state, the socket and the session (docs/BENCHMARKS.md, the native core's figures). Reading
//! waits on the socket's readiness, not on a buffer; a read takes what is there into a
//! buffer sized by what the last reads brought (1 KiB to 64 KiB). TLS and WebSocket
//! connections are byte streams with buffers of their own (`io.rs`).

use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use rmqtt_codec::v5::{ConnectAckReason, DisconnectReasonCode};
use tokio::time::{sleep, timeout, Instant};
use tokio_util::sync::CancellationToken;

use super::connect::{authorize, release, take, Hello, Taken};
use super::core::{Core, Limits};
use super::io::{Io, Ready};
use super::packets::{handle, End, Flow, Link};
use super::session::{Kick, Resend};
use super::wire::{ConnAck, Out, Wire, WireError};

/// Smallest and largest read.
const READ_MIN: usize = 1024;
const READ_MAX: usize = 64 * 1024;
/// Messages are taken from the session while less than this waits to be written.
const WRITE_HIGH: usize = 64 * 1024;
/// How long the last packets (a DISCONNECT's reason) may take to be written at the end.
const LAST_WRITE: Duration = Duration::from_secs(1);

/// Serves one accepted connection until it ends; its CONNECT must be read by `deadline`
/// (`handshake_timeout_ms` after it was accepted, TLS handshake and WebSocket upgrade
/// included).
pub(crate) async fn serve(
    core: Arc<Core>,
    mut io: Io,
    peer: SocketAddr,
    shutdown: CancellationToken,
    deadline: Instant,
) {
    // The handshake's state (the CONNECT, the credentials check) lives in its own
    // allocation, freed once the client is in: it would otherwise size every idle task.
    // Shutdown does not wait for a CONNECT (the session is taken without an await after it).
    let start = tokio::select! {
        s = Box::pin(handshake(&core, &mut io, peer, deadline)) => s,
        () = shutdown.cancelled() => None,
    };
    let Some(start) = start else {
        return;
    };
    let Started {
        mut wire,
        rbuf,
        wbuf,
        hello,
        taken,
    } = start;
    let Taken {
        session,
        gen,
        kicked,
        ..
    } = taken;
    // Only the will and the keep-alive outlive the handshake.
    let (will, keep_alive, mut link) = {
        let h = hello;
        let link = Link::new(core.clone(), session.clone(), gen, h.username.as_deref());
        (h.will.map(Box::new), h.keep_alive, link)
    };
    core.counts.connected.fetch_add(1, Ordering::Relaxed);
    let end = run(
        &mut io, &mut wire, &mut link, rbuf, wbuf, kicked, &shutdown, keep_alive,
    )
    .await;
    core.counts.connected.fetch_sub(1, Ordering::Relaxed);
    tracing::debug!(%peer, client.id = %session.client_id, end = ?end, "MQTT client disconnected");

    if !matches!(end, End::Normal | End::Kicked(Kick::Shutdown)) {
        if let Some(will) = will {
            Box::pin(link.publish_will(*will)).await;
        }
    }
    link.detach();
}

/// A connection past its CONNACK (queued in `wbuf`, with what its session had in flight).
struct Started {
    wire: Wire,
    rbuf: BytesMut,
    wbuf: BytesMut,
    hello: Hello,
    taken: Taken,
}

/// Reads the CONNECT, checks it, takes the session and queues the CONNACK; `None` once a
/// refused or broken connection has been answered.
async fn handshake(
    core: &Arc<Core>,
    io: &mut Io,
    peer: SocketAddr,
    deadline: Instant,
) -> Option<Started> {
    let mut rbuf = BytesMut::new();
    let read = tokio::time::timeout_at(deadline, read_connect(io, &mut rbuf, &core.limits));
    let (mut wire, connect) = match read.await {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "MQTT connection closed before its CONNECT");
            return None;
        }
        Err(_) => {
            tracing::debug!(%peer, "MQTT connection sent no CONNECT in time");
            return None;
        }
    };
    let accepted = match Hello::new(connect, core) {
        Ok(mut h) => match authorize(core, &h).await {
            Ok(()) => {
                h.password = None; // not kept past its check
                take(core, &h).map(|t| (h, t))
            }
            Err(code) => Err(code),
        },
        Err(code) => Err(code),
    };
    let mut wbuf = BytesMut::new();
    let (hello, taken) = match accepted {
        Ok(ok) => ok,
        Err(code) => {
            let _ = wire.connack(connack(core, code, false, None), &mut wbuf);
            let _ = timeout(LAST_WRITE, io.finish(&mut wbuf)).await;
            tracing::debug!(%peer, reason = ?code, "MQTT CONNECT refused");
            return None;
        }
    };
    let assigned = hello.assigned.then(|| hello.client_id.clone());
    let mut ack = connack(core, ConnectAckReason::Success, taken.present, assigned);
    if hello.v5 && !hello.expiry.is_zero() {
        ack.session_expiry = u32::try_from(hello.expiry.as_secs()).ok();
    }
    if wire.connack(ack, &mut wbuf).is_err() {
        // E.g. an MQTT 5 Maximum Packet Size too small for any CONNACK: leave the session
        // as any ended connection does, so that it cannot stay attached for ever.
        release(core, &taken.session, taken.gen);
        return None;
    }
    // What was in flight when the last connection ended goes first, in order; what no longer
    // fits the client's Maximum Packet Size is discarded (it would hold the window for ever).
    let resend = taken.session.state().resend();
    for r in resend {
        let (out, pid) = match r {
            Resend::Publish(p) => {
                let pid = p.packet_id;
                (Out::Publish(p), pid)
            }
            Resend::Release(pid) => (Out::PubRel(pid), None),
        };
        if wire.encode(out, &mut wbuf).is_err() {
            if let Some(pid) = pid {
                taken.session.state().discard(pid);
            }
            core.counts.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
    tracing::debug!(%peer, client.id = %taken.session.client_id, session.present = taken.present, "MQTT client connected");
    Some(Started {
        wire,
        rbuf,
        wbuf,
        hello,
        taken,
    })
}

/// The connection's loop after the CONNACK.
#[allow(clippy::too_many_arguments)]
async fn run(
    io: &mut Io,
    wire: &mut Wire,
    link: &mut Link,
    mut rbuf: BytesMut,
    mut wbuf: BytesMut,
    mut kicked: tokio::sync::oneshot::Receiver<Kick>,
    shutdown: &CancellationToken,
    keep_alive: u16,
) -> End {
    // MQTT: the server closes a connection silent for 1.5 keep-alive periods.
    let grace = (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500));
    let far = Duration::from_secs(86_400 * 365);
    let mut deadline = pin!(sleep(grace.unwrap_or(far)));
    let mut read_size = READ_MIN;
    // Reading and writing take turns at first refusal, so neither starves the other.
    let mut read_first = false;
    // The client closed its side (EOF, a WebSocket close): what it is owed still goes out.
    let mut eof = false;
    let mut more = true;
    // Packets sent right behind the CONNECT, in the same read.
    let early = match rbuf.is_empty() {
        true => None,
        false => match decode_all(wire, link, &mut rbuf, &mut wbuf).await {
            Flow::End(end) => Some(end),
            Flow::Continue { .. } => None,
        },
    };
    if rbuf.is_empty() {
        rbuf = BytesMut::new();
    }
    let end = if let Some(end) = early {
        end
    } else {
        loop {
            if more && wbuf.len() < WRITE_HIGH {
                more = link.fill(wire, &mut wbuf);
            }
            if wbuf.is_empty() && wbuf.capacity() > 0 {
                wbuf = BytesMut::new();
            }
            let session = link.session.clone();
            // Reading pauses while much waits to be written to a client that does not read.
            let reading = wbuf.len() < WRITE_HIGH * 4;
            tokio::select! {
                biased;
                k = &mut kicked => break End::Kicked(k.unwrap_or(Kick::TakenOver)),
                () = shutdown.cancelled() => break End::Kicked(Kick::Shutdown),
                r = io.ready(&mut rbuf, read_size, &wbuf, reading, read_first), if reading || io.wants_write(&wbuf) => {
                    let n = match r {
                        Ok(Ready::Wrote(n)) => {
                            wbuf.advance(n);
                            read_first = true;
                            continue;
                        }
                        Ok(Ready::Flushed) => continue,
                        Ok(Ready::Read(0)) => {
                            eof = true;
                            break End::Lost;
                        }
                        Err(_) => break End::Lost,
                        Ok(Ready::Read(n)) => n,
                    };
                    read_first = false;
                    read_size = if n >= read_size { (read_size * 2).min(READ_MAX) } else { read_size };
                    if let Some(g) = grace {
                        deadline.as_mut().reset(Instant::now() + g);
                    }
                    match decode_all(wire, link, &mut rbuf, &mut wbuf).await {
                        Flow::Continue { acked } => more |= acked,
                        Flow::End(end) => break end,
                    }
                    if rbuf.is_empty() {
                        rbuf = BytesMut::new();
                        read_size = READ_MIN;
                    }
                }
                () = session.wake.notified(), if !more => more = true,
                () = &mut deadline => {
                // Reading pauses while much waits to be written: bytes the client sent in
                // the meantime (a PINGREQ) are unread, not missing.
                let sent = io.unread();
                match grace {
                    Some(g) if sent => deadline.as_mut().reset(Instant::now() + g),
                    _ => break End::KeepAlive,
                }
            }
            }
        }
    };
    // MQTT 5 clients are told why the server closes (3.14): queued with what was waiting.
    let reason = match end {
        End::Kicked(Kick::TakenOver) => Some(DisconnectReasonCode::SessionTakenOver),
        End::Kicked(Kick::Shutdown) => Some(DisconnectReasonCode::ServerShuttingDown),
        End::KeepAlive => Some(DisconnectReasonCode::KeepAliveTimeout),
        End::Refused(r) => Some(r),
        End::Normal | End::WithWill | End::Lost => None,
    };
    if let Some(r) = reason {
        let _ = wire.encode(Out::Disconnect(r), &mut wbuf);
    }
    // Then the sending side is closed (a WebSocket close frame, TLS close_notify).
    // After a client's EOF only a TLS or WebSocket close is owed (a plain TCP peer that
    // closed gets nothing, and its will is not held back for it).
    if end != End::Lost || (eof && io.is_stream()) {
        let _ = Box::pin(timeout(LAST_WRITE, io.finish(&mut wbuf))).await;
    }
    end
}

/// Decodes and handles every complete packet in `rbuf`.
async fn decode_all(
    wire: &mut Wire,
    link: &mut Link,
    rbuf: &mut BytesMut,
    wbuf: &mut BytesMut,
) -> Flow {
    let mut acked = false;
    loop {
        let packet = match wire.decode(rbuf) {
            Ok(Some(p)) => p,
            Ok(None) => return Flow::Continue { acked },
            Err(WireError { reason, what }) => {
                tracing::debug!(client.id = %link.session.client_id, error = %what, "MQTT packet refused");
                return Flow::End(End::Refused(reason));
            }
        };
        match handle(link, wire, packet, wbuf).await {
            Flow::Continue { acked: a } => acked |= a,
            end @ Flow::End(_) => return end,
        }
    }
}

/// Reads until a whole CONNECT is in `buf`.
async fn read_connect(
    io: &mut Io,
    buf: &mut BytesMut,
    limits: &Limits,
) -> io::Result<(Wire, super::wire::Connect)> {
    loop {
        let found = Wire::connect(buf, limits.max_packet, limits.max_aliases)
            .map_err(|e| io::Error::other(e.what))?;
        if let Some(found) = found {
            return Ok(found);
        }
        if io.read(buf, READ_MIN).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

fn connack(
    core: &Core,
    code: ConnectAckReason,
    session_present: bool,
    assigned_client_id: Option<bytestring::ByteString>,
) -> ConnAck {
    ConnAck {
        code,
        session_present,
        session_expiry: None,
        receive_max: std::num::NonZeroU16::new(core.limits.inflight)
            .unwrap_or(std::num::NonZeroU16::MIN),
        max_packet: core.limits.max_packet,
        assigned_client_id,
        topic_alias_max: core.limits.max_aliases,
    }
}
