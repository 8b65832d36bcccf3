//! The keymanager (docs/keymanager.md, issue "Keymanager as an MQTT topic handler"). So far
//! the parts that need no network: [`crypto`] (the key-encryption key, sealed values, client
//! secrets, request MACs and encrypted replies, byte for byte as the document writes them) and
//! [`request`] (a request parsed and checked: sealed, MAC, clock, replay, rate, panic mode)
//! and [`store`] (sealed at load, unsealed by the password, values and client secrets sealed);
//! [`handler`] answers one request from them (reply, audit result, panic).
//! The store, the request handler and the CLI follow.

pub mod crypto;
pub mod handler;
pub mod request;
pub mod store;

/// Whether `n` may name a key or a client: 1 to 64 ASCII letters, digits, `-`, `_` or `.` (it
/// appears in topics and in the MAC and reply formulas).
pub fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}
