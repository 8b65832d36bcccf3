//! A CONNECT in the native core: who the client is (credentials, client id, will), and which
//! session it gets (new, resumed, or refused because another user's live session holds the
//! id). Decided before the CONNACK, under the sessions map's lock for the take-over, so two
//! CONNECTs of one client id are ordered and a resumed session is never handed to two
//! connections.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytestring::ByteString;
use rmqtt_codec::types::Publish;
use rmqtt_codec::v5::{ConnectAckReason, PublishProperties};
use tokio::sync::oneshot;

use super::core::Core;
use super::session::{Attached, Kick, Session, State};
use super::wire::Connect;
use crate::acl::ClientRef;
use crate::local::valid_topic;

/// Longest client id accepted (MQTT requires 23; SDKs use about 50).
const MAX_CLIENT_ID_BYTES: usize = 256;

/// What a CONNECT asks for, whichever version.
#[derive(Debug)]
pub(crate) struct Hello {
    pub client_id: ByteString,
    pub assigned: bool,
    pub username: Option<ByteString>,
    pub password: Option<bytes::Bytes>,
    pub clean: bool,
    pub keep_alive: u16,
    pub expiry: Duration,
    /// The client's Receive Maximum (MQTT 5), capped by ours.
    pub window: u16,
    pub will: Option<Publish>,
    /// Whether the will was asked for at all (a refused one refuses the CONNECT).
    pub v5: bool,
}

impl Hello {
    pub(crate) fn new(c: Connect, core: &Core) -> Result<Hello, ConnectAckReason> {
        let limits = &core.limits;
        let hello = match c {
            Connect::V3(c) => {
                let c = *c;
                Hello {
                    client_id: c.client_id,
                    assigned: false,
                    username: c.username,
                    password: c.password,
                    clean: c.clean_session,
                    keep_alive: c.keep_alive,
                    expiry: if c.clean_session {
                        Duration::ZERO
                    } else {
                        limits.session_expiry
                    },
                    window: limits.inflight,
                    will: c
                        .last_will
                        .map(|w| will(w.qos, w.retain, w.topic, w.message, None)),
                    v5: false,
                }
            }
            Connect::V5(c) => {
                let c = *c;
                let asked = Duration::from_secs(u64::from(c.session_expiry_interval_secs));
                let expiry = if limits.session_expiry.is_zero() {
                    asked
                } else {
                    asked.min(limits.session_expiry)
                };
                Hello {
                    client_id: c.client_id,
                    assigned: false,
                    username: c.username,
                    password: c.password,
                    clean: c.clean_start,
                    keep_alive: c.keep_alive,
                    expiry,
                    window: c
                        .receive_max
                        .map_or(limits.inflight, |r| r.get().min(limits.inflight)),
                    will: c.last_will.map(|w| {
                        let properties = PublishProperties {
                            correlation_data: w.correlation_data,
                            message_expiry_interval: w.message_expiry_interval,
                            content_type: w.content_type,
                            user_properties: w.user_properties,
                            is_utf8_payload: w.is_utf8_payload.unwrap_or(false),
                            response_topic: w.response_topic,
                            topic_alias: None,
                            subscription_ids: Vec::new(),
                        };
                        will(w.qos, w.retain, w.topic, w.message, Some(properties))
                    }),
                    v5: true,
                }
            }
        };
        hello.checked()
    }

    /// The client id rules: an empty id gets one assigned when the session is clean. What is
    /// kept past the CONNECT is copied out of its packet, so the packet (and the password in
    /// it) is freed with the handshake.
    fn checked(mut self) -> Result<Hello, ConnectAckReason> {
        self.client_id = ByteString::from(&*self.client_id);
        self.username = self.username.as_deref().map(ByteString::from);
        self.will = self.will.as_ref().map(super::core::owned);
        if self.client_id.is_empty() {
            if !self.clean {
                return Err(ConnectAckReason::ClientIdentifierNotValid);
            }
            self.client_id = ByteString::from(format!("auto-{}", uuid::Uuid::new_v4().simple()));
            self.assigned = true;
        }
        if self.client_id.len() > MAX_CLIENT_ID_BYTES {
            return Err(ConnectAckReason::ClientIdentifierNotValid);
        }
        Ok(self)
    }

    fn client(&self) -> ClientRef<'_> {
        ClientRef {
            username: self.username.as_deref(),
            client_id: &self.client_id,
        }
    }
}

/// A will as the PUBLISH it becomes, whichever version's CONNECT carried it.
fn will(
    qos: rmqtt_codec::types::QoS,
    retain: bool,
    topic: ByteString,
    payload: bytes::Bytes,
    properties: Option<PublishProperties>,
) -> Publish {
    Publish {
        dup: false,
        retain,
        qos,
        topic,
        packet_id: None,
        payload,
        properties,
    }
}

/// Checks the credentials and the will; `Err` is the CONNACK refusal.
pub(crate) async fn authorize(core: &Core, hello: &Hello) -> Result<(), ConnectAckReason> {
    let auth = core.security.auth.as_ref();
    match (&hello.username, auth) {
        (None, _) if core.limits.allow_anonymous => {}
        (None, auth) => {
            if let Some(a) = auth {
                a.refused_anonymous();
            }
            tracing::debug!(client.id = %hello.client_id, "CONNECT refused: no username");
            return Err(ConnectAckReason::NotAuthorized);
        }
        (Some(_), None) => {}
        (Some(user), Some(auth)) => {
            let password = hello.password.as_deref().unwrap_or_default();
            if !auth.check(user, password).await {
                return Err(ConnectAckReason::BadUserNameOrPassword);
            }
        }
    }
    if let Some(will) = &hello.will {
        // `$SYS/...` is the broker's own; a will there would be published unchecked.
        if !valid_topic(&will.topic) || will.topic.starts_with('$') {
            return Err(ConnectAckReason::NotAuthorized);
        }
        if let Some(acl) = &core.security.acl {
            if !acl.may_publish(&hello.client(), &will.topic, will.retain) {
                core.counts.acl_publish.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(client.id = %hello.client_id, "CONNECT refused: its will names a topic it may not publish on");
                return Err(ConnectAckReason::NotAuthorized);
            }
        }
    }
    Ok(())
}

/// The session a CONNECT gets.
pub(crate) struct Taken {
    pub session: Arc<Session>,
    pub present: bool,
    pub gen: u64,
    pub kicked: oneshot::Receiver<Kick>,
}

/// Takes the client id: resumes its session (kicking a live connection), or starts a new
/// one (ending the old). With an authenticator, another username's live session refuses the
/// CONNECT and another username's offline session is discarded, never handed over.
pub(crate) fn take(core: &Core, hello: &Hello) -> Result<Taken, ConnectAckReason> {
    let id: Arc<str> = Arc::from(&*hello.client_id);
    let username: Option<Arc<str>> = hello.username.as_deref().map(Arc::from);
    let owners = core.security.auth.is_some();
    let gen = core.generation();
    let (kick, kicked) = oneshot::channel();
    let attached = Attached { gen, kick };
    let mut ended = None;
    let taken = {
        let mut map = core.sessions();
        let existing = map.get(&id).cloned();
        let resumable = match &existing {
            Some(s) => {
                let foreign = owners && s.username != username;
                if foreign && s.state().attached.is_some() {
                    if let Some(a) = &core.security.auth {
                        a.refused_client_id();
                    }
                    tracing::debug!(client.id = %id, "CONNECT refused: the client id's live session belongs to another username");
                    return Err(ConnectAckReason::NotAuthorized);
                }
                !foreign && !hello.clean
            }
            None => {
                if map.len() >= core.limits.max_sessions {
                    return Err(ConnectAckReason::ServerUnavailable);
                }
                false
            }
        };
        match existing {
            Some(s) if resumable => {
                {
                    let mut st = s.state();
                    if let Some(old) = st.attached.replace(attached) {
                        let _ = old.kick.send(Kick::TakenOver);
                    }
                    st.offline_since = None;
                    st.expiry = hello.expiry;
                    st.window = hello.window;
                }
                Taken {
                    session: s,
                    present: true,
                    gen,
                    kicked,
                }
            }
            old => {
                if let Some(old) = old {
                    if let Some(a) = old.state().attached.take() {
                        let _ = a.kick.send(Kick::TakenOver);
                    }
                    map.remove(&id);
                    ended = Some(old);
                }
                let state = State::new(attached, hello.expiry, hello.window, core.limits.max_queue);
                let session = Arc::new(Session::new(id.clone(), username, state));
                map.insert(id, session.clone());
                Taken {
                    session,
                    present: false,
                    gen,
                    kicked,
                }
            }
        }
    };
    if let Some(old) = ended {
        core.end(&old);
    }
    Ok(taken)
}

/// The connection `gen` leaves `session`: offline (kept for its expiry) or, with no expiry,
/// removed. Nothing if another connection holds the session now. Every connection that took
/// a session calls it once, however it ends.
pub(crate) fn release(core: &Core, session: &Arc<Session>, gen: u64) {
    let remove = {
        let mut map = core.sessions();
        let mut st = session.state();
        if st.attached.as_ref().map(|a| a.gen) != Some(gen) {
            return;
        }
        st.attached = None;
        st.offline_since = Some(std::time::Instant::now());
        let gone = st.expiry.is_zero();
        drop(st);
        if gone
            && map
                .get(&session.client_id)
                .is_some_and(|s| Arc::ptr_eq(s, session))
        {
            map.remove(&session.client_id);
        }
        gone
    };
    if remove {
        core.end(session);
    }
}
