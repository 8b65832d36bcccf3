//! The embedded broker's rmqtt hooks: host subscriptions (`MessagePublish`, with the publisher
//! and the MQTT 5 request/response properties), drop counting (`MessageDropped`) and CONNECT
//! authentication with the will's topic and the take-over of a live session
//! (`ClientAuthenticate`). Registered once by
//! [`register_hooks`] before the server accepts connections. Not here: the server's settings
//! (see `mod.rs`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use rmqtt::codec::v5::PublishProperties;
use rmqtt::context::ServerContext;
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType, Type};
use rmqtt::types::{AuthResult, LastWill};

use super::acl_hooks::AclCounts;
use super::{from_rmqtt_qos, Authenticator};
use crate::acl::{ClientRef, TopicAcl};
use crate::local::LocalRouter;
use crate::{Message, Publisher};

/// Our hooks: host subscriptions, drop counting and, with an authenticator, authentication.
/// Called before the server is built, so the first CONNECT is already checked.
pub(super) async fn register_hooks(
    scx: &ServerContext,
    local: &LocalRouter,
    dropped: &Arc<AtomicU64>,
    login: Login,
) {
    let register = scx.extends.hook_mgr().register();
    let publish = PublishHook {
        local: local.clone(),
    };
    register.add(Type::MessagePublish, Box::new(publish)).await;
    let drops = DroppedHook {
        dropped: dropped.clone(),
    };
    register.add(Type::MessageDropped, Box::new(drops)).await;
    let auth = AuthHook {
        login,
        scx: scx.clone(),
    };
    register.add(Type::ClientAuthenticate, Box::new(auth)).await;
    register.start().await;
}

/// Feeds every inbound publish (clients, wills, the host) to the host subscriptions, with the
/// publishing client (`from`, none for the host) and the MQTT 5 request/response properties.
/// It runs before rmqtt's publish ACL check, which is fine as long as no ACL plugin is used.
struct PublishHook {
    local: LocalRouter,
}

#[async_trait]
impl Handler for PublishHook {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        if let Parameter::MessagePublish(session, _, p) = param {
            // An earlier handler may have rewritten the publish.
            let p = match &acc {
                Some(HookResult::Publish(p)) => p,
                _ => *p,
            };
            if !self.local.is_empty() {
                let mut msg = Message::new(
                    p.topic.to_string(),
                    p.payload.clone(),
                    from_rmqtt_qos(p.qos),
                    p.retain,
                );
                set_properties(&mut msg, p.properties.as_ref());
                if let Some(s) = session {
                    msg = msg.with_from(Publisher {
                        client_id: s.id.client_id.to_string(),
                        username: s.id.username.as_ref().map(|u| u.to_string()),
                    });
                    self.local.dispatch(&msg).await;
                } else {
                    // A host publish (no client session): never wait on a host subscription,
                    // which may belong to the very task publishing.
                    self.local.try_dispatch(&msg);
                }
            }
        }
        (true, acc)
    }
}

/// Copies the MQTT 5 request/response properties of a PUBLISH (none from MQTT 3.1.1) into `msg`.
pub(super) fn set_properties(msg: &mut Message, props: Option<&PublishProperties>) {
    if let Some(props) = props {
        msg.response_topic = props.response_topic.as_ref().map(|t| t.to_string());
        msg.correlation.clone_from(&props.correlation_data);
    }
}

/// Counts the messages rmqtt drops (queue overflow, expiry, refused...).
struct DroppedHook {
    dropped: Arc<AtomicU64>,
}

#[async_trait]
impl Handler for DroppedHook {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        if let Parameter::MessageDropped(to, _, _, reason) = param {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed);
            if n.is_multiple_of(1000) {
                tracing::debug!(dropped = n + 1, to = ?to.as_ref().map(|t| t.client_id.to_string()), reason = ?reason, "MQTT broker dropped a message");
            }
        }
        (true, acc)
    }
}

/// Every CONNECT's login: anonymous clients per `allow_anonymous`, credentials with the
/// [`Authenticator`] (if any), then, with a topic ACL, the will's topic (rmqtt publishes wills
/// without asking the ACL): only once the client is known, so an anonymous flood costs no more
/// than a refusal. An accepted clean start then takes over a live session of its client id.
struct AuthHook {
    login: Login,
    scx: ServerContext,
}

/// Who may connect: checked by the authentication hook for every CONNECT.
pub(super) struct Login {
    /// Checks usernames and passwords; without one, any username and password are accepted.
    pub auth: Option<Arc<dyn Authenticator>>,
    /// The topic ACL a will must keep to, and where its refusals are counted.
    pub will_check: Option<(Arc<dyn TopicAcl>, Arc<AclCounts>)>,
    /// Whether clients without a username are accepted.
    pub allow_anonymous: bool,
}

impl AuthHook {
    /// Whether the will of `info` (if any) names a topic its client may publish on.
    fn will_allowed(&self, info: &rmqtt::types::ConnectInfo, username: &str) -> bool {
        let (Some((acl, counts)), Some(will)) = (&self.login.will_check, info.last_will()) else {
            return true;
        };
        let topic = match &will {
            LastWill::V3(w) => w.topic.as_ref(),
            LastWill::V5(w) => w.topic.as_ref(),
        };
        let client = ClientRef {
            username: Some(username),
            client_id: info.client_id().as_ref(),
        };
        if acl.may_publish(&client, topic, will.retain()) {
            return true;
        }
        counts.publish.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(mqtt.username = ?username, "CONNECT refused: its will names a topic it may not publish on");
        false
    }
}

#[async_trait]
impl Handler for AuthHook {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        let Parameter::ClientAuthenticate(info) = param else {
            return (true, acc);
        };
        // `$SYS/...` is the broker's own; a will there would be published unchecked.
        let sys_will = info.last_will().is_some_and(|w| {
            let topic: &str = match &w {
                LastWill::V3(w) => w.topic.as_ref(),
                LastWill::V5(w) => w.topic.as_ref(),
            };
            topic.starts_with("$SYS")
        });
        let mut result = match (info.username(), &self.login.auth) {
            _ if sys_will => AuthResult::NotAuthorized,
            (None, _) if self.login.allow_anonymous => AuthResult::Allow(false, None),
            (None, auth) => {
                if let Some(a) = auth {
                    a.refused_anonymous();
                }
                AuthResult::NotAuthorized
            }
            (Some(_), None) => AuthResult::Allow(false, None),
            (Some(user), Some(auth)) => {
                let password = info.password().map(|p| p.as_ref()).unwrap_or_default();
                if !auth.check(user, password).await {
                    AuthResult::BadUsernameOrPassword
                } else if !self.will_allowed(info, user) {
                    AuthResult::NotAuthorized
                } else {
                    AuthResult::Allow(false, None)
                }
            }
        };
        // Accepted: what this CONNECT does to the session under its client id (`takeover.rs`):
        // with an authenticator, another username's live session refuses it; a clean start
        // takes a live session over now, so that rmqtt's own take-over cannot refuse it; a
        // resumed session's live connection is closed first.
        if matches!(result, AuthResult::Allow(..)) {
            let username = info.username().map(|u| u.as_ref());
            let owners = self.login.auth.is_some();
            let prepared = super::takeover::prepare(
                &self.scx,
                info.id(),
                username,
                info.clean_start(),
                owners,
            )
            .await;
            if prepared == super::takeover::Prepared::Taken {
                if let Some(auth) = &self.login.auth {
                    auth.refused_client_id();
                }
                tracing::debug!(client.id = %info.id().client_id, mqtt.username = ?username, "CONNECT refused: the client id's live session belongs to another username");
                result = AuthResult::NotAuthorized;
            }
        }
        (false, Some(HookResult::AuthResult(result)))
    }
}
