//! How the DA's task (`Core`) gets what it queued onto the connection: requests wait in
//! its own queue (`outq`) until rumqttc takes them, and pushes wait in the outbox.
//!
//! Delivery of pushes: every push is appended to the outbox first. When the connection is
//! up (and, after a reconnect, the server has re-sent CONNECT for the IDFs, or the resume
//! timeout passed), entries are sent in order, at most `window` unacknowledged at a time.
//! Each publish handed to rumqttc is recorded in a FIFO of tags; rumqttc reports publishes in
//! request order with their packet ids, so the broker's PUBACK/PUBCOMP can be matched to the
//! outbox entry, which is then removed (`connection`). On a connection loss the
//! unacknowledged entries are simply sent again from the start of the outbox.
//!
//! Not here: appending pushes (`Core::push`), the outbox's storage (`outbox`).

use tokio::time::Instant;

use super::Core;
use crate::transport::{Out, Tag};

impl Core {
    /// Hands queued requests to rumqttc until its queue is full.
    pub(super) fn drain(&mut self) {
        let Some(s) = &mut self.session else {
            return;
        };
        let now = Instant::now();
        while let Some(out) = self.outq.front() {
            if let Out::Publish {
                expires: Some(t), ..
            } = out
            {
                if *t <= now {
                    self.outq.pop_front();
                    continue;
                }
            }
            if !s.link.try_send(out) {
                break;
            }
            match out {
                Out::Publish { tag, .. } => s.fifo.push_back(*tag),
                Out::Subscribe(_, token) => s.sub_fifo.push_back(*token),
                Out::Unsubscribe(_) | Out::Disconnect => {}
            }
            self.outq.pop_front();
        }
    }

    /// Sends outbox entries, in order, while the window has room.
    pub(super) async fn pump(&mut self) {
        let window = self.opts.window.max(1);
        while self.session.is_some()
            && self.stopping.is_none()
            && self.features.resumed()
            && self.outq.is_empty()
            && self.inflight.len() < window
            // Every entry is in flight or waiting: nothing to read when all are in flight.
            && self.outbox.len() > self.inflight.len()
        {
            let batch = match self
                .outbox
                .after(self.cursor, window - self.inflight.len())
                .await
            {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the outbox");
                    return;
                }
            };
            if batch.is_empty() {
                return;
            }
            for e in batch {
                self.cursor = e.seq;
                match self.features.idf_topic(&e.feature) {
                    Some(topic) => {
                        let topic = topic.to_owned();
                        self.inflight.insert(e.seq);
                        self.enqueue(Out::Publish {
                            topic,
                            payload: e.payload,
                            qos: self.opts.push_qos,
                            retain: false,
                            tag: Tag::Data(e.seq),
                            props: None,
                            expires: None,
                        });
                    }
                    None => {
                        // The IDF was disconnected (or no longer exists): nowhere to send it.
                        if let Err(err) = self.outbox.remove(e.seq).await {
                            tracing::warn!(error = %err, "cannot drop an outbox entry");
                        }
                        self.status.outbox_dropped += 1;
                        tracing::debug!(idf = %e.feature, "dropped a push: its IDF is not connected");
                    }
                }
            }
            self.drain();
        }
    }
}
