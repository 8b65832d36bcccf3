//! Fuzzes the HTTP `Authorization` header: `iot_auth::basic::parse`. Any bytes give
//! credentials or `None`, never a panic; credentials encoded again with `basic::header`
//! parse back to the same user name and password.
#![no_main]

use iot_auth::basic;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(c) = basic::parse(data) {
        if let Ok(password) = std::str::from_utf8(&c.password) {
            match basic::parse(basic::header(&c.username, password).as_bytes()) {
                Some(back) => {
                    assert_eq!(back.username, c.username);
                    assert_eq!(back.password.as_slice(), c.password.as_slice());
                }
                None => panic!(
                    "credentials of user {:?} do not parse once encoded",
                    c.username
                ),
            }
        }
    }
});
