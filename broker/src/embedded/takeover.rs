//! A CONNECT with a clean start takes over a live session of its client id before rmqtt's
//! own handshake does: called by the authentication hook (`hooks::AuthHook`) once the CONNECT
//! is accepted, so only an authenticated client can take a session over, and every check of
//! rmqtt's handshake before it (client id length, `max_sessions`, MQTT 5 authentication
//! method and will checks, credentials, the will's ACL) has been passed. (After it rmqtt can
//! still refuse a CONNECT whose client id another handshake holds at that moment.)
//!
//! Why: rmqtt 0.24 takes a session over by sending the old connection's task a `Kick` and
//! waiting for its answer. When the old client has just closed its socket, that task may be
//! in its teardown already (`SessionState::run_loop` picks the close or the kick at random,
//! and the teardown reads no more kicks): the kick's answer channel is dropped unanswered and
//! rmqtt refuses the new CONNECT with "server unavailable" (3.1.1 code 3, MQTT 5 0x88). Same-id
//! reconnects right after a close were refused in 2-17 % of attempts (docs/broker-upstream.md).
//!
//! Here the kick is sent first, and its outcome does not matter: answered, the old session is
//! gone; unanswered, its task has finished its teardown, which removes the session. rmqtt's
//! own kick then finds nothing to take over and accepts. For a clean-start CONNECT that is
//! what rmqtt would do anyway (the old session is discarded, `session present` is 0); a
//! CONNECT resuming a persistent session is left to rmqtt (its old session must hand over its
//! state; an offline one always answers).

use std::time::Duration;

use rmqtt::context::ServerContext;
use rmqtt::types::{Id, Message, Reason};

/// How long the take-over waits for another CONNECT of the same client id to finish its
/// handshake (rmqtt lets one handshake per client id run at a time and refuses the others at
/// once): short, as it holds this handshake.
const LOCK_WAIT: Duration = Duration::from_millis(200);
const LOCK_RETRY: Duration = Duration::from_millis(5);

/// Kicks the live session of `id`'s client id, if there is one.
pub(super) async fn take_over(scx: &ServerContext, id: &Id) {
    let entry = { scx.extends.shared().await.entry(id.clone()) };
    if entry.tx().is_none_or(|tx| tx.is_closed()) {
        return;
    }
    let started = tokio::time::Instant::now();
    let mut locked = loop {
        match entry.try_lock().await {
            Ok(e) => break e,
            // Another handshake of this client id holds it: rmqtt decides between them.
            Err(_) if started.elapsed() >= LOCK_WAIT => return,
            Err(_) => tokio::time::sleep(LOCK_RETRY).await,
        }
    };
    // Answered or not, the old session is gone afterwards (see the module's comment).
    if let Err(e) = locked.kick(true, true, false).await {
        tracing::debug!(client.id = %id.client_id, error = %e, "took over a session in its teardown");
    }
}

/// A CONNECT resuming a persistent session whose connection is still live (its client's
/// network went away unnoticed, and it is back): that connection is closed first, as if it had
/// dropped, so its session goes offline, where rmqtt's take-over finds it.
///
/// Why: rmqtt takes a *live* session over by a kick its connection's task answers at once; the
/// task then ends and drops its channel with the messages forwarded to it and not yet queued:
/// a QoS 1/2 subscriber lost a run of messages in most such take-overs (docs/broker-upstream.md,
/// report 4). An offline session moves every message it was sent into its queue before it
/// answers the kick, and that queue is handed to the new connection. The close is queued on
/// the same channel ahead of rmqtt's kick, so it is handled first. As on any connection the
/// server closes, the old connection's will is published (MQTT 5: after its will delay, which
/// the resumed session cancels).
///
/// Under the client id's lock (as rmqtt's handshake takes it), and only for a session older
/// than this connection: a concurrent handshake holds the lock from its take-over to its
/// session's state transfer, so a session it has just set up is never closed here.
pub(super) async fn close_for_resume(scx: &ServerContext, id: &Id) {
    let entry = { scx.extends.shared().await.entry(id.clone()) };
    if entry.tx().is_none_or(|tx| tx.is_closed()) {
        return;
    }
    let started = tokio::time::Instant::now();
    let locked = loop {
        match entry.try_lock().await {
            Ok(e) => break e,
            Err(_) if started.elapsed() >= LOCK_WAIT => return,
            Err(_) => tokio::time::sleep(LOCK_RETRY).await,
        }
    };
    let (Some(session), Some(tx)) = (locked.session(), locked.tx()) else {
        return;
    };
    // Sent whether or not the session looks connected: an offline session ignores it.
    if session.id.create_time < id.create_time
        && !tx.is_closed()
        && tx
            .unbounded_send(Message::Closed(Reason::ConnectKicked(false)))
            .is_ok()
    {
        tracing::debug!(client.id = %id.client_id, "closing a live connection whose session is resumed");
    }
}

/// Whether the session of `id`'s client id (live or offline) belongs to a username other than
/// `username`: such a CONNECT would take another client's session (its subscriptions and
/// queued messages) or kick it off, so it is refused when clients authenticate.
pub(super) async fn owned_by_another(scx: &ServerContext, id: &Id, username: Option<&str>) -> bool {
    let entry = { scx.extends.shared().await.entry(id.clone()) };
    let Some(session) = entry.session() else {
        return false;
    };
    match &session.id.username {
        Some(owner) => Some(owner.as_ref()) != username,
        None => false,
    }
}
