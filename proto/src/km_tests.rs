//! Known answers computed outside Rust (Python's `hmac` and `cryptography` packages, from the
//! formulas of docs/keymanager.md), round trips, and tampering.

use super::*;

const PASSWORD: &str = "correct horse";
const CLIENT: &str = "backup";
const MID: &str = "0123456789abcdef0123456789abcdef";
const NAME: &str = "db-password";
const TS: i64 = 1_796_290_000;
const NONCE: &str = "00112233445566778899aabbccddeeff";

#[test]
fn the_wire_formulas_match_an_independent_implementation() {
    let s = client_secret(PASSWORD, CLIENT, MID);
    assert_eq!(
        hex::encode(s.as_ref()),
        "95846ff1545029828ae1bc67180cb4fbb688845b437008c3849bc0341f60e0f2"
    );
    let mac = request_mac(&s, CLIENT, NAME, TS, NONCE);
    assert_eq!(
        mac,
        "1b95d10d07d96be7b49ba7ed7bdca3f15edcfbe0e2616ec40d10bcb6bcefb153"
    );
    assert!(verify_mac(&s, CLIENT, NAME, TS, NONCE, &mac));
    let iv: [u8; 12] = core::array::from_fn(|i| i as u8);
    let (iv_hex, value) = encrypt_reply(&s, CLIENT, NAME, NONCE, b"s3cret value", iv).unwrap();
    assert_eq!(iv_hex, "000102030405060708090a0b");
    assert_eq!(value, "byIAxIgjlg+l/DHKvPh4plMrdgIRMuZ29X/gKg==");
    let back = decrypt_reply(&s, CLIENT, NAME, NONCE, &iv_hex, &value).unwrap();
    assert_eq!(back.as_slice(), b"s3cret value");
}

#[test]
fn a_mac_is_wrong_for_any_other_input() {
    let s = client_secret(PASSWORD, CLIENT, MID);
    let mac = request_mac(&s, CLIENT, NAME, TS, NONCE);
    let other_machine = client_secret(PASSWORD, CLIENT, "ffffffffffffffffffffffffffffffff");
    assert!(!verify_mac(&other_machine, CLIENT, NAME, TS, NONCE, &mac));
    assert!(!verify_mac(&s, "other", NAME, TS, NONCE, &mac));
    assert!(!verify_mac(&s, CLIENT, "other", TS, NONCE, &mac));
    assert!(!verify_mac(&s, CLIENT, NAME, TS + 1, NONCE, &mac));
    assert!(!verify_mac(
        &s,
        CLIENT,
        NAME,
        TS,
        "ffeeddccbbaa99887766554433221100",
        &mac
    ));
    assert!(!verify_mac(&s, CLIENT, NAME, TS, NONCE, &mac[..62]));
    assert!(!verify_mac(&s, CLIENT, NAME, TS, NONCE, "not hex"));
    assert!(!verify_mac(&s, CLIENT, NAME, TS, NONCE, ""));
}

#[test]
fn a_reply_opens_only_for_its_client_key_and_nonce() {
    let s = client_secret(PASSWORD, CLIENT, MID);
    let (iv, value) = encrypt_reply(&s, CLIENT, NAME, NONCE, b"v", [1; 12]).unwrap();
    assert_eq!(
        decrypt_reply(&s, CLIENT, NAME, NONCE, &iv, &value)
            .unwrap()
            .as_slice(),
        b"v"
    );
    let wrong = client_secret("guess", CLIENT, MID);
    assert_eq!(
        decrypt_reply(&wrong, CLIENT, NAME, NONCE, &iv, &value),
        Err(OpenError::Open)
    );
    assert!(decrypt_reply(&s, CLIENT, "other", NONCE, &iv, &value).is_err());
    assert!(decrypt_reply(&s, CLIENT, NAME, "x", &iv, &value).is_err());
    assert_eq!(
        decrypt_reply(&s, CLIENT, NAME, NONCE, "00", &value),
        Err(OpenError::Malformed("iv"))
    );
}

proptest::proptest! {
    /// Any payload: no panic; an accepted request encodes and parses back the same; an
    /// echoed nonce is short.
    #[test]
    fn any_payload_parses_or_is_refused(data in proptest::collection::vec(proptest::num::u8::ANY, 0..256),
                                        key in "[a-z.]{1,8}", ts in proptest::num::i64::ANY) {
        match parse_request(&data) {
            Some(Ok(r)) => {
                let again = serde_json::to_vec(&r).unwrap();
                proptest::prop_assert_eq!(parse_request(&again), Some(Ok(r)));
            }
            Some(Err(n)) => proptest::prop_assert!(n.is_none_or(|n| n.len() <= 64)),
            None => {}
        }
        let s = client_secret("pw", "c", "m");
        let r = KmRequest::new(&s, "c", &key, ts, [7; 16]);
        let text = serde_json::to_vec(&r).unwrap();
        proptest::prop_assert_eq!(parse_request(&text), Some(Ok(r.clone())));
        proptest::prop_assert!(verify_mac(&s, "c", &key, ts, &r.nonce, &r.mac));
    }
}
