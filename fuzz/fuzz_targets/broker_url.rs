//! Fuzzes the broker url of the configuration (`broker.url`): `iot_proto::url::MqttUrl::parse`.
//! Any text gives a url or a typed error with a reason; a url printed and parsed again is
//! the same url.
#![no_main]

use iot_proto::url::MqttUrl;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match MqttUrl::parse(s) {
        Ok(u) => {
            let again = u.to_string();
            match MqttUrl::parse(&again) {
                Ok(back) => assert_eq!(back, u, "{s:?} printed as {again:?}"),
                Err(e) => panic!("{s:?} printed as {again:?} is refused: {e}"),
            }
        }
        Err(e) => assert!(!e.to_string().trim().is_empty()),
    }
});
