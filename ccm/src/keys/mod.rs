//! The keymanager (docs/keymanager.md, issue "Keymanager as an MQTT topic handler"). So far
//! the parts that need no network: [`crypto`] (the key-encryption key, sealed values, client
//! secrets, request MACs and encrypted replies, byte for byte as the document writes them).
//! The store, the request handler and the CLI follow.

pub mod crypto;
