//! Streamed replies: a method served with [`Da::serve_stream`] answers one request with many
//! items, which the caller of [`Da::call_stream`] reads as a [`CallStream`]. The wire format
//! and the flow control rules are [`iot_proto::rpc_stream`]; `docs/sdk.md` shows them.
//!
//! Here: the type-erased producers, the task that runs one served stream (in order, at most
//! `window` items ahead of the caller's acknowledgements, a deadline per item, cancellation),
//! and the caller's stream, which acknowledges items as its reader takes them (so a slow
//! reader slows the producer) and cancels the call when dropped. The DA's task routes the
//! messages between them and the broker (`core::streams`).

use std::fmt::Display;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use iot_proto::rpc::RpcErrorCode;
use iot_proto::rpc_stream::{StreamMsg, Window, DEFAULT_WINDOW, MAX_WINDOW};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::core::Cmd;
use crate::da::Da;
use crate::error::{DecodeError, Error};
use crate::rpc::{self, Failure, ReplyTo, Served};

/// How long a served stream waits for an acknowledgement at least, whatever the request's
/// deadline: a reader may pause; a caller gone for longer ends the stream.
pub(crate) const MIN_ACK_WAIT: Duration = Duration::from_secs(60);

pub(crate) type ItemStream = Pin<Box<dyn Stream<Item = Result<Value, Failure>> + Send>>;

/// A streamed method's producer, taking the request's `args`.
pub(crate) type StreamHandler = Arc<dyn Fn(Value) -> Result<ItemStream, Failure> + Send + Sync>;

/// Wraps a typed producer: `args` decode into `A` (else a `bad_request` error), each item is
/// encoded, an `Err` item ends the stream with a `handler` error.
pub(crate) fn stream_handler<A, T, E, F, S>(f: F) -> StreamHandler
where
    A: DeserializeOwned + Send + 'static,
    T: Serialize + 'static,
    E: Display + 'static,
    F: Fn(A) -> S + Send + Sync + 'static,
    S: Stream<Item = Result<T, E>> + Send + 'static,
{
    Arc::new(move |args: Value| {
        let a: A = rpc::decode_args(args)?;
        let items = f(a).map(|r| match r {
            Ok(t) => serde_json::to_value(t).map_err(|e| Failure {
                code: RpcErrorCode::Handler,
                reason: format!("cannot encode an item: {e}"),
            }),
            Err(e) => Err(Failure {
                code: RpcErrorCode::Handler,
                reason: e.to_string(),
            }),
        });
        Ok(Box::pin(items) as ItemStream)
    })
}

/// A message of a served stream, for the DA's task to publish.
#[derive(Debug)]
pub(crate) struct Produced {
    pub reply_to: ReplyTo,
    pub msg: StreamMsg,
}

/// The DA's task's hold on a served stream: the caller's acknowledgements (the number of
/// items that arrived) and its cancellation.
pub(crate) struct Serving {
    pub acked: watch::Sender<u64>,
    pub cancel: CancellationToken,
}

impl Drop for Serving {
    /// Forgotten (cancelled, or the DA stopped): the producer stops.
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// One served stream to run.
pub(crate) struct Job {
    pub handler: StreamHandler,
    pub args: Value,
    pub window: u32,
    /// Longest wait for each item from the producer.
    pub gap: Duration,
    pub reply_to: ReplyTo,
    pub permit: OwnedSemaphorePermit,
    pub out: mpsc::Sender<Produced>,
}

/// Runs `job` in a task of its own (in the DA's span).
pub(crate) fn spawn(job: Job) -> Serving {
    let (acked, acked_rx) = watch::channel(0);
    let cancel = CancellationToken::new();
    tokio::spawn(produce(job, acked_rx, cancel.clone()).in_current_span());
    Serving { acked, cancel }
}

async fn produce(job: Job, mut acked: watch::Receiver<u64>, cancel: CancellationToken) {
    let _permit = job.permit;
    let id = job.reply_to.id.clone();
    let send = |msg: StreamMsg| {
        let p = Produced {
            reply_to: job.reply_to.clone(),
            msg,
        };
        let out = job.out.clone();
        let cancel = cancel.clone();
        // Waits while the DA's connection is behind; a cancellation ends the wait.
        async move {
            tokio::select! {
                r = out.send(p) => r.is_ok(),
                () = cancel.cancelled() => false,
            }
        }
    };
    let failed = |seq, code, reason| StreamMsg::Failed {
        id: id.clone(),
        seq,
        code,
        reason,
    };
    let made = std::panic::catch_unwind(AssertUnwindSafe(|| (job.handler)(job.args)));
    let items = match made {
        Ok(Ok(items)) => items,
        Ok(Err(f)) => {
            send(failed(0, f.code, f.reason)).await;
            return;
        }
        Err(_) => {
            send(failed(
                0,
                RpcErrorCode::Handler,
                "the handler panicked".into(),
            ))
            .await;
            return;
        }
    };
    let mut items = AssertUnwindSafe(items).catch_unwind();
    let mut win = Window::new(job.window);
    let ack_wait = job.gap.max(MIN_ACK_WAIT);
    let ms = |d: Duration| d.as_millis();
    let last = loop {
        let n = *acked.borrow_and_update();
        if n > win.next() {
            break failed(
                win.next(),
                RpcErrorCode::BadRequest,
                format!("acknowledged {n} items, {} were sent", win.next()),
            );
        }
        if n > 0 {
            win.ack(n - 1);
        }
        if !win.may_send() {
            tokio::select! {
                () = cancel.cancelled() => return,
                r = tokio::time::timeout(ack_wait, acked.changed()) => match r {
                    Ok(Ok(())) => continue,
                    // The DA stopped.
                    Ok(Err(_)) => return,
                    Err(_) => break failed(win.next(), RpcErrorCode::Deadline, format!(
                        "no acknowledgement from the caller within {} ms", ms(ack_wait))),
                },
            }
        }
        let next = tokio::select! {
            () = cancel.cancelled() => return,
            r = tokio::time::timeout(job.gap, items.next()) => r,
        };
        let seq = win.next();
        match next {
            Ok(Some(Ok(Ok(item)))) => {
                win.sent();
                if !send(StreamMsg::Item {
                    id: id.clone(),
                    seq,
                    item,
                })
                .await
                {
                    return;
                }
            }
            Ok(None) => {
                break StreamMsg::End {
                    id: id.clone(),
                    seq,
                }
            }
            Ok(Some(Ok(Err(f)))) => break failed(seq, f.code, f.reason),
            Ok(Some(Err(_))) => {
                break failed(seq, RpcErrorCode::Handler, "the producer panicked".into())
            }
            Err(_) => {
                break failed(
                    seq,
                    RpcErrorCode::Deadline,
                    format!("the producer yielded nothing within {} ms", ms(job.gap)),
                )
            }
        }
    };
    // The producer is dropped before the last message goes out: it stops at once. A panic
    // in its drop must not lose that message.
    let _ = std::panic::catch_unwind(AssertUnwindSafe(move || drop(items)));
    send(last).await;
}

/// A piece of a stream for its caller, in order.
#[derive(Debug)]
pub(crate) enum Piece {
    Item(Value),
    End,
    Fail(Error),
}

/// What a caller's stream tells the DA's task.
#[derive(Debug)]
pub(crate) enum Note {
    /// The reader took every item up to `seq`.
    Ack { id: String, seq: u64 },
    /// The reader dropped the stream.
    Cancel { id: String },
}

/// A streamed call as the DA's task opened it.
pub(crate) struct Opened {
    pub id: String,
    pub rx: mpsc::Receiver<Piece>,
    pub notes: mpsc::UnboundedSender<Note>,
}

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
