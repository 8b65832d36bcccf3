//! Properties of request/response bodies between DAs and apps.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::rpc::{RpcErrorCode, RpcOutcome, RpcReply, RpcRequest};

fn parse_both(body: &[u8]) -> Result<(), TestCaseError> {
    if let Err(e) = RpcRequest::from_json(body) {
        has_reason(&e)?;
    }
    if let Err(e) = RpcReply::from_json(body) {
        has_reason(&e)?;
    }
    Ok(())
}

/// A request or a reply with its real fields, each usually valid.
fn shaped_body() -> impl Strategy<Value = Value> {
    let s = || any::<String>().prop_map(Value::String).boxed();
    let state = prop_oneof![Just(json!("ok")), Just(json!("error"))].boxed();
    let code = prop::sample::select(
        &[
            "unknown_method",
            "bad_request",
            "handler",
            "busy",
            "deadline",
            "teapot",
        ][..],
    )
    .prop_map(|c| json!(c))
    .boxed();
    (
        (field(s()), field(s()), field(arb_json()), field(s())),
        field(any::<u64>().prop_map(Value::from).boxed()),
        (field(state), field(arb_json()), field(code), field(s())),
        extra(),
    )
        .prop_map(
            |((id, method, args, reply_to), deadline, (state, result, code, reason), extra)| {
                object(
                    vec![
                        ("id", id),
                        ("method", method),
                        ("args", args),
                        ("reply_to", reply_to),
                        ("deadline_ms", deadline),
                        ("state", state),
                        ("result", result),
                        ("code", code),
                        ("reason", reason),
                    ],
                    extra,
                )
            },
        )
}

fn code() -> impl Strategy<Value = RpcErrorCode> {
    prop::sample::select(
        &[
            RpcErrorCode::UnknownMethod,
            RpcErrorCode::BadRequest,
            RpcErrorCode::Handler,
            RpcErrorCode::Busy,
            RpcErrorCode::Deadline,
            RpcErrorCode::Other,
        ][..],
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic(body in bytes()) {
        parse_both(&body)?;
    }

    #[test]
    fn shaped_bodies_are_parsed_or_refused(body in shaped_body()) {
        let (text, body) = as_sent(&body);
        parse_both(text.as_bytes())?;
        if let Ok(r) = RpcRequest::from_json(text.as_bytes()) {
            prop_assert_eq!(Some(r.method.as_str()), body["method"].as_str());
            prop_assert_eq!(&r.args, body.get("args").unwrap_or(&Value::Null));
        }
        if let Ok(r) = RpcReply::from_json(text.as_bytes()) {
            let ok = matches!(r.outcome, RpcOutcome::Ok(_));
            prop_assert_eq!(body["state"].as_str(), Some(if ok { "ok" } else { "error" }));
        }
    }

    #[test]
    fn requests_round_trip(
        id in prop::option::of(any::<String>()), method in any::<String>(), args in arb_json_exact(),
        reply_to in prop::option::of(any::<String>()), deadline_ms in prop::option::of(any::<u64>()),
        stream in prop::option::of(1..=crate::rpc_stream::MAX_WINDOW),
    ) {
        let r = RpcRequest { id, method, args, reply_to, deadline_ms, stream };
        prop_assert_eq!(RpcRequest::from_json(r.to_json().to_string().as_bytes()), Ok(r));
    }

    #[test]
    fn replies_round_trip(
        id in any::<String>(), result in arb_json_exact(), code in code(),
        reason in prop::option::of(any::<String>()),
    ) {
        let outcome = match reason {
            None => RpcOutcome::Ok(result),
            Some(reason) => RpcOutcome::Error { code, reason },
        };
        let r = RpcReply { id, outcome };
        prop_assert_eq!(RpcReply::from_json(r.to_json().to_string().as_bytes()), Ok(r));
    }
}

#[test]
fn deeply_nested_rpc_bodies_are_refused_as_malformed() {
    let deep = nested(10_000);
    parse_both(&deep).expect("no panic and a reason");
    let e = RpcRequest::from_json(&deep).expect_err("refused");
    assert!(e.to_string().starts_with("malformed JSON"), "{e}");
    // Just under serde_json's limit, as arguments: accepted and kept as sent.
    let args = String::from_utf8(nested(120)).expect("ascii");
    let body = format!(r#"{{"method":"m","args":{args}}}"#);
    let r = RpcRequest::from_json(body.as_bytes()).expect("accepted");
    assert_eq!(r.args.to_string(), args);
}
