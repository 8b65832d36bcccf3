//! Properties of the registration bodies, the control channel, the device API and the
//! ODF-write API.

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::*;
use crate::ids::{MsgId, Rev};
use crate::wire::control::{Ack, Command, Direction, Presence, Signal, Uplink};
use crate::wire::device_api::DeviceRequest;
use crate::wire::odf_api::OdfWrite;
use crate::wire::register::{
    DaRecord, DeregisterRequest, Feature, RegisterRequest, RegisterResponse,
};
use crate::wire::WireError;

/// Every inbound parser of this file on one body: none panics, each refusal has a reason.
fn parse_all(body: &[u8]) -> Result<(), TestCaseError> {
    if let Err(e) = RegisterRequest::from_json(body) {
        has_reason(&e)?;
    }
    if let Err(e) = DeregisterRequest::from_json(body) {
        has_reason(&e)?;
    }
    if let Err(e) = Signal::from_json(body) {
        has_reason(&e)?;
    }
    if let Err(e) = Uplink::from_json(body) {
        has_reason(&e)?;
    }
    if let Err((_, e)) = DeviceRequest::parse(body) {
        has_reason(&e)?;
    }
    if let Err((_, e)) = OdfWrite::parse(body) {
        has_reason(&e)?;
    }
    if let Err(e) = serde_json::from_slice::<RegisterResponse>(body) {
        has_reason(&e)?;
    }
    if let Err(e) = serde_json::from_slice::<DaRecord>(body) {
        has_reason(&e)?;
    }
    Ok(())
}

/// A feature list entry as SDKs send it, or something close.
fn feature_entry() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => (feature_text(), arb_json()).prop_map(|(n, u)| json!([n, u])),
        2 => feature_text().prop_map(|n| json!([n])),
        2 => feature_text().prop_map(Value::String),
        1 => Just(Value::Null),
        1 => arb_json(),
    ]
    .boxed()
}

/// A registration body with its real fields, each usually valid.
fn register_body() -> impl Strategy<Value = Value> {
    let list = || {
        prop::collection::vec(feature_entry(), 0..5)
            .prop_map(Value::Array)
            .boxed()
    };
    let profile = (
        field(prop_oneof![Just(json!("M")), any::<String>().prop_map(Value::String)].boxed()),
        extra(),
    )
        .prop_map(|(model, extra)| object(vec![("model", model)], extra));
    (
        field(prop_oneof![Just(json!("DA")), any::<String>().prop_map(Value::String)].boxed()),
        field(list()),
        field(list()),
        field(Just(json!(["mqtt"])).boxed()),
        field(profile.boxed()),
        extra(),
    )
        .prop_map(|(name, idf, odf, protos, profile, extra)| {
            object(
                vec![
                    ("name", name),
                    ("idf_list", idf),
                    ("odf_list", odf),
                    ("accept_protos", protos),
                    ("profile", profile),
                ],
                extra,
            )
        })
}

/// A signal or an uplink message with its real fields.
fn control_body() -> impl Strategy<Value = Value> {
    let s = |v: &'static [&'static str]| {
        prop::sample::select(v)
            .prop_map(|w| Value::String(w.to_owned()))
            .boxed()
    };
    (
        field(any::<String>().prop_map(Value::String).boxed()),
        field(s(&[
            "CONNECT",
            "DISCONNECT",
            "ok",
            "error",
            "online",
            "offline",
        ])),
        field(s(&["CONNECT", "DISCONNECT"])),
        field(feature_text().prop_map(Value::String).boxed()),
        field(feature_text().prop_map(Value::String).boxed()),
        field(any::<String>().prop_map(Value::String).boxed()),
        field(any::<String>().prop_map(Value::String).boxed()),
        any::<(bool, bool, bool)>(),
    )
        .prop_map(
            |(msg_id, state, command, idf, odf, topic, rev, (m, i, o))| {
                object(
                    vec![
                        ("msg_id", msg_id.filter(|_| m)),
                        ("state", state),
                        ("command", command),
                        ("idf", idf.filter(|_| i)),
                        ("odf", odf.filter(|_| o)),
                        ("topic", topic.clone()),
                        ("rev", rev),
                        ("reason", topic),
                    ],
                    None,
                )
            },
        )
}

fn feature() -> impl Strategy<Value = Feature> {
    (feature_text(), arb_json_exact()).prop_map(|(n, units)| Feature {
        name: n.parse().expect("a valid feature name"),
        units,
    })
}

fn features() -> impl Strategy<Value = Vec<Feature>> {
    prop::collection::vec(feature(), 0..4).prop_map(|mut fs| {
        let mut seen = std::collections::HashSet::new();
        fs.retain(|f| seen.insert(f.name.clone()));
        fs
    })
}

/// A valid registration request.
fn register_request() -> impl Strategy<Value = RegisterRequest> {
    let name = prop::option::of(
        "[^\\p{Cc}]{1,30}".prop_filter("blank or long", |s| !s.trim().is_empty() && s.len() <= 256),
    );
    let profile = (
        "[a-zA-Z_ ]{0,10}[a-zA-Z]",
        prop::collection::vec(
            (
                "[a-z_]{1,8}",
                // Strings with control characters are refused (a test of their own).
                arb_json_exact().prop_filter("control characters", |v| {
                    crate::wire::register::control_in(v, "").is_none()
                }),
            ),
            0..3,
        ),
    )
        .prop_map(|(model, extras)| {
            let mut m: Map<String, Value> = extras.into_iter().collect();
            m.insert("model".into(), Value::String(model));
            m
        });
    let protos = prop::collection::vec("[a-z]{1,6}", 0..3).prop_map(|mut p| {
        p.push("mqtt".into());
        p
    });
    (name, features(), features(), protos, profile).prop_map(
        |(name, idf_list, odf_list, accept_protos, profile)| RegisterRequest {
            name,
            idf_list,
            odf_list,
            accept_protos,
            profile,
        },
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic(body in bytes()) {
        parse_all(&body)?;
    }

    #[test]
    fn shaped_registration_bodies_are_parsed_or_refused(body in register_body()) {
        let text = body.to_string();
        parse_all(text.as_bytes())?;
        if let Ok(r) = RegisterRequest::from_json(text.as_bytes()) {
            prop_assert!(r.accept_protos.iter().any(|p| p == "mqtt"));
            prop_assert!(!r.model().trim().is_empty());
            for list in [&r.idf_list, &r.odf_list] {
                let names: std::collections::HashSet<_> = list.iter().map(|f| &f.name).collect();
                prop_assert_eq!(names.len(), list.len(), "duplicate features accepted");
            }
        }
    }

    #[test]
    fn shaped_control_messages_are_parsed_or_refused(body in control_body()) {
        let text = body.to_string();
        parse_all(text.as_bytes())?;
        if let Ok(s) = Signal::from_json(text.as_bytes()) {
            prop_assert_eq!(Some(s.topic.as_str()), body["topic"].as_str());
        }
    }

    #[test]
    fn device_requests_echo_their_fields(
        op in prop_oneof![Just("attach".to_owned()), Just("detach".to_owned()), any::<String>()],
        extra in extra(),
    ) {
        let (text, body) = as_sent(&object(vec![("op", Some(json!(op)))], extra));
        let known = matches!(body["op"].as_str(), Some("attach" | "detach"));
        match DeviceRequest::parse(text.as_bytes()) {
            Ok(r) => {
                prop_assert!(known);
                prop_assert_eq!(Some(r.op.as_str()), body["op"].as_str());
                prop_assert_eq!(Value::Object(r.fields), body);
            }
            Err((fields, e)) => {
                prop_assert!(!known, "{} refused: {}", body, e);
                has_reason(&e)?;
                prop_assert_eq!(Value::Object(fields), body);
            }
        }
    }

    #[test]
    fn registration_requests_round_trip(r in register_request()) {
        let back = RegisterRequest::from_json(r.to_json().to_string().as_bytes());
        prop_assert_eq!(back, Ok(r));
    }

    #[test]
    fn replies_and_records_round_trip(
        n in any::<u128>(), rev in any::<String>(), name in any::<String>(),
        idf_list in features(), odf_list in features(), time in 0u32..u32::MAX,
        creds in prop::option::of((any::<String>(), any::<String>())),
    ) {
        let id = crate::DaId::from_uuid(uuid::Uuid::from_u128(n));
        let reply = RegisterResponse {
            id,
            state: "ok".into(),
            rev: Rev::from(rev.clone()),
            name: name.clone(),
            url: crate::wire::BrokerUrl {
                scheme: "mqtt".into(),
                host: name.clone(),
                port: 1883,
                ws_scheme: "ws".into(),
                ws_port: 0,
            },
            ctrl_chans: crate::topics::ctrl_chans(&id),
            username: creds.as_ref().map(|c| c.0.clone()),
            password: creds.map(|c| c.1),
        };
        let text = serde_json::to_vec(&reply).expect("encodes");
        prop_assert_eq!(serde_json::from_slice::<RegisterResponse>(&text).ok(), Some(reply));
        let record = DaRecord {
            id,
            rev: Rev::from(rev.clone()),
            register_time: f64::from(time),
            name,
            accept_protos: vec!["mqtt".into()],
            idf_list,
            odf_list,
            profile: Map::new(),
        };
        let text = serde_json::to_vec(&record).expect("encodes");
        prop_assert_eq!(serde_json::from_slice::<DaRecord>(&text).ok(), Some(record));
        let dereg = DeregisterRequest { rev: Rev::from(rev) };
        let text = serde_json::to_vec(&dereg).expect("encodes");
        prop_assert_eq!(DeregisterRequest::from_json(&text), Ok(dereg));
    }

    #[test]
    fn signals_and_uplinks_round_trip(
        msg_id in any::<String>(), feature in feature_text(), topic in any::<String>(),
        odf in any::<bool>(), connect in any::<bool>(), online in any::<bool>(),
        reason in prop::option::of(any::<String>()),
    ) {
        let s = Signal {
            msg_id: MsgId::from(msg_id.clone()),
            direction: if odf { Direction::Odf } else { Direction::Idf },
            feature: feature.parse().expect("a valid feature name"),
            command: if connect { Command::Connect } else { Command::Disconnect },
            topic,
        };
        prop_assert_eq!(Signal::from_json(s.to_json().to_string().as_bytes()), Ok(s));
        let state = if online { Presence::Online } else { Presence::Offline };
        let rev = Rev::from(msg_id.clone());
        let body = Uplink::presence_json(state, &rev).to_string();
        prop_assert_eq!(Uplink::from_json(body.as_bytes()), Ok(Uplink::Presence { state, rev }));
        let ack = reason.map_or(Ack::Ok, |reason| Ack::Error { reason });
        let mut reply = serde_json::to_value(&ack).expect("encodes");
        reply["msg_id"] = Value::String(msg_id.clone());
        let back = Uplink::from_json(reply.to_string().as_bytes());
        prop_assert_eq!(back, Ok(Uplink::Reply { msg_id: MsgId::from(msg_id), ack }));
    }
}

#[test]
fn deeply_nested_json_is_refused_as_malformed() {
    let deep = nested(10_000);
    parse_all(&deep).expect("no panic and a reason");
    let e = RegisterRequest::from_json(&deep).expect_err("refused");
    assert!(
        matches!(&e, WireError::Json(why) if why.contains("recursion limit")),
        "{e}"
    );
    // Just under the limit, inside a field: parsed, then refused with a short reason.
    let inner = String::from_utf8(nested(120)).expect("ascii");
    let body =
        format!(r#"{{"accept_protos":["mqtt"],"profile":{{"model":"M"}},"idf_list":{inner}}}"#);
    let e = RegisterRequest::from_json(body.as_bytes()).expect_err("refused");
    assert!(e.to_string().len() < 200, "{e}");
    let (fields, e) = DeviceRequest::parse(&deep).expect_err("refused");
    assert!(
        fields.is_empty() && e.to_string().starts_with("malformed JSON"),
        "{e}"
    );
}
