//! The serving side of a streamed reply, and the messages between a caller's
//! [`crate::CallStream`] and the DA's task: the task that runs one served stream (items in
//! order, at most `window` ahead of the caller's acknowledgements, a deadline per item,
//! cancellation), and what the DA's task hands the reader. Imports nothing of the DA's task
//! (`core`), which routes these messages between them and the broker (`core::streams`).

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::StreamExt;
use iot_proto::rpc::RpcErrorCode;
use iot_proto::rpc_stream::{StreamMsg, Window};
use serde_json::Value;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::error::Error;
use crate::rpc::{ReplyTo, StreamHandler};

/// How long a served stream waits for an acknowledgement at least, whatever the request's
/// deadline: a reader may pause; a caller gone for longer ends the stream.
pub(crate) const MIN_ACK_WAIT: Duration = Duration::from_secs(60);

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
