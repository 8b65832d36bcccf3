//! Fuzzes the control channel: `Signal::from_json` (what a DA reads on `<id>/ctrl/o`) and
//! `Uplink::from_json` (what the controller reads on `<id>/ctrl/i`: online/offline and
//! signal replies). Any bytes give a message or a typed error with a reason; a signal,
//! encoded again, parses to the same signal.
#![no_main]

use iot_proto::wire::{Signal, Uplink};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match Signal::from_json(data) {
        Ok(sig) => {
            let again = sig.to_json().to_string();
            match Signal::from_json(again.as_bytes()) {
                Ok(back) => assert_eq!(back, sig),
                Err(e) => panic!("an accepted signal is refused once encoded again: {e}: {again}"),
            }
        }
        Err(e) => assert!(!e.to_string().trim().is_empty()),
    }
    if let Err(e) = Uplink::from_json(data) {
        assert!(!e.to_string().trim().is_empty());
    }
});
