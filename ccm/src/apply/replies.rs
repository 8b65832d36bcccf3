//! Nonce-matched replies of an MQTT API, shared by the graph-API client ([`super::csm`]) and
//! the ODF-write client ([`super::odf`]): one subscription to the client's reply topic, made
//! before anything is sent; a task handing each reply to the request waiting for its `nonce`
//! (aborted when the last clone is dropped); and a request that adds a fresh nonce, publishes
//! (QoS 2) and waits at most a timeout. Not here: what a reply means.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use iot_broker::{BrokerHandle, Message, QoS};
use serde_json::{Map, Value};
use tokio::sync::oneshot;

/// Requests waiting for their reply, by nonce. A std mutex: held for an insert or a remove,
/// never across an `.await`.
type Waiting<R> = Arc<Mutex<HashMap<String, oneshot::Sender<R>>>>;

fn lock<R>(w: &Waiting<R>) -> MutexGuard<'_, HashMap<String, oneshot::Sender<R>>> {
    w.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Aborts the reply task when the client is dropped.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why a request got no reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NoReply {
    /// The broker did not take the request (its error).
    Broker(String),
    /// Nothing came back in time.
    Timeout,
}

/// The replies of one API client; cheap to clone (clones share the subscription).
#[derive(Debug)]
pub(crate) struct Replies<R> {
    waiting: Waiting<R>,
    _task: Arc<AbortOnDrop>,
}

impl<R> Clone for Replies<R> {
    fn clone(&self) -> Self {
        Self {
            waiting: self.waiting.clone(),
            _task: self._task.clone(),
        }
    }
}

impl<R: Send + 'static> Replies<R> {
    /// Subscribes to `filter` and starts the task; `read` gives a reply's nonce and value
    /// (`None`: not a reply, ignored).
    pub async fn subscribe(
        broker: &BrokerHandle,
        filter: &str,
        read: fn(&[u8]) -> Option<(String, R)>,
    ) -> Result<Self, String> {
        let mut sub = broker
            .subscribe(filter, 256)
            .await
            .map_err(|e| e.to_string())?;
        let waiting: Waiting<R> = Arc::default();
        let w = waiting.clone();
        let task = tokio::spawn(async move {
            while let Some(msg) = sub.recv().await {
                let Some((nonce, reply)) = read(&msg.payload) else {
                    continue;
                };
                if let Some(tx) = lock(&w).remove(&nonce) {
                    let _ = tx.send(reply);
                }
            }
        });
        Ok(Self {
            waiting,
            _task: Arc::new(AbortOnDrop(task.abort_handle())),
        })
    }

    /// Publishes `body` with a fresh `nonce` on `topic`; its reply, or why none came.
    pub async fn request(
        &self,
        broker: &BrokerHandle,
        topic: String,
        mut body: Map<String, Value>,
        timeout: Duration,
    ) -> Result<R, NoReply> {
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        body.insert("nonce".into(), Value::String(nonce.clone()));
        let (tx, rx) = oneshot::channel();
        lock(&self.waiting).insert(nonce.clone(), tx);
        // Forgets the request however this future ends: a reply, a timeout, a refused
        // publish, or the caller dropping it (a home run cut at its deadline).
        let _forget = Forget {
            waiting: &self.waiting,
            nonce: &nonce,
        };
        let msg = Message::new(
            topic,
            Value::Object(body).to_string(),
            QoS::ExactlyOnce,
            false,
        );
        if let Err(e) = broker.publish(msg).await {
            return Err(NoReply::Broker(e.to_string()));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) | Err(_) => Err(NoReply::Timeout),
        }
    }
}

/// Removes a request's entry when dropped.
struct Forget<'a, R> {
    waiting: &'a Waiting<R>,
    nonce: &'a str,
}

impl<R> Drop for Forget<'_, R> {
    fn drop(&mut self) {
        lock(self.waiting).remove(self.nonce);
    }
}
