//! Fuzzes topics and ids: `topics::parse_ctrl_i`, `topics::ApiRequest::parse` (and its
//! response topic), `topics::check_level`, `rpc_req`/`rpc_res`, `topics::matches` and
//! `topics::valid_filter` (the input split in two at its first NUL byte: filter, topic),
//! `DaId` and `FeatureName` from a string. Never a panic; an id that parses prints back to
//! a string that parses to the same id.
#![no_main]

use iot_proto::topics::{self, ApiRequest};
use iot_proto::{DaId, FeatureName};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let s = text.as_ref();
    if let Some(Ok(id)) = topics::parse_ctrl_i(s) {
        assert_eq!(topics::parse_ctrl_i(&topics::ctrl_i(&id)), Some(Ok(id)));
    }
    if let Some(req) = ApiRequest::parse(s) {
        let _ = req.response_topic();
    }
    if topics::check_level(s).is_ok() {
        assert!(topics::rpc_req(s).is_ok());
    }
    let (a, b) = s.split_once('\0').unwrap_or((s, ""));
    let _ = topics::rpc_res(a, b);
    if topics::valid_filter(a) {
        let _ = topics::matches(a, b);
    }
    if let Ok(id) = s.parse::<DaId>() {
        assert_eq!(id.to_string().parse::<DaId>().ok(), Some(id));
    }
    if let Ok(f) = s.parse::<FeatureName>() {
        assert_eq!(f.to_string().parse::<FeatureName>().ok(), Some(f));
    }
});
