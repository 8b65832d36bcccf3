//! Fuzzes keymanager messages (`iottalk/km/req/<client>` payloads and replies):
//! `km::parse_request`, `KmReply` from a reply body, and the client's checks on what it gets
//! (`verify_mac`, `decrypt_reply` with any iv and value). Never a panic; an accepted request
//! encoded and parsed again is the same; an echoed nonce is short.
#![no_main]

use iot_proto::km::{self, KmReply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match km::parse_request(data) {
        Some(Ok(r)) => {
            assert!(km::valid_name(&r.key));
            assert_eq!(r.nonce.len(), 32);
            let again = serde_json::to_vec(&r).unwrap_or_default();
            assert_eq!(km::parse_request(&again), Some(Ok(r.clone())));
            let s = km::client_secret("pw", "c", "m");
            let _ = km::verify_mac(&s, "c", &r.key, r.ts, &r.nonce, &r.mac);
        }
        Some(Err(nonce)) => assert!(nonce.is_none_or(|n| n.len() <= 64)),
        None => {}
    }
    if let Ok(reply) = serde_json::from_slice::<KmReply>(data) {
        let s = km::client_secret("pw", "c", "m");
        let iv = reply.iv.as_deref().unwrap_or("");
        let value = reply.value.as_deref().unwrap_or("");
        let _ = km::decrypt_reply(&s, "c", "k", "n", iv, value);
    }
});
