//! Fuzzes request/response messages (`iottalk/rpc/<target>/req` and the replies):
//! `RpcRequest::from_json` and `RpcReply::from_json`. Any bytes give a message or a typed
//! error with a reason; an accepted message, encoded again, is accepted again.
#![no_main]

use iot_proto::rpc::{RpcReply, RpcRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match RpcRequest::from_json(data) {
        Ok(r) => {
            let again = r.to_json().to_string();
            if let Err(e) = RpcRequest::from_json(again.as_bytes()) {
                panic!("an accepted request is refused once encoded again: {e}: {again}");
            }
        }
        Err(e) => assert!(!e.to_string().trim().is_empty()),
    }
    match RpcReply::from_json(data) {
        Ok(r) => {
            let again = r.to_json().to_string();
            if let Err(e) = RpcReply::from_json(again.as_bytes()) {
                panic!("an accepted reply is refused once encoded again: {e}: {again}");
            }
        }
        Err(e) => assert!(!e.to_string().trim().is_empty()),
    }
});
