//! The checks in their order, with a real client secret and MACs.

use super::*;

const NOW: i64 = 1_796_290_000;

fn limits() -> Limits {
    Limits {
        clock_skew: Duration::from_secs(90),
        rate: "3/60s".parse().unwrap(),
        panic_after: 3,
        panic_window: Duration::from_secs(60),
    }
}

fn request(s: &Key, key: &str, ts: i64, nonce: &str) -> KmRequest {
    KmRequest {
        key: key.into(),
        ts,
        nonce: nonce.into(),
        mac: crypto::request_mac(s, "backup", key, ts, nonce),
    }
}

fn nonce(i: u8) -> String {
    format!("{i:032x}")
}

#[test]
fn requests_parse_or_are_bad_requests() {
    let ok = format!(
        r#"{{"key":"db","ts":{NOW},"nonce":"{}","mac":"{}"}}"#,
        nonce(1),
        "a".repeat(64)
    );
    let bad = |body: &str| parse_or_ignore(body.as_bytes());
    assert_eq!(bad(&ok).unwrap().unwrap().ts, NOW);
    assert_eq!(bad(r#"{"nonce":"n1"}"#), Some(Err(Some("n1".into()))));
    assert_eq!(
        bad(r#"{"key":"db","ts":"1","nonce":"x","mac":"y"}"#),
        Some(Err(Some("x".into())))
    );
    let upper = ok.replace(&"a".repeat(64), &"A".repeat(64));
    assert!(bad(&upper).unwrap().is_err(), "lowercase hex only");
    let slash = ok.replace("\"db\"", "\"a/b\"");
    assert!(bad(&slash).unwrap().is_err());
    assert_eq!(bad("not json"), None, "not a request: no reply");
    assert_eq!(bad("[1]"), None);
    let long_nonce = format!(r#"{{"nonce":"{}"}}"#, "n".repeat(65));
    assert_eq!(
        bad(&long_nonce),
        Some(Err(None)),
        "a long nonce is not echoed"
    );
    assert_eq!(
        failure(Some("n"), Code::Limited { retry_after_ms: 5 }),
        json!({"nonce": "n", "ok": false, "error": "limited", "retry_after_ms": 5})
    );
}

#[test]
fn checks_in_order_and_only_an_accepted_request_changes_state() {
    let s = crypto::client_secret("pw", "backup", "mid");
    let mut g = Guard::new(limits());
    let t0 = Instant::now();
    let view = |may_read| {
        Some(ClientView {
            secret: &s,
            may_read,
        })
    };
    let r = request(&s, "db", NOW, &nonce(1));
    assert_eq!(
        g.check("backup", &r, view(true), true, NOW, t0),
        Err(Code::Sealed)
    );
    // Wrong MAC, unknown client, unknown or forbidden key: one answer.
    let mut forged = r.clone();
    forged.mac = "0".repeat(64);
    assert_eq!(
        g.check("backup", &forged, view(true), false, NOW, t0),
        Err(Code::Denied)
    );
    assert_eq!(
        g.check("backup", &r, None, false, NOW, t0),
        Err(Code::Denied)
    );
    assert_eq!(
        g.check("backup", &r, view(false), false, NOW, t0),
        Err(Code::Denied)
    );
    let other = crypto::client_secret("pw", "backup", "another machine");
    let wrong_machine = request(&other, "db", NOW, &nonce(1));
    assert_eq!(
        g.check("backup", &wrong_machine, view(true), false, NOW, t0),
        Err(Code::Denied)
    );
    // A forged request with a future ts changed nothing: the real one passes.
    let mut future = request(&s, "db", NOW + 50, &nonce(9));
    future.mac = "f".repeat(64);
    assert_eq!(
        g.check("backup", &future, view(true), false, NOW, t0),
        Err(Code::Denied)
    );
    assert_eq!(g.check("backup", &r, view(true), false, NOW, t0), Ok(()));
    // The same request again: replay; an older ts: replay; out of the window: clock.
    assert_eq!(
        g.check("backup", &r, view(true), false, NOW, t0),
        Err(Code::Replay)
    );
    let older = request(&s, "db", NOW - 1, &nonce(2));
    assert_eq!(
        g.check("backup", &older, view(true), false, NOW, t0),
        Err(Code::Replay)
    );
    let stale = request(&s, "db", NOW - 91, &nonce(3));
    assert_eq!(
        g.check("backup", &stale, view(true), false, NOW, t0),
        Err(Code::Clock)
    );
    let ahead = request(&s, "db", NOW + 91, &nonce(4));
    assert_eq!(
        g.check("backup", &ahead, view(true), false, NOW, t0),
        Err(Code::Clock)
    );
    // Rate: 3 per minute for this client (one used above).
    for i in 5..7 {
        let ok = request(&s, "db", NOW, &nonce(i));
        assert_eq!(g.check("backup", &ok, view(true), false, NOW, t0), Ok(()));
    }
    let over = request(&s, "db", NOW, &nonce(8));
    assert!(matches!(
        g.check("backup", &over, view(true), false, NOW, t0),
        Err(Code::Limited { retry_after_ms }) if retry_after_ms > 19_000
    ));
    // A replayed capture long after: its nonce is forgotten, the clock refuses it.
    let later = NOW + 1000;
    assert_eq!(
        g.check(
            "backup",
            &r,
            view(true),
            false,
            later,
            t0 + Duration::from_secs(1000)
        ),
        Err(Code::Clock)
    );
}

#[test]
fn panic_mode_after_n_denials_within_the_window() {
    let mut g = Guard::new(limits());
    let t0 = Instant::now();
    assert!(!g.denied(t0));
    assert!(!g.denied(t0 + Duration::from_secs(30)));
    // The first denial left the window: still two.
    assert!(!g.denied(t0 + Duration::from_secs(61)));
    assert!(g.denied(t0 + Duration::from_secs(62)));
    let mut off = Guard::new(Limits {
        panic_after: 0,
        ..limits()
    });
    assert!((0..100).all(|_| !off.denied(t0)));
}

#[test]
fn a_request_made_before_this_process_started_is_a_replay() {
    let s = crypto::client_secret("pw", "backup", "mid");
    let mut g = Guard::new(limits()).not_before(NOW);
    let view = || {
        Some(ClientView {
            secret: &s,
            may_read: true,
        })
    };
    let t0 = Instant::now();
    let before = request(&s, "db", NOW - 10, &nonce(1));
    assert_eq!(
        g.check("backup", &before, view(), false, NOW + 5, t0),
        Err(Code::Replay)
    );
    let after = request(&s, "db", NOW, &nonce(2));
    assert_eq!(
        g.check("backup", &after, view(), false, NOW + 5, t0),
        Ok(())
    );
}
