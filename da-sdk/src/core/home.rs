//! Home scene commands in the DA's task (`Core`), as a client of the controller's home
//! handler (docs/home.md): a request published on `iottalk/home/cmd/<target>` whose
//! `reply_to` is `iottalk/home/res/<our id>/<nonce>`, a fresh nonce per command (also its
//! `id`), and the one [`HomeResult`] that comes back there handed to the caller.
//!
//! The filter `iottalk/home/res/<our id>/+` is subscribed to on the first command (the
//! requests wait for the broker's acknowledgement, so a quick result is not missed), then
//! on every connection. A result for no waiting caller (late, or a cancelled command) is
//! ignored. Not here: the wire format (`iot_proto::home`), the caller's deadline (`Da`).

use std::time::Duration;

use bytes::Bytes;
use iot_proto::home::{self, HomeRequest, HomeResult, MAX_REQUEST_BYTES};
use iot_proto::{topics, QoS};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Core, PendingHome};
use crate::error::{brief, DecodeError, Error};
use crate::transport::{Out, Props, Tag};

impl Core {
    /// Publishes a home command for `target` (once the reply filter is in place) and
    /// remembers `reply` until its result comes or the caller gives up.
    pub(super) fn home_run(
        &mut self,
        target: String,
        cmd: String,
        deadline_ms: Option<u64>,
        wait: Duration,
        reply: oneshot::Sender<Result<HomeResult, Error>>,
    ) {
        if let Err(e) = topics::check_level(&target) {
            let _ = reply.send(Err(Error::InvalidName(format!("home target: {e}"))));
            return;
        }
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let reply_to = home::owned_res(&self.id.to_string(), &nonce);
        let body = HomeRequest {
            cmd: Some(cmd),
            id: Some(nonce.clone()),
            reply_to: Some(reply_to.clone()),
            deadline_ms,
        };
        let payload = match serde_json::to_vec(&body) {
            Ok(p) => p,
            Err(e) => {
                let _ = reply.send(Err(Error::Encode(e.to_string())));
                return;
            }
        };
        if payload.len() > MAX_REQUEST_BYTES {
            let _ = reply.send(Err(Error::InvalidName(format!(
                "the home command for `{target}` makes a request of {} bytes; the controller takes at most {MAX_REQUEST_BYTES}",
                payload.len()
            ))));
            return;
        }
        let out = Out::Publish {
            topic: home::cmd(&target),
            payload: Bytes::from(payload),
            qos: QoS::AtLeastOnce,
            retain: false,
            // Kept across reconnects until the caller's deadline, like a call.
            tag: Tag::Call,
            // Over MQTT 5 the same reply topic and id as properties, and an expiry, so that
            // a request the broker held too long is not run after the caller gave up.
            props: Some(Props {
                response_topic: Some(reply_to),
                correlation: Some(Bytes::from(nonce.clone())),
                expiry_secs: Some(
                    u32::try_from(wait.as_secs().saturating_add(1)).unwrap_or(u32::MAX),
                ),
            }),
            expires: Instant::now().checked_add(wait),
        };
        self.home
            .calls
            .insert(nonce.clone(), PendingHome { target, reply });
        if !self.home.used {
            self.home.used = true;
            // Offline, the filter is subscribed to on connecting, ahead of the request.
            if self.session.is_some() {
                let token = self.next_token;
                self.next_token += 1;
                self.home.pending = Some(token);
                self.enqueue(Out::Subscribe(
                    vec![(self.home.filter.clone(), QoS::AtLeastOnce)],
                    Some(token),
                ));
            }
        }
        if self.home.pending.is_some() {
            self.home.held.push((nonce, out));
        } else {
            self.enqueue(out);
        }
    }

    /// The broker answered the first subscription to the reply filter (`token`): the
    /// requests held for it go out, or, when it refused, fail. `false`: not that token.
    pub(super) fn home_subscribed(&mut self, token: u64, refused: bool) -> bool {
        if self.home.pending != Some(token) {
            return false;
        }
        self.home.pending = None;
        let held = std::mem::take(&mut self.home.held);
        if refused {
            // Tried again on the next command.
            self.home.used = false;
            tracing::warn!(filter = %self.home.filter, "the broker refused the home results: home commands fail");
            for (nonce, _) in held {
                if let Some(call) = self.home.calls.remove(&nonce) {
                    let _ = call.reply.send(Err(Error::HomeRefused {
                        filter: self.home.filter.clone(),
                    }));
                }
            }
        } else {
            self.outq.extend(held.into_iter().map(|(_, out)| out));
        }
        true
    }

    /// The connection was lost before the broker acknowledged the reply filter: the held
    /// requests join the calls kept for the next connection, whose subscriptions include
    /// the filter and go first.
    pub(super) fn home_connection_lost(&mut self) {
        if self.home.pending.take().is_some() {
            let held = std::mem::take(&mut self.home.held);
            self.outq.extend(held.into_iter().map(|(_, out)| out));
        }
    }

    /// The filter to subscribe to on connecting, once a home command was made.
    pub(super) fn home_filter(&self) -> Option<&str> {
        self.home.used.then_some(self.home.filter.as_str())
    }

    /// A message on `topic`, if it is one of our home reply topics; `false` otherwise.
    pub(super) fn on_home_result(&mut self, topic: &str, payload: &[u8]) -> bool {
        let Some(nonce) = home::parse_owned_res(&self.id.to_string(), topic) else {
            return false;
        };
        let Some(call) = self.home.calls.remove(nonce) else {
            tracing::debug!(
                nonce,
                "a home result for no waiting command (late, or not ours)"
            );
            return true;
        };
        let result = serde_json::from_slice::<HomeResult>(payload).map_err(|e| {
            Error::Decode(DecodeError {
                what: format!("the home result for `{}`", call.target),
                expected: std::any::type_name::<HomeResult>(),
                reason: e.to_string(),
                payload: brief(payload),
            })
        });
        // The caller may have given up meanwhile.
        let _ = call.reply.send(result);
        true
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::super::tests::{connect, link, test_core};
    use super::super::Cmd;
    use super::*;

    fn home(
        target: &str,
        deadline_ms: Option<u64>,
    ) -> (Cmd, oneshot::Receiver<Result<HomeResult, Error>>) {
        let (tx, rx) = oneshot::channel();
        let cmd = Cmd::Home {
            target: target.into(),
            cmd: "on".into(),
            deadline_ms,
            wait: Duration::from_secs(3),
            reply: tx,
        };
        (cmd, rx)
    }

    /// The requests queued for the connection, as (topic, JSON body).
    fn published(core: &Core) -> Vec<(String, Value)> {
        core.outq
            .iter()
            .filter_map(|o| match o {
                Out::Publish { topic, payload, .. } if topic.starts_with("iottalk/home/cmd/") => {
                    Some((topic.clone(), serde_json::from_slice(payload).unwrap()))
                }
                _ => None,
            })
            .collect()
    }

    fn result(target: &str, ok: bool) -> Vec<u8> {
        serde_json::to_vec(&HomeResult {
            target: target.into(),
            cmd: "on".into(),
            ok,
            detail: (!ok).then(|| "unknown target".into()),
            ..HomeResult::default()
        })
        .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn requests_name_a_fresh_reply_topic_of_the_da_and_results_reach_their_caller() {
        let mut core = test_core().await;
        let me = core.id.to_string();
        let (a, mut rx_a) = home("evening", None);
        let (b, rx_b) = home("garage", Some(1500));
        core.on_cmd(a).await;
        core.on_cmd(b).await;

        // Offline: nothing held, the filter comes with the connection's subscriptions.
        let sent = published(&core);
        assert_eq!(sent.len(), 2);
        let (topic, body) = &sent[0];
        assert_eq!(topic, "iottalk/home/cmd/evening");
        let nonce = body["id"].as_str().unwrap().to_owned();
        assert_eq!(nonce.len(), 32, "{body}");
        assert_eq!(
            body,
            &json!({"cmd": "on", "id": nonce, "reply_to": format!("iottalk/home/res/{me}/{nonce}")}),
            "no deadline_ms: the controller's default applies"
        );
        let (_, body_b) = &sent[1];
        assert_eq!(body_b["deadline_ms"], 1500);
        assert_ne!(body_b["id"], body["id"]);
        assert_eq!(
            core.home_filter(),
            Some(format!("iottalk/home/res/{me}/+").as_str())
        );

        // A result for the second; `ok: false` is a result, not an error.
        let reply_b = body_b["reply_to"].as_str().unwrap().to_owned();
        assert!(core.on_home_result(&reply_b, &result("garage", false)));
        let r = rx_b.await.unwrap().unwrap();
        assert!(!r.ok);
        assert_eq!(r.failures(), ["garage: unknown target"]);
        // Again (late, duplicate): ignored.
        assert!(core.on_home_result(&reply_b, &result("garage", true)));
        // Another DA's topic, and a nonce nobody waits for: not ours / ignored.
        let other = format!("iottalk/home/res/{}/{nonce}", iot_proto::DaId::new_v4());
        assert!(!core.on_home_result(&other, &result("evening", true)));
        assert!(core.on_home_result(
            &format!("iottalk/home/res/{me}/nobody"),
            &result("evening", true)
        ));
        assert!(rx_a.try_recv().is_err(), "still waiting");

        // A result that does not decode fails the caller.
        let reply_a = format!("iottalk/home/res/{me}/{nonce}");
        assert!(core.on_home_result(&reply_a, b"{\"ok\": 1}"));
        match rx_a.await.unwrap() {
            Err(Error::Decode(e)) => {
                assert_eq!(e.what, "the home result for `evening`");
                assert!(e.payload.contains("\"ok\""), "{e}");
            }
            other => panic!("{other:?}"),
        }
        assert!(core.home.calls.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_command_waits_for_the_filter_and_a_refusal_fails_it() {
        let mut core = test_core().await;
        connect(&mut core).await;
        core.outq.clear();
        let (a, rx_a) = home("evening", None);
        core.on_cmd(a).await;
        // The subscription goes first; the request waits for its acknowledgement.
        let token = match core.outq.front() {
            Some(Out::Subscribe(filters, Some(token))) => {
                assert_eq!(filters[0].0, core.home.filter);
                *token
            }
            other => panic!("{other:?}"),
        };
        assert!(published(&core).is_empty());
        let (b, _rx_b) = home("evening", None);
        core.on_cmd(b).await;
        assert_eq!(core.home.held.len(), 2);
        assert!(
            !core.home_subscribed(token + 1, false),
            "another subscription"
        );
        assert!(core.home_subscribed(token, false));
        assert_eq!(published(&core).len(), 2);
        // Later commands go out at once.
        let (c, _rx_c) = home("evening", None);
        core.on_cmd(c).await;
        assert_eq!(published(&core).len(), 3);
        drop(rx_a);

        // Refused (authentication on, `home.allow_das` off): the waiting commands fail,
        // and the next command asks again.
        let mut core = test_core().await;
        connect(&mut core).await;
        core.outq.clear();
        let (a, rx_a) = home("evening", None);
        core.on_cmd(a).await;
        let token = core.home.pending.unwrap();
        assert!(core.home_subscribed(token, true));
        assert!(published(&core).is_empty());
        match rx_a.await.unwrap() {
            Err(e @ Error::HomeRefused { .. }) => {
                assert!(e.to_string().contains("home.allow_das = true"), "{e}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(core.home_filter(), None);
        let (b, _rx_b) = home("evening", None);
        core.on_cmd(b).await;
        assert!(core.home.pending.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn held_commands_survive_a_lost_connection_and_follow_the_filter() {
        let mut core = test_core().await;
        connect(&mut core).await;
        let (a, _rx_a) = home("evening", None);
        core.on_cmd(a).await;
        assert!(core.home.pending.is_some());
        core.on_input(crate::transport::Input::Disconnected {
            gen: 1,
            error: "gone".into(),
        })
        .await;
        assert!(core.home.pending.is_none());
        assert_eq!(published(&core).len(), 1, "kept for the next connection");
        core.on_connected(2, link(), crate::status::Protocol::V311)
            .await;
        // The connection's subscriptions (with the filter) first, then the request.
        match core.outq.front() {
            Some(Out::Subscribe(filters, None)) => {
                assert!(
                    filters.iter().any(|(f, _)| *f == core.home.filter),
                    "{filters:?}"
                )
            }
            other => panic!("{other:?}"),
        }
        let pos = core.outq.iter().position(
            |o| matches!(o, Out::Publish { topic, .. } if topic == "iottalk/home/cmd/evening"),
        );
        assert!(pos.is_some_and(|p| p > 0));
    }

    #[tokio::test(start_paused = true)]
    async fn bad_targets_and_oversized_commands_are_refused_before_sending() {
        let mut core = test_core().await;
        for target in ["", "a/b", "+", "#", "$x"] {
            let (c, rx) = home(target, None);
            core.on_cmd(c).await;
            assert!(
                matches!(rx.await.unwrap(), Err(Error::InvalidName(_))),
                "{target:?}"
            );
        }
        let (tx, rx) = oneshot::channel();
        core.on_cmd(Cmd::Home {
            target: "evening".into(),
            cmd: "x".repeat(MAX_REQUEST_BYTES),
            deadline_ms: None,
            wait: Duration::from_secs(1),
            reply: tx,
        })
        .await;
        match rx.await.unwrap() {
            Err(Error::InvalidName(why)) => assert!(why.contains("at most 4096"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(published(&core).is_empty());
        assert!(core.home.calls.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_gives_up_is_forgotten() {
        let mut core = test_core().await;
        let (a, rx_a) = home("evening", None);
        core.on_cmd(a).await;
        assert_eq!(core.home.calls.len(), 1);
        drop(rx_a);
        core.on_tick();
        assert!(core.home.calls.is_empty());
    }
}
