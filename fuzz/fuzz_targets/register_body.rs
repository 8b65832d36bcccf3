//! Fuzzes the HTTP registration API's request bodies (`PUT /{id}` and `DELETE /{id}`):
//! `RegisterRequest::from_json` and `DeregisterRequest::from_json`. Any bytes give a request
//! or a typed error with a reason; an accepted request, encoded again, is accepted again.
#![no_main]

use iot_proto::wire::{DeregisterRequest, RegisterRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match RegisterRequest::from_json(data) {
        Ok(req) => {
            let again = req.to_json().to_string();
            if let Err(e) = RegisterRequest::from_json(again.as_bytes()) {
                panic!("an accepted request is refused once encoded again: {e}: {again}");
            }
        }
        Err(e) => assert!(!e.to_string().trim().is_empty()),
    }
    if let Err(e) = DeregisterRequest::from_json(data) {
        assert!(!e.to_string().trim().is_empty());
    }
});
