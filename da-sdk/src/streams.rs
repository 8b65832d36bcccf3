//! Streamed replies: a method served with [`Da::serve_stream`] answers one request with many
//! items, which the caller of [`Da::call_stream`] reads as a [`CallStream`]. The wire format
//! and the flow control rules are [`iot_proto::rpc_stream`]; `docs/sdk.md` shows them.
//!
//! Here: the public calls and the caller's stream, which acknowledges items as its reader
//! takes them (so a slow reader slows the producer) and cancels the call when dropped. The
//! serving task and the messages to and from the DA's task are `produce`; the DA's task routes
//! them between the two and the broker (`core::streams`).

use std::fmt::Display;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use iot_proto::rpc_stream::{DEFAULT_WINDOW, MAX_WINDOW};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Sleep;

use crate::core::Cmd;
use crate::da::Da;
use crate::error::{DecodeError, Error};
use crate::produce::{Note, Piece};
use crate::rpc::{stream_handler, Served};

/// How a [`Da::call_stream_with`] call runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOptions {
    /// Items the server may send ahead of what the reader took (1 to 1024; default 16).
    pub window: u32,
    /// Longest wait for each item while the reader waits (default: the builder's
    /// `call_timeout`); also sent as the request's `deadline_ms`, the server's deadline for
    /// producing each item (at most 60 s). Halfway through, the reader repeats its last
    /// acknowledgement, in case one was lost with a connection.
    pub gap: Option<Duration>,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            window: DEFAULT_WINDOW,
            gap: None,
        }
    }
}

/// The items of a streamed call, in order, each once: `Ok(item)` until the server ends the
/// stream (then `None`), or one `Err` that ends it: [`Error::Remote`] (the server's error),
/// [`Error::Timeout`] (no item within the gap), [`Error::Decode`] (an item does not fit `T`;
/// the stream goes on), [`Error::Closed`]. Dropping it before the end cancels the call: the
/// server stops producing.
pub struct CallStream<T> {
    id: String,
    target: String,
    method: String,
    rx: mpsc::Receiver<Piece>,
    notes: mpsc::UnboundedSender<Note>,
    /// Acknowledge after this many items taken.
    ack_every: u64,
    taken: u64,
    acked: u64,
    gap: Duration,
    /// Armed while the reader waits with nothing buffered; `true` once half the gap passed
    /// (and the last acknowledgement was repeated).
    timer: Option<(Pin<Box<Sleep>>, bool)>,
    done: bool,
    _item: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for CallStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallStream")
            .field("target", &self.target)
            .field("method", &self.method)
            .field("taken", &self.taken)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<T> CallStream<T> {
    /// Items taken so far.
    pub fn taken(&self) -> u64 {
        self.taken
    }

    fn finish(&mut self) {
        self.done = true;
        self.rx.close();
    }
}

impl<T: DeserializeOwned> Stream for CallStream<T> {
    type Item = Result<T, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(Piece::Item(v))) => {
                this.timer = None;
                this.taken += 1;
                if this.taken - this.acked >= this.ack_every {
                    this.acked = this.taken;
                    let _ = this.notes.send(Note::Ack {
                        id: this.id.clone(),
                        seq: this.taken - 1,
                    });
                }
                Poll::Ready(Some(decode(&this.target, &this.method, v)))
            }
            Poll::Ready(Some(Piece::End)) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Piece::Fail(e))) => {
                this.finish();
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(Some(Err(Error::Closed)))
            }
            Poll::Pending => {
                let gap = this.gap;
                let half = gap / 2;
                let (timer, halfway) = this
                    .timer
                    .get_or_insert_with(|| (Box::pin(tokio::time::sleep(half)), false));
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                if !*halfway {
                    *halfway = true;
                    if this.taken > 0 {
                        let _ = this.notes.send(Note::Ack {
                            id: this.id.clone(),
                            seq: this.taken - 1,
                        });
                    }
                    timer
                        .as_mut()
                        .reset(tokio::time::Instant::now() + (gap - half));
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
                let _ = this.notes.send(Note::Cancel {
                    id: this.id.clone(),
                });
                this.finish();
                Poll::Ready(Some(Err(Error::Timeout {
                    target: this.target.clone(),
                    method: this.method.clone(),
                    timeout_ms: u64::try_from(gap.as_millis()).unwrap_or(u64::MAX),
                })))
            }
        }
    }
}

impl<T> Drop for CallStream<T> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.notes.send(Note::Cancel {
                id: self.id.clone(),
            });
        }
    }
}

fn decode<T: DeserializeOwned>(target: &str, method: &str, v: Value) -> Result<T, Error> {
    T::deserialize(&v).map_err(|e| {
        Error::Decode(DecodeError {
            what: format!("an item of `{method}` from `{target}`"),
            expected: std::any::type_name::<T>(),
            reason: e.to_string(),
            payload: crate::error::brief(v.to_string().as_bytes()),
        })
    })
}

impl Da {
    /// Serves `method` as a stream: each request runs `producer(args)` and its items go to
    /// the caller one by one ([`Da::call_stream`], or any MQTT client speaking the format in
    /// `docs/sdk.md`), at most the caller's window ahead of what it has read. `args` decode
    /// into `A` (else a `bad_request` error); an `Err` item, a panic, or no item within the
    /// request's deadline (`deadline_ms`, at most and by default 60 s) ends the stream with an
    /// error for the caller, as does a caller silent for 60 s with the window full; a
    /// cancelled call drops the producer. A plain call of the method (not a stream) gets
    /// `bad_request`; a repeated stream request (same id) while its stream runs is ignored.
    pub async fn serve_stream<A, T, E, F, S>(&self, method: &str, producer: F) -> Result<(), Error>
    where
        A: DeserializeOwned + Send + 'static,
        T: Serialize + 'static,
        E: Display + 'static,
        F: Fn(A) -> S + Send + Sync + 'static,
        S: Stream<Item = Result<T, E>> + Send + 'static,
    {
        iot_proto::topics::check_level(method).map_err(|e| Error::InvalidName(e.to_string()))?;
        let method = method.to_owned();
        let handler = Served::Stream(stream_handler(producer));
        self.ask(|reply| Cmd::Serve {
            method,
            handler,
            reply,
        })
        .await
    }

    /// Calls the streamed `method` on `target` with the default window (16) and the builder's
    /// `call_timeout` as the longest gap between items. See [`CallStream`].
    pub async fn call_stream<A: Serialize, T: DeserializeOwned>(
        &self,
        target: &str,
        method: &str,
        args: A,
    ) -> Result<CallStream<T>, Error> {
        self.call_stream_with(target, method, args, StreamOptions::default())
            .await
    }

    /// [`Da::call_stream`] with its window and gap given.
    pub async fn call_stream_with<A: Serialize, T: DeserializeOwned>(
        &self,
        target: &str,
        method: &str,
        args: A,
        options: StreamOptions,
    ) -> Result<CallStream<T>, Error> {
        let args = serde_json::to_value(args).map_err(|e| Error::Encode(e.to_string()))?;
        let window = options.window.clamp(1, MAX_WINDOW);
        let gap = options.gap.unwrap_or(self.options().call_timeout);
        let (t, m) = (target.to_owned(), method.to_owned());
        let opened = self
            .ask(|reply| Cmd::CallStream {
                target: t,
                method: m,
                args,
                window,
                gap,
                reply,
            })
            .await?;
        Ok(CallStream {
            id: opened.id,
            target: target.to_owned(),
            method: method.to_owned(),
            rx: opened.rx,
            notes: opened.notes,
            ack_every: u64::from(window / 2).max(1),
            taken: 0,
            acked: 0,
            gap,
            timer: None,
            done: false,
            _item: PhantomData,
        })
    }
}
