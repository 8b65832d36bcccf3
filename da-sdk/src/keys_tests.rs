//! Unit tests of the keymanager client: urls, the machine id rule, settings, replies.

use super::*;

fn builder() -> KeyClientBuilder {
    KeyClient::builder(
        "mqtt://127.0.0.1:1",
        "backup",
        Zeroizing::new("pw-x1".into()),
    )
    .machine_id(" mid-1\n")
}

#[test]
fn broker_urls_are_the_sdks_schemes() {
    let p = |u: &str| parse_broker(u).map_err(|e| e.to_string());
    assert_eq!(
        p("mqtt://127.0.0.1:1883"),
        Ok(("127.0.0.1".into(), 1883, false))
    );
    assert_eq!(p("tcp://h"), Ok(("h".into(), 1883, false)));
    assert_eq!(p("mqtts://h"), Ok(("h".into(), 8883, true)));
    assert_eq!(p("ssl://h:1234/"), Ok(("h".into(), 1234, true)));
    assert_eq!(p("mqtts://[::1]"), Ok(("::1".into(), 8883, true)));
    for bad in ["ws://h:1", "h:1883", "mqtt://h:x", "mqtt://"] {
        assert!(p(bad).unwrap_err().contains("invalid broker url"), "{bad}");
    }
    assert!(!p("mqtt://u:secret@h").unwrap_err().contains("secret"));
}

#[test]
fn the_machine_id_is_the_variable_else_the_file_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("machine-id");
    std::fs::write(&file, "abc123\n").unwrap();
    assert_eq!(machine_id_from(None, &file).unwrap(), "abc123");
    assert_eq!(
        machine_id_from(Some(" env-id\n".into()), &file).unwrap(),
        "env-id"
    );
    assert!(machine_id_from(Some("  ".into()), &file).is_err());
    let missing = machine_id_from(None, &dir.path().join("none")).unwrap_err();
    assert!(missing.to_string().contains(MACHINE_ID_ENV), "{missing}");
}

#[test]
fn settings_are_checked_and_nothing_secret_is_printed() {
    let other = builder().machine_id("m");
    let name = |c: &str| KeyClient::builder("mqtt://h", c, Zeroizing::new("p".into()));
    assert!(matches!(name("a/b").build(), Err(KeyError::BadName(_))));
    assert!(matches!(name("").build(), Err(KeyError::BadName(_))));
    let empty = KeyClient::builder("mqtt://h", "c", Zeroizing::new(String::new()));
    assert!(matches!(
        empty.machine_id("m").build(),
        Err(KeyError::Config(_))
    ));
    let zero = other.clone().timeout(Duration::ZERO).build().unwrap();
    assert_eq!(zero.inner.timeout, Duration::from_millis(1));
    let c = builder().build().unwrap();
    let s = hex::encode(km::client_secret("pw-x1", "backup", "mid-1").as_ref());
    assert_eq!(
        hex::encode(c.inner.secret.as_ref()),
        s,
        "the machine id is trimmed"
    );
    for shown in [format!("{other:?}"), format!("{c:?}")] {
        assert!(!shown.contains("pw-x1") && !shown.contains(&s), "{shown}");
    }
}

#[test]
fn replies_open_or_say_whether_to_try_again() {
    let c = builder().build().unwrap();
    let n = "0123456789abcdef0123456789abcdef";
    let (iv, value) =
        km::encrypt_reply(&c.inner.secret, "backup", "db", n, b"hunter2", [7; 12]).unwrap();
    let ok = |iv: &str, value: &str| KmReply {
        nonce: Some(n.into()),
        ok: true,
        iv: Some(iv.into()),
        value: Some(value.into()),
        error: None,
        retry_after_ms: None,
    };
    let v = c.inner.open("db", ok(&iv, &value)).ok().unwrap();
    assert_eq!(v.as_slice(), b"hunter2");
    let other_key = c.inner.open("other", ok(&iv, &value));
    assert!(matches!(other_key, Err(Failure::Final(KeyError::Decrypt))));
    let refused = |code: &str, after: Option<u64>| {
        let r = KmReply {
            ok: false,
            iv: None,
            value: None,
            error: Some(code.into()),
            retry_after_ms: after,
            ..ok("", "")
        };
        match c.inner.open("db", r) {
            Err(Failure::Again(e, d)) => (e.to_string(), Some(d)),
            Err(Failure::Final(e)) => (e.to_string(), None),
            Ok(_) => panic!("{code} opened"),
        }
    };
    for code in ["denied", "clock", "bad_request", "new\ncode"] {
        assert_eq!(refused(code, None).1, None, "{code} is final");
    }
    assert_eq!(refused("sealed", None).1, Some(Duration::ZERO));
    assert_eq!(refused("replay", None).1, Some(Duration::ZERO));
    let (text, after) = refused("limited", Some(1500));
    assert_eq!(after, Some(Duration::from_millis(1500)));
    assert!(
        text.contains("(limited)") && text.contains("1500 ms"),
        "{text}"
    );
    assert!(refused("new\ncode", None).0.contains("(newcode)"));
}

#[tokio::test]
async fn an_invalid_name_is_refused_unsent() {
    // The broker (port 1) does not exist: any attempt to send would fail otherwise.
    let c = builder().build().unwrap();
    for name in ["", "a/b", "+", "#", &"k".repeat(65)] {
        assert!(
            matches!(c.get(name).await, Err(KeyError::BadName(_))),
            "{name}"
        );
    }
}
