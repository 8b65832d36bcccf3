//! Fuzzes device-API requests (`iottalk/api/req/<client>/device`): `DeviceRequest::parse`,
//! and the error reply built from a refusal. Never a panic; every refusal has a reason.
#![no_main]

use iot_proto::wire::device_api::{reply_error, DeviceRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err((fields, error)) = DeviceRequest::parse(data) {
        assert!(!error.to_string().trim().is_empty());
        let _ = reply_error(&fields, &error).to_string();
    }
});
