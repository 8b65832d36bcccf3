//! Request/response between DAs and apps: the type-erased handlers behind
//! [`crate::Da::serve`] and the task that runs one request. The wire format is
//! [`iot_proto::rpc`]; topics are `iottalk/rpc/<target>/req` and the caller's
//! `iottalk/rpc/<caller>/res/<nonce>` (see `docs/sdk.md`).

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use iot_proto::rpc::{RpcErrorCode, RpcOutcome};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tracing::Instrument;

/// Longest a handler may run when the request names no deadline.
pub(crate) const DEFAULT_HANDLER_DEADLINE: Duration = Duration::from_secs(60);

/// How a handler failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub code: RpcErrorCode,
    pub reason: String,
}

pub(crate) type HandlerFuture = Pin<Box<dyn Future<Output = Result<Value, Failure>> + Send>>;

/// A method's handler, taking the request's `args`.
pub(crate) type Handler = Arc<dyn Fn(Value) -> HandlerFuture + Send + Sync>;

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
        let a: A = decode_args(args)?;
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

/// What a method is served with: a handler answering once, or a stream of items
/// ([`crate::streams`]).
#[derive(Clone)]
pub(crate) enum Served {
    Once(Handler),
    Stream(StreamHandler),
}

/// Decodes a request's `args` into the handler's type, or says why they do not fit.
pub(crate) fn decode_args<A: DeserializeOwned>(args: Value) -> Result<A, Failure> {
    serde_json::from_value(args).map_err(|e| Failure {
        code: RpcErrorCode::BadRequest,
        reason: format!(
            "the arguments do not fit `{}`: {e}",
            std::any::type_name::<A>()
        ),
    })
}

/// Wraps a typed handler: decodes `args` into `A` (a `bad_request` reply when they do not
/// fit), runs it, and encodes its `R` (or its error's text as a `handler` error).
pub(crate) fn handler<A, R, E, F, Fut>(f: F) -> Handler
where
    A: DeserializeOwned + Send + 'static,
    R: Serialize + 'static,
    E: Display + 'static,
    F: Fn(A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
{
    let f = Arc::new(f);
    Arc::new(move |args: Value| {
        let f = f.clone();
        Box::pin(async move {
            let a: A = decode_args(args)?;
            let r = f(a).await.map_err(|e| Failure {
                code: RpcErrorCode::Handler,
                reason: e.to_string(),
            })?;
            serde_json::to_value(r).map_err(|e| Failure {
                code: RpcErrorCode::Handler,
                reason: format!("cannot encode the result: {e}"),
            })
        }) as HandlerFuture
    })
}

/// Where the reply to one request goes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ReplyTo {
    pub topic: String,
    pub id: String,
    /// MQTT 5 correlation data, echoed as sent.
    pub correlation: Option<Bytes>,
}

/// A finished request, handed back to the DA's task to publish its reply.
#[derive(Debug)]
pub(crate) struct Done {
    pub reply_to: ReplyTo,
    pub outcome: RpcOutcome,
}

/// Runs one request in its own task: the handler in a nested task (so a panic becomes an
/// error reply), cut off at the deadline.
pub(crate) fn spawn(
    handler: Handler,
    args: Value,
    deadline: Duration,
    reply_to: Option<ReplyTo>,
    permit: OwnedSemaphorePermit,
    done: mpsc::Sender<Done>,
) {
    // Both tasks run in the span of the task that spawns them (the DA's, which carries
    // `da.id`), so the handler's own events have that context too.
    let task = async move {
        let _permit = permit;
        let job = tokio::spawn(handler(args).in_current_span());
        let abort = job.abort_handle();
        let outcome = match tokio::time::timeout(deadline, job).await {
            Ok(Ok(Ok(v))) => RpcOutcome::Ok(v),
            Ok(Ok(Err(f))) => RpcOutcome::Error {
                code: f.code,
                reason: f.reason,
            },
            Ok(Err(_)) => RpcOutcome::Error {
                code: RpcErrorCode::Handler,
                reason: "the handler panicked".into(),
            },
            Err(_) => {
                abort.abort();
                RpcOutcome::Error {
                    code: RpcErrorCode::Deadline,
                    reason: format!(
                        "the handler did not finish within {} ms",
                        deadline.as_millis()
                    ),
                }
            }
        };
        if let Some(reply_to) = reply_to {
            // Fails only when the DA has stopped; there is nobody to reply through then.
            let _ = done.send(Done { reply_to, outcome }).await;
        }
    };
    tokio::spawn(task.in_current_span());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn typed_handlers_decode_args_and_report_failures() {
        let h = handler(|n: i64| async move {
            if n < 0 {
                Err(format!("{n} is negative"))
            } else {
                Ok(n * 2)
            }
        });
        assert_eq!(h(Value::from(21)).await, Ok(Value::from(42)));
        assert_eq!(
            h(Value::from(-1)).await,
            Err(Failure {
                code: RpcErrorCode::Handler,
                reason: "-1 is negative".into()
            })
        );
        let e = h(Value::from("x")).await.unwrap_err();
        assert_eq!(e.code, RpcErrorCode::BadRequest);
        assert!(e.reason.contains("i64"), "{}", e.reason);
    }

    #[tokio::test]
    async fn panics_and_deadlines_become_error_replies() {
        let (tx, mut rx) = mpsc::channel(4);
        let slots = Arc::new(tokio::sync::Semaphore::new(2));
        let reply_to = || {
            Some(ReplyTo {
                topic: "t".into(),
                id: "1".into(),
                correlation: None,
            })
        };
        let panics: Handler = Arc::new(|_| Box::pin(async { panic!("boom") }));
        spawn(
            panics,
            Value::Null,
            Duration::from_secs(5),
            reply_to(),
            slots.clone().try_acquire_owned().unwrap(),
            tx.clone(),
        );
        let d = rx.recv().await.unwrap();
        assert!(matches!(
            d.outcome,
            RpcOutcome::Error {
                code: RpcErrorCode::Handler,
                ..
            }
        ));
        let slow: Handler = Arc::new(|_| {
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(Value::Null)
            })
        });
        spawn(
            slow,
            Value::Null,
            Duration::from_millis(20),
            reply_to(),
            slots.clone().try_acquire_owned().unwrap(),
            tx,
        );
        let d = rx.recv().await.unwrap();
        assert!(matches!(
            d.outcome,
            RpcOutcome::Error {
                code: RpcErrorCode::Deadline,
                ..
            }
        ));
        assert_eq!(slots.available_permits(), 2, "permits are returned");
    }
}
