//! Fuzzes ODF-write requests (`iottalk/api/req/<client>/odf`): `OdfWrite::parse`, the error
//! reply built from a refusal, and `read_reply` on any body. Never a panic; every refusal has
//! a reason.
#![no_main]

use iot_proto::wire::odf_api::{read_reply, reply_error, OdfWrite};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err((fields, error)) = OdfWrite::parse(data) {
        assert!(!error.to_string().trim().is_empty());
        let _ = reply_error(&fields, &error).to_string();
    }
    let _ = read_reply(data);
});
