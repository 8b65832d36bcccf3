//! Stream messages round trip; flow control and reordering under any delivery order.

use proptest::prelude::*;
use serde_json::json;

use super::*;

#[test]
fn messages_round_trip_and_plain_replies_are_not_stream_messages() {
    for m in [
        StreamMsg::Item {
            id: "c1".into(),
            seq: 0,
            item: json!({"n": 1}),
        },
        StreamMsg::Item {
            id: "c1".into(),
            seq: 7,
            item: Value::Null,
        },
        StreamMsg::End {
            id: "c1".into(),
            seq: 8,
        },
        StreamMsg::Failed {
            id: "c1".into(),
            seq: 3,
            code: RpcErrorCode::Handler,
            reason: "disk full".into(),
        },
    ] {
        let body = m.to_json().to_string();
        assert_eq!(StreamMsg::from_json(body.as_bytes()).unwrap(), Some(m));
    }
    assert_eq!(
        StreamMsg::from_json(br#"{"id":"c1","state":"ok","result":1}"#).unwrap(),
        None
    );
    for bad in [
        &br#"{"seq":-1,"item":1}"#[..],
        br#"{"seq":1}"#,
        br#"{"seq":1,"state":"ok"}"#,
        br#"{"seq":1,"id":5,"item":1}"#,
        b"[]",
    ] {
        assert!(
            StreamMsg::from_json(bad).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn controls_are_told_apart_from_requests() {
    for c in [
        StreamControl::Ack {
            id: "c1".into(),
            seq: 15,
        },
        StreamControl::Cancel { id: "c1".into() },
    ] {
        let body = c.to_json().to_string();
        assert_eq!(StreamControl::parse(body.as_bytes()), Some(Ok(c)));
    }
    assert_eq!(StreamControl::parse(br#"{"method":"scan","ack":1}"#), None);
    assert_eq!(StreamControl::parse(br#"{"id":"x"}"#), None);
    assert_eq!(StreamControl::parse(b"junk"), None);
    for bad in [
        &br#"{"ack":1}"#[..],
        br#"{"id":"x","ack":"1"}"#,
        br#"{"id":"x","cancel":false}"#,
        br#"{"id":"x","ack":1,"cancel":true}"#,
    ] {
        assert!(
            matches!(StreamControl::parse(bad), Some(Err(_))),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn the_requested_window() {
    let w =
        |v: Value| requested_window(v.as_object().unwrap()).map(|r| r.map_err(|e| e.to_string()));
    assert_eq!(w(json!({"method": "m"})), None);
    assert_eq!(w(json!({"stream": false})), None);
    assert_eq!(w(json!({"stream": true})), Some(Ok(DEFAULT_WINDOW)));
    assert_eq!(w(json!({"stream": {}})), Some(Ok(DEFAULT_WINDOW)));
    assert_eq!(w(json!({"stream": {"window": 4}})), Some(Ok(4)));
    for bad in [
        json!({"stream": {"window": 0}}),
        json!({"stream": {"window": 5000}}),
        json!({"stream": 3}),
    ] {
        assert!(matches!(w(bad.clone()), Some(Err(_))), "{bad}");
    }
}

#[test]
fn the_window_lets_out_window_items_ahead_of_the_acknowledgements() {
    let mut w = Window::new(3);
    let mut sent = Vec::new();
    while w.may_send() {
        sent.push(w.sent());
    }
    assert_eq!(sent, [0, 1, 2]);
    assert!(!w.ack(3), "an ack of an item not sent");
    assert!(w.ack(0));
    assert!(w.may_send());
    assert_eq!(w.sent(), 3);
    assert!(!w.may_send());
    assert!(!w.ack(0), "a stale ack");
    assert!(w.ack(3));
    assert_eq!(w.in_flight(), 0);
}

proptest! {
    /// Whatever order and repetition the broker delivers in, the caller hands every item on
    /// once and in order, holds at most a window of them, and the server never has more than
    /// a window in flight.
    #[test]
    fn any_delivery_order_gives_every_item_once_in_order(
        window in 1u32..8,
        total in 0u64..60,
        shuffles in proptest::collection::vec((0usize..8, any::<bool>()), 0..200),
    ) {
        let mut server = Window::new(window);
        let mut caller: Reorder<u64> = Reorder::new(window);
        let mut network: Vec<u64> = Vec::new();
        let mut got = Vec::new();
        let mut step = 0;
        while (got.len() as u64) < total {
            while server.may_send() && server.next() < total {
                network.push(server.sent());
            }
            prop_assert!(server.in_flight() <= u64::from(window));
            // Deliver one message from anywhere in flight, sometimes twice.
            let (pick, dup) = shuffles.get(step).copied().unwrap_or((0, false));
            step += 1;
            let i = pick % network.len();
            let seq = if dup { network[i] } else { network.remove(i) };
            prop_assert!(caller.push(seq, seq).is_ok());
            prop_assert!(caller.waiting() <= window as usize + 1);
            while let Some(s) = caller.pop() {
                got.push(s);
                server.ack(s);
            }
        }
        prop_assert_eq!(got, (0..total).collect::<Vec<_>>());
    }
}

#[test]
fn a_message_past_the_window_is_refused() {
    let mut r: Reorder<()> = Reorder::new(2);
    assert!(r.push(2, ()).is_ok(), "the end message after a full window");
    assert_eq!(
        r.push(3, ()),
        Err(BeyondWindow {
            seq: 3,
            next: 0,
            last: 2
        })
    );
}
