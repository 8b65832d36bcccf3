//! Property tests of the SDK's own parsers of outside input: ODF payloads from the broker,
//! signals applied to the features, the loose reading of messages that do not parse, the
//! registration API's replies, stored devices (tags, feature lists, SQLite rows), the API
//! URL and the builder's settings. The messages themselves are parsed by `iot-proto`, whose
//! own property tests cover them. Properties: no input panics; a refusal is a typed error
//! with a non-empty message; a valid value encoded and decoded again comes back unchanged.
//!
//! Run them with `cargo test -p da-sdk --lib proptests`. Test-only.

use std::time::Duration;

use iot_proto::wire::{Command, Direction, RegisterRequest, Signal};
use iot_proto::{DaId, Rev};
use proptest::prelude::*;
use proptest::test_runner::Config;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::config::{DaBuilder, MqttVersion, Retry, Units};
use crate::device::{Device, Tags};
use crate::error::{brief, Error};
use crate::features::{Effect, Features};
use crate::status::Protocol;
use crate::transport::{try_build, Registration};
use crate::{core, da, http, manager, odf};

/// Cases per property: enough to find shallow bugs, small enough for a 2-core machine.
fn config() -> Config {
    Config::with_cases(256)
}

/// Words that make the parsers go past their first checks.
const WORDS: &[&str] = &[
    "CONNECT",
    "DISCONNECT",
    "idf",
    "odf",
    "msg_id",
    "topic",
    "command",
    "rev",
    "id",
    "reply_to",
    "active",
    "deleting",
    "mqtt",
    "mqtts",
    "ws",
    "Sensor",
    "Display",
    "room",
    "",
    " ",
    "a\nb",
    "a/b",
    "#",
    "+",
    "00000000-0000-4000-8000-000000000001",
];

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(WORDS).prop_map(str::to_owned),
        any::<String>()
    ]
}

/// Any JSON value, nested a few levels, with the words above as strings and keys.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        // Floats that survive printing and parsing bit for bit (serde_json's default float
        // parsing is only best-effort), so encoded values compare equal.
        (-4096i32..4096).prop_map(|n| json!(f64::from(n) / 8.0)),
        word().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((word(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Raw bytes, or the text of a JSON value.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        json().prop_map(|v| v.to_string().into_bytes()),
    ]
}

fn is_reason(e: &Error) -> bool {
    !e.to_string().trim().is_empty()
}

#[derive(Debug, Deserialize, PartialEq)]
struct Reading {
    level: u8,
}

/// A signal shaped like the server's, one field sometimes wrong.
fn signal_json() -> impl Strategy<Value = Vec<u8>> {
    let feature = prop_oneof![
        Just("Sensor".to_owned()),
        Just("Display".to_owned()),
        word()
    ];
    let topic = prop_oneof![Just("t/1".to_owned()), Just("t/2".to_owned()), word()];
    let dir = prop::sample::select(&["idf", "odf"][..]);
    let cmd = prop::sample::select(&["CONNECT", "DISCONNECT", "BOGUS"][..]);
    (dir, feature, cmd, topic, word()).prop_map(|(d, f, c, t, m)| {
        let mut o = Map::new();
        o.insert("msg_id".into(), Value::String(m));
        o.insert(d.into(), Value::String(f));
        o.insert("command".into(), Value::String(c.into()));
        o.insert("topic".into(), Value::String(t));
        Value::Object(o).to_string().into_bytes()
    })
}

proptest! {
    #![proptest_config(config())]

    /// ODF data of any shape decodes or is a `DecodeError` naming what and why.
    #[test]
    fn odf_payloads_never_panic(p in payload()) {
        let w = "data of ODF `X`";
        fn check<T: serde::de::DeserializeOwned>(w: &str, p: &[u8]) {
            if let Err(e) = odf::decode::<T>(w, p) {
                assert!(!e.reason.is_empty() && e.what == w, "{e:?}");
                assert!(e.payload.chars().count() <= 123, "{e:?}");
            }
        }
        check::<i64>(w, &p);
        check::<u8>(w, &p);
        check::<f64>(w, &p);
        check::<String>(w, &p);
        check::<Vec<f64>>(w, &p);
        check::<(f64, String)>(w, &p);
        check::<Reading>(w, &p);
        check::<Value>(w, &p);
        prop_assert!(brief(&p).chars().count() <= 123);
    }

    /// What a push encodes, an ODF decodes into the same type.
    #[test]
    fn pushed_samples_round_trip(n in any::<i64>(), s in any::<String>(), v in prop::collection::vec((-4096i32..4096).prop_map(|n| f64::from(n) / 8.0), 0..8)) {
        let w = "data of ODF `X`";
        prop_assert_eq!(odf::decode::<i64>(w, &da::encode_sample(n)?).ok(), Some(n));
        prop_assert_eq!(odf::decode::<String>(w, &da::encode_sample(&s)?).ok(), Some(s.clone()));
        let pair = (n, s);
        prop_assert_eq!(odf::decode::<(i64, String)>(w, &da::encode_sample(&pair)?).ok(), Some(pair));
        let back = odf::decode::<Vec<f64>>(w, &da::encode_sample(&v)?).ok();
        prop_assert_eq!(back, Some(v));
    }

    /// Any signal the server may send is applied or refused with a reason; what is applied
    /// leaves the features consistent.
    #[test]
    fn signals_are_applied_or_refused(sigs in prop::collection::vec(prop_oneof![signal_json(), payload()], 1..12)) {
        let mut f = Features::new(["Sensor".to_owned()], ["Display".to_owned()]);
        for raw in sigs {
            let _ = core::loose_str(&raw, "msg_id");
            let Ok(sig) = Signal::from_json(&raw) else { continue };
            match f.apply(&sig, None) {
                Err(reason) => prop_assert!(!reason.trim().is_empty()),
                Ok(fx) => {
                    let name = sig.feature.as_str();
                    match (sig.direction, sig.command) {
                        (Direction::Idf, Command::Connect) => {
                            prop_assert_eq!(f.idf_topic(name), Some(sig.topic.as_str()));
                        }
                        (Direction::Idf, Command::Disconnect) => prop_assert_eq!(f.idf_topic(name), None),
                        (Direction::Odf, Command::Connect) => {
                            prop_assert_eq!(fx.last(), Some(&Effect::Subscribe(sig.topic.clone())));
                            prop_assert_eq!(f.odf_for_topic(&sig.topic), Some(name));
                        }
                        (Direction::Odf, Command::Disconnect) => {
                            prop_assert!(fx.iter().all(|e| matches!(e, Effect::Unsubscribe(_))));
                        }
                    }
                }
            }
        }
        for t in f.odf_topics() {
            prop_assert!(crate::features::valid_topic(t));
        }
    }

    /// A request or reply that does not parse is still read loosely for where to answer.
    #[test]
    fn loose_fields_never_panic(p in payload(), key in word()) {
        if let Some(s) = core::loose_str(&p, &key) {
            let v: Value = serde_json::from_slice(&p)?;
            prop_assert_eq!(v.get(&key).and_then(Value::as_str), Some(s.as_str()));
        }
    }

    /// Whatever the registration API answers becomes a reply or a typed error.
    #[test]
    fn registration_api_answers_never_panic(p in payload(), status in 100u16..600) {
        let id = DaId::new_v4();
        let url = "http://h/x";
        if let Err(e) = http::registration_reply(url, &id, &p) {
            prop_assert!(matches!(e, Error::Protocol { .. }) && is_reason(&e), "{e:?}");
        }
        if let Err(e) = http::record_rev(url, &p) {
            prop_assert!(matches!(e, Error::Protocol { .. }) && is_reason(&e), "{e:?}");
        }
        let code = StatusCode::from_u16(status)?;
        let e = http::rejection(code, url, &p);
        prop_assert!(matches!(e, Error::Rejected { status: s, .. } if s == status), "{e:?}");
    }

    /// A registration reply with any broker address and credentials round-trips, and the
    /// MQTT client built from it (both versions) is built or refused, never a panic.
    #[test]
    fn registration_replies_round_trip_and_build(
        scheme in prop_oneof![Just("mqtt".to_owned()), Just("tcp".to_owned()), word()],
        host in word(), port in any::<u16>(),
        user in proptest::option::of(word()), pass in proptest::option::of(word()),
    ) {
        let id = DaId::new_v4();
        let body = json!({
            "id": id, "state": "ok", "rev": "r1", "name": "1.Dummy",
            "url": {"scheme": scheme, "host": host, "port": port, "ws_scheme": "ws", "ws_port": 80},
            "ctrl_chans": iot_proto::topics::ctrl_chans(&id),
            "username": user, "password": pass,
        });
        let reg = http::registration_reply("u", &id, body.to_string().as_bytes())?;
        prop_assert_eq!(&reg.url.host, &host);
        prop_assert_eq!(reg.url.port, port);
        prop_assert_eq!(&reg.username, &user);
        let reg = Registration::from(reg);
        let opts = crate::config::Options::default();
        for proto in [Protocol::V311, Protocol::V5] {
            if let Err(e) = try_build(&id, &reg, &opts, proto) {
                prop_assert!(!e.is_empty() && !matches!(scheme.as_str(), "mqtt" | "tcp"), "{e}");
            }
        }
    }

    /// Tags read back from storage: any JSON is a tag set or an `InvalidDevice` error.
    #[test]
    fn tags_from_any_json(v in json()) {
        match Tags::from_json(&v) {
            Ok(t) => prop_assert_eq!(Tags::from_json(&t.to_json())?, t),
            Err(e) => prop_assert!(matches!(e, Error::InvalidDevice(_)) && is_reason(&e)),
        }
    }

    /// A stored device from any parts is rebuilt exactly or refused with a reason.
    #[test]
    fn devices_from_any_parts(model in word(), name in word(), idfs in json(), odfs in json(), tags in json()) {
        let id = DaId::new_v4();
        match Device::from_parts(id, &model, &name, &idfs, &odfs, &tags) {
            Ok(d) => {
                let back = Device::from_parts(id, d.model(), d.name(), &d.idf_json(), &d.odf_json(), &d.tags().to_json())?;
                prop_assert_eq!(back.hash(), d.hash());
                prop_assert_eq!(back, d);
            }
            Err(e) => prop_assert!(matches!(e, Error::InvalidDevice(_)) && is_reason(&e), "{e:?}"),
        }
    }

    /// Shaped feature lists: names and units of every kind, sometimes malformed entries.
    #[test]
    fn devices_from_shaped_features(feats in prop::collection::vec((word(), json()), 0..6), extra in json()) {
        let list = Value::Array(feats.into_iter().map(|(n, u)| json!([n, u])).chain([extra]).collect());
        let (id, empty) = (DaId::new_v4(), json!([]));
        for (i, o) in [(&list, &empty), (&empty, &list)] {
            if let Err(e) = Device::from_parts(id, "M", "n", i, o, &json!({})) {
                prop_assert!(is_reason(&e));
            }
        }
    }

    /// Rows of the SQLite device store, as a corrupted or hand-edited file may hold them.
    #[test]
    fn stored_rows_never_panic(
        id in prop_oneof![Just(DaId::new_v4().to_string()), word()],
        texts in prop::collection::vec(prop_oneof![word(), json().prop_map(|v| v.to_string())], 6),
        state in word(),
    ) {
        let row = (id, texts[0].clone(), texts[1].clone(), texts[2].clone(), texts[3].clone(), texts[4].clone(), texts[5].clone(), state);
        if let Err(e) = manager::row_to_stored(row) {
            prop_assert!(matches!(e, Error::Storage(_)) && is_reason(&e), "{e:?}");
        }
    }

    /// A valid device's row reads back as the same device.
    #[test]
    fn stored_rows_round_trip(name in "[a-z]{1,8}", unit in any::<String>(), tag in any::<String>(), deleting in any::<bool>()) {
        let d = Device::new(DaId::new_v4(), "M", &name)?.with_idf("S", Units(json!([unit])))?;
        let d = match d.clone().with_tag("k", &tag) { Ok(t) => t, Err(_) => d };
        let state = if deleting { "deleting" } else { "active" };
        let row = (d.id().to_string(), d.model().to_owned(), d.name().to_owned(), d.idf_json().to_string(),
            d.odf_json().to_string(), d.tags().to_json().to_string(), d.hash(), state.to_owned());
        let s = manager::row_to_stored(row)?;
        prop_assert_eq!(s.device, d);
    }

    /// Any API URL is usable or an `InvalidUrl` error saying why.
    #[test]
    fn api_urls_never_panic(u in prop_oneof![
        word(),
        (prop::sample::select(&["http", "https", "ftp", "mqtt", ""][..]), word(), any::<u16>(), word())
            .prop_map(|(s, h, p, path)| format!("{s}://{h}:{p}/{path}")),
    ]) {
        if let Err(e) = http::Registrar::new(&u, Duration::from_secs(1)) {
            prop_assert!(matches!(e, Error::InvalidUrl { .. }) && is_reason(&e), "{e:?}");
        }
    }

    /// Any builder settings are refused with a reason naming them, or usable: the MQTT
    /// client, the runtime's queues and the clock all take them without a panic.
    #[test]
    fn builder_settings_are_checked(
        ms in prop::collection::vec(prop_oneof![0u64..100_000, any::<u64>()], 7),
        version in prop::sample::select(&[MqttVersion::Auto, MqttVersion::V311, MqttVersion::V5][..]),
        buffers in (prop_oneof![0usize..100, any::<usize>()], prop_oneof![0usize..100, any::<usize>()]),
        capacity in 0usize..3,
    ) {
        let d = |i: usize| Duration::from_millis(ms[i]);
        let b = DaBuilder::new("http://h").model("M").idf("S", ()).mqtt_version(version)
            .keep_alive(d(0)).connect_timeout(d(1)).http_timeout(d(2)).resume_timeout(d(3))
            .call_timeout(d(4)).stop_timeout(d(5)).retry(Retry::For(d(6)))
            .odf_buffer(buffers.0).max_handlers(buffers.1)
            .outbox(crate::config::OutboxConfig::memory(capacity));
        match b.request() {
            Err(e) => prop_assert!(matches!(e, Error::Config(_)) && is_reason(&e), "{e:?}"),
            Ok(req) => {
                let o = &b.opts;
                for t in [o.connect_timeout, o.resume_timeout, o.call_timeout, o.stop_timeout] {
                    let _ = std::time::Instant::now() + t;
                }
                let _ = tokio::sync::Semaphore::new(o.max_handlers);
                let _ = tokio::sync::mpsc::channel::<()>(o.odf_buffer);
                let id = DaId::new_v4();
                let reg = Registration::from(http::registration_reply("u", &id, reply(&id).as_bytes())?);
                let protos: &[Protocol] = match version {
                    MqttVersion::V311 => &[Protocol::V311],
                    MqttVersion::V5 => &[Protocol::V5],
                    MqttVersion::Auto => &[Protocol::V311, Protocol::V5],
                };
                for p in protos {
                    try_build(&id, &reg, o, *p).map_err(TestCaseError::fail)?;
                }
                prop_assert_eq!(RegisterRequest::from_json(req.to_json().to_string().as_bytes())?, req);
            }
        }
    }

    /// Any model, feature names and units: a registration body that round-trips, or a
    /// `Config` error with a reason.
    #[test]
    fn registration_bodies_round_trip(model in word(), idfs in prop::collection::vec((word(), json()), 0..4), odfs in prop::collection::vec(word(), 0..4)) {
        let mut b = DaBuilder::new("http://h").model(model);
        for (n, u) in idfs {
            b = b.idf(n, Units(u));
        }
        for n in odfs {
            b = b.odf(n, ());
        }
        match b.request() {
            Ok(req) => prop_assert_eq!(RegisterRequest::from_json(req.to_json().to_string().as_bytes())?, req),
            Err(e) => prop_assert!(matches!(e, Error::Config(_)) && is_reason(&e), "{e:?}"),
        }
    }
}

/// A registration reply for `id` with a plain `mqtt` broker.
fn reply(id: &DaId) -> String {
    json!({
        "id": id, "state": "ok", "rev": Rev::generate(), "name": "1.M",
        "url": {"scheme": "mqtt", "host": "127.0.0.1", "port": 1883, "ws_scheme": "ws", "ws_port": 8083},
        "ctrl_chans": iot_proto::topics::ctrl_chans(id),
    })
    .to_string()
}

/// Settings the MQTT client or the runtime would have panicked on, found by
/// `builder_settings_are_checked`; they are refused before anything starts.
#[test]
fn settings_that_panicked_are_refused() {
    let b = || DaBuilder::new("http://h").model("M");
    let refused = [
        b().keep_alive(Duration::from_millis(500)),
        b().keep_alive(Duration::from_secs(2)),
        b().mqtt_version(MqttVersion::V5).keep_alive(Duration::ZERO),
        b().keep_alive(Duration::from_secs(70_000)),
        b().max_handlers(usize::MAX),
        b().odf_buffer(usize::MAX),
        b().call_timeout(Duration::MAX),
        b().resume_timeout(Duration::MAX),
        b().stop_timeout(Duration::MAX),
        b().retry(Retry::For(Duration::MAX)),
        b().outbox(crate::config::OutboxConfig::memory(0)),
    ];
    for r in refused {
        let e = r.request().unwrap_err();
        assert!(matches!(e, Error::Config(_)), "{e:?}");
    }
    let ok = b()
        .mqtt_version(MqttVersion::V311)
        .keep_alive(Duration::ZERO)
        .request();
    assert!(ok.is_ok(), "{ok:?}");
}
