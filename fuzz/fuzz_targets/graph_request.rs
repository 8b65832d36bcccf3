//! Fuzzes graph-API requests (`iottalk/api/req/<client>/<gid>`): `GraphRequest::parse`.
//! Any bytes give a request or a refusal with a reason, and the error reply built from a
//! refusal (what the controller publishes) never panics; an accepted op, encoded again,
//! is accepted again as the same op.
#![no_main]

use iot_proto::wire::graph_api::{reply, GraphRequest};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    match GraphRequest::parse(data) {
        Ok(req) => {
            let again = Value::Object(req.op.to_json()).to_string();
            match GraphRequest::parse(again.as_bytes()) {
                Ok(back) => assert_eq!(back.op, req.op, "{again}"),
                Err(e) => panic!("an accepted op is refused once encoded again: {e:?}: {again}"),
            }
        }
        Err(refused) => {
            let reason = refused.error.to_string();
            assert!(!reason.trim().is_empty());
            let _ = reply(&refused.fields, Err(&reason)).to_string();
        }
    }
});
