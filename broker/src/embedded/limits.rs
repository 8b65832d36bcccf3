//! The topic-level and payload limits of the embedded broker (`broker.max_topic_levels`,
//! `broker.max_payload_bytes`). Topic levels: for what rmqtt does
//! not check itself: rmqtt refuses deeper SUBSCRIBE filters (its listener setting, SUBACK
//! failure 0x80 for that filter only), but neither PUBLISH topics nor wills. A topic of
//! thousands of levels, retained or matched against a deep filter, overflows the stack of
//! rmqtt's recursive topic tries and aborts the whole process.
//!
//! Registered by `hooks::register_hooks`' caller before the server accepts connections, at a
//! priority above every other handler so a refused publish reaches no host subscription.
//! Not here: topic syntax (rmqtt's codec) and ACLs.

use async_trait::async_trait;
use rmqtt::codec::v5::PublishAckReason;
use rmqtt::context::ServerContext;
use rmqtt::hook::{Handler, HookResult, Parameter, Priority, ReturnType, Type};
use rmqtt::types::{FromType, PublishAclResult, PublishResult, Reason};

use super::config::Checked;
use crate::local::levels;
use crate::EmbeddedConfig;

/// Above the default priority (0) of our other handlers and of rmqtt's plugins.
const PRIORITY: Priority = 1000;

/// Registers the publish checks for `broker.max_topic_levels` (validated in `checked`),
/// `broker.max_payload_bytes` (the listener's packet limit leaves room for headers, so a
/// payload a little over it would otherwise pass) and `broker.max_topic_aliases`.
pub(super) async fn register(scx: &ServerContext, checked: &Checked, cfg: &EmbeddedConfig) {
    let register = scx.extends.hook_mgr().register();
    let check = TopicLevels {
        max_levels: checked.max_topic_levels,
        max_payload: cfg.max_payload_bytes,
    };
    for typ in [Type::MessagePublish, Type::MessagePublishCheckAcl] {
        let alias_check = AliasCheck {
            scx: scx.clone(),
            max_aliases: cfg.max_topic_aliases,
        };
        register
            .add_priority(typ, PRIORITY + 1, Box::new(alias_check))
            .await;
    }
    register
        .add_priority(Type::MessagePublish, PRIORITY, Box::new(check))
        .await;
    register
        .add_priority(Type::MessagePublishCheckAcl, PRIORITY, Box::new(check))
        .await;
    register.start().await;
}

#[derive(Debug, Clone, Copy)]
struct TopicLevels {
    max_levels: usize,
    max_payload: usize,
}

/// MQTT 5: a PUBLISH whose Topic Alias is above the Topic Alias Maximum the broker announced
/// (none at all when it is 0) is a protocol error the broker answers with DISCONNECT 0x94,
/// topic alias invalid [MQTT-3.3.2-9]. rmqtt ignored the alias when it announced none, and
/// took any alias value while it had room for more. The publish goes nowhere.
struct AliasCheck {
    scx: ServerContext,
    max_aliases: u16,
}

#[async_trait]
impl Handler for AliasCheck {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        let invalid = |p: &rmqtt::types::Publish| {
            let alias = p.properties.as_ref().and_then(|pr| pr.topic_alias);
            alias.filter(|a| a.get() > self.max_aliases)
        };
        let (s, alias) = match param {
            // First of the publish hooks: no host subscription sees it.
            Parameter::MessagePublish(Some(_), _, p) if invalid(p).is_some() => {
                return (false, acc)
            }
            Parameter::MessagePublishCheckAcl(s, p) => match invalid(p) {
                Some(alias) => (s, alias),
                None => return (true, acc),
            },
            _ => return (true, acc),
        };
        tracing::debug!(client.id = %s.id.client_id, alias = alias.get(), max = self.max_aliases, "topic alias above the maximum: disconnecting");
        let entry = { self.scx.extends.shared().await.entry(s.id.clone()) };
        if let Some(tx) = entry.tx() {
            let d = rmqtt::codec::v5::Disconnect {
                reason_code: rmqtt::codec::v5::DisconnectReasonCode::TopicAliasInvalid,
                ..Default::default()
            };
            let reason = Reason::ConnectDisconnect(Some(rmqtt::types::Disconnect::V5(d)));
            let _ = tx.unbounded_send(rmqtt::types::Message::Closed(reason));
        }
        let refused = PublishResult::reason_code(
            PublishAckReason::ImplementationSpecificError,
            Some("topic alias above the maximum".into()),
            false,
        );
        (
            false,
            Some(HookResult::PublishAclResult(PublishAclResult(refused))),
        )
    }
}

#[async_trait]
impl Handler for TopicLevels {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        match param {
            // First of the publish hooks: a deep topic goes no further (host subscriptions
            // never see it). A client's publish is then refused by the ACL step below; a will
            // skips that step, so it loses its retain flag here (routing a deep topic is safe,
            // storing it in the retainer's trie is not).
            Parameter::MessagePublish(_, from, p) if levels(&p.topic) > self.max_levels => {
                if matches!(from.typ(), FromType::LastWill) && p.retain {
                    tracing::debug!(client.id = ?from.client_id, "will with too many topic levels: not retained");
                    let mut p = (*p).clone();
                    p.inner.retain = false;
                    return (false, Some(HookResult::Publish(p)));
                }
                (false, acc)
            }
            // Refused without disconnecting: dropped (and counted by the MessageDropped hook);
            // an MQTT 5 client gets reason 0x90 (topic name invalid) on its PUBACK/PUBREC.
            Parameter::MessagePublishCheckAcl(s, p) if levels(&p.topic) > self.max_levels => {
                tracing::debug!(client.id = ?s.id.client_id, levels = levels(&p.topic), "publish with too many topic levels refused");
                let refused = PublishResult::reason_code(
                    PublishAckReason::TopicNameInvalid,
                    Some("too many topic levels".into()),
                    false,
                );
                (
                    false,
                    Some(HookResult::PublishAclResult(PublishAclResult(refused))),
                )
            }
            // `$SYS/...` is the broker's own (`sys.rs`): a client's publish there goes nowhere (as
            // with Mosquitto); MQTT 5 publishers get reason 0x87, not authorized. (A CONNECT
            // with a will there is refused: `hooks::AuthHook`.)
            Parameter::MessagePublish(_, from, p)
                if p.topic.starts_with("$SYS") && !matches!(from.typ(), FromType::Admin) =>
            {
                (false, acc)
            }
            Parameter::MessagePublishCheckAcl(s, p) if p.topic.starts_with("$SYS") => {
                tracing::debug!(client.id = ?s.id.client_id, "publish on $SYS refused");
                let refused = PublishResult::reason_code(
                    PublishAckReason::NotAuthorized,
                    Some("$SYS topics are the broker's".into()),
                    false,
                );
                (
                    false,
                    Some(HookResult::PublishAclResult(PublishAclResult(refused))),
                )
            }
            // A client's payload over `max_payload_bytes`: no host subscription sees it, and it
            // is refused without disconnecting (MQTT 5: reason 0x97, quota exceeded).
            Parameter::MessagePublish(Some(_), _, p) if p.payload.len() > self.max_payload => {
                (false, acc)
            }
            Parameter::MessagePublishCheckAcl(s, p) if p.payload.len() > self.max_payload => {
                tracing::debug!(client.id = ?s.id.client_id, payload.bytes = p.payload.len(), "publish over broker.max_payload_bytes refused");
                let refused = PublishResult::reason_code(
                    PublishAckReason::QuotaExceeded,
                    Some("payload larger than broker.max_payload_bytes".into()),
                    false,
                );
                (
                    false,
                    Some(HookResult::PublishAclResult(PublishAclResult(refused))),
                )
            }
            _ => (true, acc),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::levels;

    #[test]
    fn levels_count_slashes() {
        assert_eq!(levels("a"), 1);
        assert_eq!(levels(""), 1);
        assert_eq!(levels("a/b"), 2);
        assert_eq!(levels("/"), 2);
        assert_eq!(levels(&vec!["a"; 10_000].join("/")), 10_000);
    }
}
