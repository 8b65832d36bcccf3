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
//! CONNECT resuming a persistent session has its live connection closed first instead (see
//! [`close_for_resume`]), and with an authenticator a session belongs to its username (see
//! [`prepare`]).

use std::time::Duration;

use rmqtt::context::ServerContext;
use rmqtt::types::{Id, Message, Reason};

/// How long the take-over waits for another CONNECT of the same client id to finish its
/// handshake (rmqtt lets one handshake per client id run at a time and refuses the others at
/// once): short, as it holds this handshake.
const LOCK_WAIT: Duration = Duration::from_millis(200);
const LOCK_RETRY: Duration = Duration::from_millis(5);

/// What an accepted CONNECT finds under its client id, and what [`prepare`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Prepared {
    /// Nothing to do, or done: rmqtt's handshake goes on.
    Go,
    /// The client id's live session belongs to another username (only with `owners`).
    Taken,
}

/// Everything an accepted CONNECT of `id` (by `username`, clean start or not) does to the
/// session already under its client id, before rmqtt's own handshake, under the client id's
/// lock (as rmqtt's handshake takes it):
///
/// - With `owners` (an authenticator is configured), a session belongs to the username that
///   made it: a *live* one of another username is [`Prepared::Taken`] (the CONNECT is refused:
///   no user can kick a device off by its client id); an *offline* one of another username is
///   discarded (kicked with a clean start), so the newcomer gets a fresh session and not its
///   subscriptions and queued messages, and a stale session cannot lock its client id.
/// - A clean start kicks the live session (the module's comment says why).
/// - A resume closes the live connection first: [`close_for_resume`].
pub(super) async fn prepare(
    scx: &ServerContext,
    id: &Id,
    username: Option<&str>,
    clean_start: bool,
    owners: bool,
) -> Prepared {
    let entry = { scx.extends.shared().await.entry(id.clone()) };
    let Some(session) = entry.session() else {
        return Prepared::Go;
    };
    // Whether `s` belongs to a username other than this CONNECT's (with `owners` only).
    let foreign = |s: &rmqtt::session::Session| {
        owners
            && s.id
                .username
                .as_ref()
                .is_some_and(|o| Some(o.as_ref()) != username)
    };
    let foreign_before = foreign(&session);
    if entry.tx().is_none_or(|tx| tx.is_closed()) && !foreign_before {
        return Prepared::Go;
    }
    let started = tokio::time::Instant::now();
    let mut locked = loop {
        match entry.try_lock().await {
            Ok(e) => break e,
            // Another handshake of this client id holds it: rmqtt decides between them (and
            // refuses this one at once if it still holds it).
            Err(_) if started.elapsed() >= LOCK_WAIT => {
                return if foreign_before {
                    Prepared::Taken
                } else {
                    Prepared::Go
                };
            }
            Err(_) => tokio::time::sleep(LOCK_RETRY).await,
        }
    };
    // Looked at again under the lock: a handshake may have set up a session meanwhile.
    let Some(session) = locked.session() else {
        return Prepared::Go;
    };
    let foreign = foreign(&session);
    let live = session.connected().await.unwrap_or(false);
    if foreign && live {
        return Prepared::Taken;
    }
    if foreign || clean_start {
        // Answered or not, the old session is gone afterwards (see the module's comment).
        if let Err(e) = locked.kick(true, true, false).await {
            tracing::debug!(client.id = %id.client_id, error = %e, "took over a session in its teardown");
        }
        return Prepared::Go;
    }
    close_for_resume(&*locked, id);
    Prepared::Go
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
/// Only for a session created no later than this connection (rmqtt's clock counts
/// milliseconds: a reconnect within the same millisecond counts as later): a handshake holds
/// the lock only until it has *queued* its session's state transfer, so a session another
/// handshake has just set up must not be closed here. An offline session ignores the close.
fn close_for_resume(locked: &dyn rmqtt::shared::Entry, id: &Id) {
    let (Some(session), Some(tx)) = (locked.session(), locked.tx()) else {
        return;
    };
    if session.id.create_time <= id.create_time
        && !tx.is_closed()
        && tx
            .unbounded_send(Message::Closed(Reason::ConnectKicked(false)))
            .is_ok()
    {
        tracing::debug!(client.id = %id.client_id, "closing a live connection whose session is resumed");
    }
}
