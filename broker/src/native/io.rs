//! A native-core connection's transport: plain TCP, read by readiness so that an idle
//! connection holds no read buffer, or a byte stream (TLS, WebSocket, WebSocket over TLS)
//! read into a small buffer. `conn.rs` sees one [`Io`] whatever the listener.
//!
//! MQTT over WebSocket is a byte stream carried in binary messages (MQTT 6.0), so
//! [`WsBytes`] turns a WebSocket into one: empty messages are nothing, a message may hold
//! several packets or part of one, pings are answered by tungstenite on its next read or
//! write, and a text message ends the connection. What the broker writes goes out as one
//! binary message per write.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A byte stream over a TCP connection.
pub(crate) trait Duplex: AsyncRead + AsyncWrite + Send + Unpin {
    /// The TCP connection underneath (to peek at what arrived, unread).
    fn tcp(&self) -> &TcpStream;
}

impl Duplex for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Duplex for TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// One connection's transport.
pub(crate) enum Io {
    Tcp(TcpStream),
    /// With whether something written since the last flush may still be buffered.
    Stream(Box<dyn Duplex>, bool),
}

/// What [`Io::ready`] did.
#[derive(Debug)]
pub(crate) enum Ready {
    /// Bytes read into the read buffer (0: the client closed).
    Read(usize),
    /// Bytes of the write buffer written.
    Wrote(usize),
    /// A byte stream's buffered bytes were flushed.
    Flushed,
}

impl Io {
    pub(crate) fn stream(s: impl Duplex + 'static) -> Io {
        Io::Stream(Box::new(s), false)
    }

    /// Writes some of `wbuf` (or flushes what was written) or reads into `rbuf` (reserving
    /// `size` first; with `read`), whichever the transport is ready for first; with
    /// `read_first` reading is tried first (the caller alternates, so that a client that
    /// reads as fast as the broker writes is still read from). Cancel-safe: nothing is read
    /// or written unless it returns. The caller must want something: reading, or what
    /// [`wants_write`](Self::wants_write) says (otherwise it waits for ever).
    pub(crate) async fn ready(
        &mut self,
        rbuf: &mut BytesMut,
        size: usize,
        wbuf: &[u8],
        read: bool,
        read_first: bool,
    ) -> io::Result<Ready> {
        debug_assert!(read || self.wants_write(wbuf));
        poll_fn(|cx| {
            if read_first && read {
                if let Poll::Ready(r) = self.poll_read(cx, rbuf, size) {
                    return Poll::Ready(r);
                }
            }
            if let Poll::Ready(r) = self.poll_write(cx, wbuf) {
                return Poll::Ready(r);
            }
            if !read_first && read {
                return self.poll_read(cx, rbuf, size);
            }
            Poll::Pending
        })
        .await
    }

    /// Whether [`ready`](Self::ready) has anything to do besides reading.
    pub(crate) fn wants_write(&self, wbuf: &[u8]) -> bool {
        !wbuf.is_empty() || matches!(self, Io::Stream(_, true))
    }

    /// Writes some of `wbuf`, or flushes a byte stream once it is all written; `Pending` (and
    /// no waker) when there is nothing to do.
    fn poll_write(&mut self, cx: &mut Context<'_>, wbuf: &[u8]) -> Poll<io::Result<Ready>> {
        match self {
            Io::Tcp(s) if !wbuf.is_empty() => Pin::new(s).poll_write(cx, wbuf).map_ok(Ready::Wrote),
            Io::Tcp(_) => Poll::Pending,
            Io::Stream(s, unflushed) => {
                if !wbuf.is_empty() {
                    let n = ready!(Pin::new(&mut **s).poll_write(cx, wbuf))?;
                    *unflushed = true;
                    Poll::Ready(Ok(Ready::Wrote(n)))
                } else if *unflushed {
                    ready!(Pin::new(&mut **s).poll_flush(cx))?;
                    *unflushed = false;
                    Poll::Ready(Ok(Ready::Flushed))
                } else {
                    Poll::Pending
                }
            }
        }
    }

    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        rbuf: &mut BytesMut,
        size: usize,
    ) -> Poll<io::Result<Ready>> {
        match self {
            Io::Tcp(s) => loop {
                ready!(s.poll_read_ready(cx))?;
                // Ready: only now is there a buffer to read into.
                rbuf.reserve(size);
                match s.try_read_buf(rbuf) {
                    Ok(n) => return Poll::Ready(Ok(Ready::Read(n))),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if rbuf.is_empty() {
                            *rbuf = BytesMut::new();
                        }
                    }
                    Err(e) => return Poll::Ready(Err(e)),
                }
            },
            Io::Stream(s, _) => {
                rbuf.reserve(size);
                let n = ready!(tokio_util::io::poll_read_buf(Pin::new(&mut **s), cx, rbuf))?;
                Poll::Ready(Ok(Ready::Read(n)))
            }
        }
    }

    /// Reads at least one byte into `buf` (0: the client closed).
    pub(crate) async fn read(&mut self, buf: &mut BytesMut, size: usize) -> io::Result<usize> {
        loop {
            if let Ready::Read(n) = self.ready(buf, size, &[], true, true).await? {
                return Ok(n);
            }
        }
    }

    /// Writes all of `buf`, flushes and closes the sending side (a WebSocket's close, TLS's
    /// close_notify, TCP's FIN).
    /// The shutdown is tried even when the write fails: after a client's WebSocket close
    /// nothing more may be sent, but the close reply tungstenite queued must go out.
    pub(crate) async fn finish(&mut self, buf: &mut BytesMut) -> io::Result<()> {
        let written = self.write_all(buf).await;
        let closed = match self {
            Io::Tcp(s) => s.shutdown().await,
            Io::Stream(s, _) => s.shutdown().await,
        };
        written.and(closed)
    }

    /// Whether this is a byte stream with a closing handshake of its own (TLS, WebSocket).
    pub(crate) fn is_stream(&self) -> bool {
        matches!(self, Io::Stream(..))
    }

    /// Writes and flushes all of `buf`.
    pub(crate) async fn write_all(&mut self, buf: &mut BytesMut) -> io::Result<()> {
        let mut none = BytesMut::new();
        while self.wants_write(buf) {
            if let Ready::Wrote(n) = self.ready(&mut none, 0, buf, false, false).await? {
                buf.advance(n);
            }
        }
        Ok(())
    }

    /// Whether bytes have arrived that are not read yet (without reading them).
    pub(crate) fn unread(&self) -> bool {
        let tcp = match self {
            Io::Tcp(s) => s,
            Io::Stream(s, _) => s.tcp(),
        };
        let mut one = [0u8; 1];
        matches!(
            futures::FutureExt::now_or_never(tcp.peek(&mut one)),
            Some(Ok(n)) if n > 0
        )
    }
}

/// The largest WebSocket message the broker writes (a longer write goes out in several).
const WS_WRITE_MAX: usize = 16 * 1024;

/// A WebSocket as the byte stream of MQTT over WebSocket.
pub(crate) struct WsBytes<S> {
    ws: WebSocketStream<S>,
    /// The unread rest of the last binary message.
    pending: Bytes,
}

impl<S> WsBytes<S> {
    pub(crate) fn new(ws: WebSocketStream<S>) -> Self {
        Self {
            ws,
            pending: Bytes::new(),
        }
    }
}

impl<S: Duplex> Duplex for WsBytes<S> {
    fn tcp(&self) -> &TcpStream {
        self.ws.get_ref().tcp()
    }
}

fn ws_error(e: tokio_tungstenite::tungstenite::Error) -> io::Error {
    io::Error::other(e)
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsBytes<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending[..n]);
                this.pending.advance(n);
                if this.pending.is_empty() {
                    this.pending = Bytes::new(); // frees the message
                }
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                // An empty message is no bytes at all (MQTT.js sends them).
                Some(Ok(Message::Binary(data))) => this.pending = data,
                // Answered (a ping) or ignored by tungstenite.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                // MQTT 6.0: anything but binary data closes the network connection.
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a text frame (MQTT over WebSocket needs binary frames)",
                    )))
                }
                // The end of the stream.
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(ws_error(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsBytes<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let ws = &mut self.get_mut().ws;
        ready!(Pin::new(&mut *ws).poll_ready(cx)).map_err(ws_error)?;
        // At most WS_WRITE_MAX a message: tungstenite's write buffer keeps the capacity of
        // the largest message it wrote.
        let n = buf.len().min(WS_WRITE_MAX);
        let message = Message::Binary(Bytes::copy_from_slice(&buf[..n]));
        Pin::new(ws).start_send(message).map_err(ws_error)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_flush(cx)
            .map_err(ws_error)
    }

    /// The WebSocket close (or the reply to the client's), then the stream's own shutdown
    /// (TLS's close_notify).
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        use tokio_tungstenite::tungstenite::Error;
        let this = self.get_mut();
        match ready!(Pin::new(&mut this.ws).poll_close(cx)) {
            Ok(()) | Err(Error::ConnectionClosed | Error::AlreadyClosed) => {}
            Err(e) => return Poll::Ready(Err(ws_error(e))),
        }
        Pin::new(this.ws.get_mut()).poll_shutdown(cx)
    }
}
