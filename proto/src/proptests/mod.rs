//! Property tests of every parser of outside input in this crate: arbitrary bytes, arbitrary
//! JSON values and JSON shaped like each message (its real field names, values that are often
//! valid) go into each parser. Properties: no panic; a refusal is a typed error with a
//! non-empty reason; a valid value encoded and parsed again is the same value.
//!
//! Run them with `cargo test -p iot-proto proptests`. This module holds the shared strategies;
//! the properties live in one file per subject. Test-only: nothing here is built into the crate.

mod graph;
mod rpc;
mod text;
mod wire;

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Map, Number, Value};

/// Cases per property: enough to find shallow bugs, small enough for a 2-core machine.
pub(crate) fn config() -> Config {
    Config::with_cases(256)
}

/// Words of the protocol: field values that make a parser go past its first checks.
pub(crate) const WORDS: &[&str] = &[
    "mqtt",
    "http",
    "CONNECT",
    "DISCONNECT",
    "online",
    "offline",
    "ok",
    "error",
    "attach",
    "detach",
    "add_funcs",
    "rm_funcs",
    "add_link",
    "rm_link",
    "set_join",
    "set_df_func",
    "start_monitor",
    "stop_monitor",
    "show",
    "sample",
    "variant",
    "Dummy_Sensor",
    "model",
    "00000000-0000-4000-8000-000000000001",
    "DF682F01-7C3A-49FD-8F5F-72CE0B6E68C0",
    "unknown_method",
    "handler",
    "",
    " ",
    "a\nb",
    "iottalk/esm/x",
];

/// A word of the protocol as a JSON string.
pub(crate) fn word() -> impl Strategy<Value = Value> {
    prop::sample::select(WORDS).prop_map(|w| Value::String(w.to_owned()))
}

/// Any finite JSON number: integers of both signs, large unsigned ones and floats.
fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
    ]
}

/// A number that survives `to_string` then parsing bit for bit (serde_json's default float
/// parsing is only best-effort for arbitrary doubles).
fn exact_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-4096i32..4096).prop_map(|n| Value::from(f64::from(n) / 8.0)),
    ]
}

fn json_with(leaf_number: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        leaf_number,
        any::<String>().prop_map(Value::String),
        word(),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
    .boxed()
}

/// An object key: a protocol field name or any string.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(FIELD_NAMES).prop_map(str::to_owned),
        any::<String>(),
    ]
}

/// Every field name of every message, so nested objects sometimes look like real ones.
const FIELD_NAMES: &[&str] = &[
    "name",
    "idf_list",
    "odf_list",
    "accept_protos",
    "profile",
    "model",
    "rev",
    "msg_id",
    "state",
    "reason",
    "command",
    "idf",
    "odf",
    "topic",
    "op",
    "id",
    "method",
    "args",
    "reply_to",
    "deadline_ms",
    "result",
    "code",
];

/// Any JSON value up to 4 levels deep: null, booleans, numbers, strings, arrays, objects.
pub(crate) fn arb_json() -> BoxedStrategy<Value> {
    json_with(number().boxed())
}

/// Like [`arb_json`], with numbers that round-trip exactly through JSON text.
pub(crate) fn arb_json_exact() -> BoxedStrategy<Value> {
    json_with(exact_number().boxed())
}

/// A value for one field of a shaped message: usually `valid`, sometimes a protocol word or
/// any JSON, sometimes the field is left out (`None`).
pub(crate) fn field(valid: BoxedStrategy<Value>) -> BoxedStrategy<Option<Value>> {
    prop_oneof![
        12 => valid.prop_map(Some),
        1 => word().prop_map(Some),
        1 => arb_json().prop_map(Some),
        1 => Just(None),
    ]
    .boxed()
}

/// A JSON object from `(name, value)` pairs, leaving out absent fields, plus maybe one extra.
pub(crate) fn object(
    fields: Vec<(&'static str, Option<Value>)>,
    extra: Option<(String, Value)>,
) -> Value {
    let mut m: Map<String, Value> = fields
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
        .collect();
    if let Some((k, v)) = extra {
        m.insert(k, v);
    }
    Value::Object(m)
}

/// Sometimes an extra field (a known name or any string) with any value.
pub(crate) fn extra() -> BoxedStrategy<Option<(String, Value)>> {
    prop::option::weighted(0.2, (key(), arb_json())).boxed()
}

/// A valid DA id, as text.
pub(crate) fn da_id_text() -> impl Strategy<Value = String> {
    any::<u128>().prop_map(|n| crate::DaId::from_uuid(uuid::Uuid::from_u128(n)).to_string())
}

/// A valid feature name (1..=256 bytes, no control characters), often one of a few so that
/// lists hold duplicates.
pub(crate) fn feature_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(&["A", "B", "Dummy_Sensor"][..]).prop_map(str::to_owned),
        "[^\\p{Cc}]{1,40}".prop_filter("at most 256 bytes", |s| s.len() <= 256),
    ]
}

/// JSON text nested `depth` levels deep (`[[[...]]]`), as an attacker sends it.
pub(crate) fn nested(depth: usize) -> Vec<u8> {
    let mut v = vec![b'['; depth];
    v.extend(std::iter::repeat_n(b']', depth));
    v
}

/// A body that is sometimes JSON text and sometimes bytes that merely start like it.
pub(crate) fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        arb_json().prop_map(|v| v.to_string().into_bytes()),
        (
            arb_json(),
            prop::collection::vec(any::<u8>(), 0..8),
            any::<prop::sample::Index>()
        )
            .prop_map(|(v, junk, at)| {
                let mut b = v.to_string().into_bytes();
                let i = at.index(b.len() + 1);
                b.splice(i..i, junk);
                b
            }),
    ]
}

/// Checks that a refusal says something.
pub(crate) fn has_reason(e: &impl std::fmt::Display) -> Result<(), TestCaseError> {
    prop_assert!(
        !e.to_string().trim().is_empty(),
        "an error without a reason"
    );
    Ok(())
}

/// `v` as JSON text, and the value that text stands for (serde_json reads some doubles back
/// one unit in the last place off, so compare parsed fields with this, not with `v`).
pub(crate) fn as_sent(v: &Value) -> (String, Value) {
    let text = v.to_string();
    let back = serde_json::from_str(&text).unwrap_or(Value::Null);
    (text, back)
}
