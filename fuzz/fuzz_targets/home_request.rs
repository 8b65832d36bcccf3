//! Fuzzes home scene requests (`iottalk/home/cmd/<target>` payloads): `HomeRequest::parse`,
//! and the checks the handler applies to what it accepts (the reply topic, the deadline), and
//! `HomeResult` from a reply body. Never a panic; every refusal has a reason; an accepted
//! request encoded and parsed again is the same.
#![no_main]

use iot_proto::home::{valid_reply_topic, HomeRequest, HomeResult, MAX_DEADLINE_MS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match HomeRequest::parse(data) {
        Ok(r) => {
            if let Some(d) = r.deadline_ms {
                assert!(d >= 1 && d <= MAX_DEADLINE_MS);
            }
            if let Some(t) = &r.reply_to {
                let _ = valid_reply_topic(t);
            }
            if r.id.is_some() || r.reply_to.is_some() || r.deadline_ms.is_some() {
                let again = serde_json::to_vec(&r).unwrap_or_default();
                assert_eq!(HomeRequest::parse(&again).ok(), Some(r));
            }
        }
        Err((_, why)) => assert!(!why.trim().is_empty()),
    }
    let _ = serde_json::from_slice::<HomeResult>(data).map(|r| r.failures());
});
