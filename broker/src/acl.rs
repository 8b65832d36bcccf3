//! The topic ACL interface of the embedded broker: [`TopicAcl`] decides, per client, which
//! topics it may publish on and which filters it may subscribe to. The rules themselves live
//! with whoever knows the clients (the CSM knows DAs and their links, the user store knows
//! roles); the embedded broker asks through this trait (see `embedded/acl_hooks.rs`).

use std::fmt;

/// A connected client, as the broker knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientRef<'a> {
    /// The username it authenticated with (`None`: anonymous).
    pub username: Option<&'a str>,
    pub client_id: &'a str,
}

/// Who may publish and subscribe where. Called on broker connection tasks for every PUBLISH
/// and every SUBSCRIBE filter: keep it fast (no blocking I/O, no `.await`).
pub trait TopicAcl: Send + Sync + fmt::Debug {
    /// Whether `client` may publish on `topic`, retained if `retain` (its will included,
    /// checked at CONNECT).
    fn may_publish(&self, client: &ClientRef<'_>, topic: &str, retain: bool) -> bool;
    /// Whether `client` may subscribe to `filter` (every topic the filter matches must be
    /// one the client may read).
    fn may_subscribe(&self, client: &ClientRef<'_>, filter: &str) -> bool;
}
