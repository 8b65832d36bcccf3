//! Stored values: bound to their record and key, fresh nonces, weak parameters refused. (The
//! wire formulas are checked against an independent implementation in `iot_proto::km`.)

use super::*;

#[test]
fn stored_values_are_bound_to_their_record_and_key() {
    // The smallest accepted parameters: a unit test should not take seconds more.
    let kek = derive_kek(b"unseal me", &[7u8; 16], KdfParams::default()).unwrap();
    let (nonce, ct) = seal(&kek, "secret:a", b"value-a").unwrap();
    assert!(!ct.windows(7).any(|w| w == b"value-a"));
    assert_eq!(
        open(&kek, "secret:a", &nonce, &ct).unwrap().as_slice(),
        b"value-a"
    );
    assert_eq!(open(&kek, "secret:b", &nonce, &ct), Err(CryptoError::Open));
    let other = derive_kek(b"unseal me!", &[7u8; 16], KdfParams::default()).unwrap();
    assert_eq!(
        open(&other, "secret:a", &nonce, &ct),
        Err(CryptoError::Open)
    );
    let (nonce2, _) = seal(&kek, "secret:a", b"value-a").unwrap();
    assert_ne!(nonce, nonce2);
    let weak = KdfParams {
        m_kib: 1024,
        ..KdfParams::default()
    };
    assert_eq!(derive_kek(b"x", &[0; 16], weak), Err(CryptoError::Params));
}
