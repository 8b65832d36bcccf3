//! The embedded broker's enforcement of a [`TopicAcl`]: rmqtt hooks for client PUBLISHes and
//! SUBSCRIBE filters.
//!
//! A refused PUBLISH is dropped before any host subscription sees it (the check runs as a
//! `MessagePublish` handler above the one feeding host subscriptions) and again in
//! `MessagePublishCheckAcl`, which refuses it without disconnecting: MQTT 5 clients get reason
//! 0x87 on their PUBACK/PUBREC, MQTT 3.1.1 clients nothing. A refused filter gets SUBACK
//! failure (0x80; 0x87 for MQTT 5), the other filters of the same SUBSCRIBE are unaffected.
//! (Wills are checked with the credentials, in `hooks`.) Every refusal is counted; each
//! client's refusals are logged at most once a minute.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rmqtt::codec::v5::SubscribeAckReason;
use rmqtt::context::ServerContext;
use rmqtt::hook::{Handler, HookResult, Parameter, Priority, ReturnType, Type};
use rmqtt::types::{FromType, PublishAclResult, SubscribeAclResult};

use crate::acl::{ClientRef, TopicAcl};

/// Below the topic-level limit (1000), above the host-subscription feed and authentication (0).
const PRIORITY: Priority = 500;
/// How often one client's refusals are logged at most.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// Clients remembered for log rate limiting before old entries are forgotten.
const LOG_TRACKED: usize = 10_000;

/// Refusal counts, read by `EmbeddedBroker::stats`.
#[derive(Debug, Default)]
pub(crate) struct AclCounts {
    pub publish: AtomicU64,
    pub subscribe: AtomicU64,
}

/// Registers the ACL hooks. Called before the server accepts connections.
pub(super) async fn register(scx: &ServerContext, acl: Arc<dyn TopicAcl>, counts: Arc<AclCounts>) {
    let check = AclHook {
        acl,
        counts,
        logged: Arc::new(Mutex::new(HashMap::new())),
    };
    let register = scx.extends.hook_mgr().register();
    for t in [
        Type::MessagePublish,
        Type::MessagePublishCheckAcl,
        Type::ClientSubscribeCheckAcl,
    ] {
        register
            .add_priority(t, PRIORITY, Box::new(check.clone()))
            .await;
    }
    register.start().await;
}

#[derive(Debug, Clone)]
struct AclHook {
    acl: Arc<dyn TopicAcl>,
    counts: Arc<AclCounts>,
    /// client id -> when its last refusal was logged. A std mutex: held for a map update.
    logged: Arc<Mutex<HashMap<String, Instant>>>,
}

impl AclHook {
    fn refused(&self, client: &ClientRef<'_>, action: &str, topic: &str) {
        let now = Instant::now();
        let mut logged = self.logged.lock().unwrap_or_else(PoisonError::into_inner);
        if logged.len() >= LOG_TRACKED && !logged.contains_key(client.client_id) {
            logged.retain(|_, at| now.duration_since(*at) < LOG_EVERY);
            if logged.len() >= LOG_TRACKED {
                // Refusals from this many clients within a minute: counted, not logged.
                return;
            }
        }
        let due = logged
            .get(client.client_id)
            .is_none_or(|at| now.duration_since(*at) >= LOG_EVERY);
        if due {
            logged.insert(client.client_id.to_owned(), now);
            // Debug-escaped and cut short: names come from clients (no forged log lines).
            let clip = |s: &str| s.chars().take(128).collect::<String>();
            tracing::warn!(
                mqtt.client_id = ?clip(client.client_id),
                mqtt.username = ?clip(client.username.unwrap_or("-")),
                acl.action = action,
                mqtt.topic = ?clip(topic),
                "topic ACL refused a client (further refusals of this client are not logged for a minute)"
            );
        }
    }
}

#[async_trait]
impl Handler for AclHook {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        match param {
            // A client's publish the ACL refuses goes no further: no host subscription sees it.
            // (Counted and logged in the check below, which rmqtt runs next.)
            Parameter::MessagePublish(Some(s), from, p)
                if !matches!(from.typ(), FromType::LastWill) =>
            {
                let client = ClientRef {
                    username: s.id.username.as_ref().map(|u| u.as_ref()),
                    client_id: s.id.client_id.as_ref(),
                };
                let topic = match &acc {
                    Some(HookResult::Publish(p)) => p.topic.as_ref(),
                    _ => p.topic.as_ref(),
                };
                let retain = match &acc {
                    Some(HookResult::Publish(p)) => p.retain,
                    _ => p.retain,
                };
                if self.acl.may_publish(&client, topic, retain) {
                    (true, acc)
                } else {
                    (false, acc)
                }
            }
            Parameter::MessagePublishCheckAcl(s, p) => {
                let client = ClientRef {
                    username: s.id.username.as_ref().map(|u| u.as_ref()),
                    client_id: s.id.client_id.as_ref(),
                };
                if self.acl.may_publish(&client, &p.topic, p.retain) {
                    return (true, acc);
                }
                self.counts.publish.fetch_add(1, Ordering::Relaxed);
                self.refused(&client, "publish", &p.topic);
                let refused = PublishAclResult::rejected(false, Some("not authorized".into()));
                (false, Some(HookResult::PublishAclResult(refused)))
            }
            Parameter::ClientSubscribeCheckAcl(s, sub) => {
                let client = ClientRef {
                    username: s.id.username.as_ref().map(|u| u.as_ref()),
                    client_id: s.id.client_id.as_ref(),
                };
                if self.acl.may_subscribe(&client, &sub.topic_filter) {
                    return (true, acc);
                }
                self.counts.subscribe.fetch_add(1, Ordering::Relaxed);
                self.refused(&client, "subscribe", &sub.topic_filter);
                let refused = SubscribeAclResult::new_failure(SubscribeAckReason::NotAuthorized);
                (false, Some(HookResult::SubscribeAclResult(refused)))
            }
            _ => (true, acc),
        }
    }
}
