//! Properties of the graph API: requests as the server parses them, replies as a client reads
//! them.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::wire::control::Direction;
use crate::wire::graph_api::{
    reply, GraphOk, GraphOp, GraphReply, GraphRequest, GraphView, InputType, LinkRef, LinkSpec,
    LinkView, OpKind, MAX_PARAMS,
};

const OPS: &[&str] = &[
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
];

/// The server's parser and the client's, on one body: no panic, refusals with a reason.
fn parse_both(body: &[u8]) -> Result<(), TestCaseError> {
    if let Err(refused) = GraphRequest::parse(body) {
        has_reason(&refused.error)?;
    }
    if let Some(r) = GraphReply::from_json(body) {
        for kind in [
            OpKind::AddFuncs,
            OpKind::SetJoin,
            OpKind::StartMonitor,
            OpKind::Show,
        ] {
            let _ = r.ok_for(kind);
        }
    }
    Ok(())
}

/// `n` strings, or sometimes something else.
fn codes(n: usize) -> BoxedStrategy<Option<Value>> {
    field(
        prop::collection::vec(any::<String>(), n)
            .prop_map(|v| json!(v))
            .boxed(),
    )
}

fn small_count() -> BoxedStrategy<Value> {
    prop_oneof![
        prop::sample::select(&[0, 1, MAX_PARAMS, MAX_PARAMS + 1][..]).prop_map(Value::from),
        (0..=MAX_PARAMS + 1).prop_map(Value::from),
        arb_json(),
    ]
    .boxed()
}

/// A graph-API request with its real fields, each usually valid.
fn request_body() -> impl Strategy<Value = Value> {
    let op = prop_oneof![
        4 => prop::sample::select(OPS).prop_map(|o| json!(o)),
        4 => prop::sample::select(&["add_link", "set_df_func", "add_funcs", "set_join"][..])
            .prop_map(|o| json!(o)),
        1 => arb_json(),
    ];
    let digest_or_null =
        || prop_oneof![Just(Value::Null), any::<String>().prop_map(Value::String)].boxed();
    let dep = prop_oneof![9 => any::<String>().prop_map(Value::String), 1 => arb_json()];
    let depends = prop::collection::btree_map("[a-z]{1,4}", dep, 0..3)
        .prop_map(|m| json!(m))
        .boxed();
    let input_type = prop::collection::vec(
        prop_oneof![4 => Just("sample"), 4 => Just("variant"), 1 => Just("x")],
        0..3,
    )
    .prop_map(|v| json!(v))
    .boxed();
    // Which of `idf`/`odf` is set: usually exactly one.
    let side = (
        prop::sample::select(
            &[
                (true, false),
                (false, true),
                (true, false),
                (false, true),
                (true, true),
                (false, false),
            ][..],
        ),
        feature_text(),
    )
        .prop_map(|((i, o), f)| (i, o, f));
    (
        (op, (0usize..3).prop_flat_map(|n| (codes(n), codes(n)))),
        field(da_id_text().prop_map(Value::String).boxed()),
        side,
        (
            field(digest_or_null()),
            field(digest_or_null()),
            field(digest_or_null()),
        ),
        (
            field(depends),
            field(input_type),
            field(small_count()),
            field(small_count()),
        ),
        extra(),
    )
        .prop_map(
            |(
                (op, (codes, digests)),
                da_id,
                (i, o, f),
                (func, prev, new),
                (dep, it, pn, tpn),
                extra,
            )| {
                let feature = Some(Value::String(f));
                object(
                    vec![
                        ("op", Some(op)),
                        ("codes", codes),
                        ("digests", digests),
                        ("da_id", da_id),
                        ("idf", feature.clone().filter(|_| i)),
                        ("odf", feature.filter(|_| o)),
                        ("func", func),
                        ("prev", prev),
                        ("new", new),
                        ("depends", dep),
                        ("input_type", it),
                        ("param_no", pn),
                        ("tag_param_no", tpn),
                    ],
                    extra,
                )
            },
        )
}

fn digest() -> impl Strategy<Value = String> {
    prop_oneof!["[0-9a-f]{64}", any::<String>()]
}

fn opt_digest() -> impl Strategy<Value = Option<String>> {
    prop::option::of(digest())
}

fn depends() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(any::<String>(), digest(), 0..3)
}

fn input_types() -> impl Strategy<Value = Vec<InputType>> {
    prop::collection::vec(
        prop_oneof![Just(InputType::Sample), Just(InputType::Variant)],
        0..3,
    )
}

fn link() -> impl Strategy<Value = LinkRef> {
    (any::<u128>(), any::<bool>(), feature_text()).prop_map(|(n, odf, f)| LinkRef {
        da_id: crate::DaId::from_uuid(uuid::Uuid::from_u128(n)),
        direction: if odf { Direction::Odf } else { Direction::Idf },
        feature: f.parse().expect("a valid feature name"),
    })
}

/// Any link's settings, as a client builds them.
fn link_spec() -> impl Strategy<Value = LinkSpec> {
    (
        opt_digest(),
        input_types(),
        depends(),
        prop::option::of(1..=MAX_PARAMS),
        prop::option::of(0..=MAX_PARAMS),
    )
        .prop_map(
            |(func, input_type, depends, param_no, tag_param_no)| LinkSpec {
                func,
                input_type,
                depends,
                param_no,
                tag_param_no,
            },
        )
}

/// Any graph as `show` reports it.
fn graph_view() -> impl Strategy<Value = GraphView> {
    (
        prop::collection::vec(digest(), 0..3),
        prop::collection::vec(
            (link(), link_spec()).prop_map(|(link, spec)| LinkView { link, spec }),
            0..3,
        ),
        opt_digest(),
        depends(),
        prop::option::of(any::<String>()),
    )
        .prop_map(|(funcs, links, join, join_depends, monitor)| GraphView {
            funcs,
            links,
            join,
            join_depends,
            monitor,
        })
}

/// Any valid op, as a client builds it.
fn graph_op() -> impl Strategy<Value = GraphOp> {
    let spec = link_spec();
    prop_oneof![
        Just(GraphOp::Attach),
        Just(GraphOp::Detach),
        Just(GraphOp::StartMonitor),
        Just(GraphOp::StopMonitor),
        Just(GraphOp::Show),
        prop::collection::vec(any::<String>(), 0..3).prop_map(GraphOp::add_funcs),
        prop::collection::vec(digest(), 0..3).prop_map(|digests| GraphOp::RmFuncs { digests }),
        (link(), spec).prop_map(|(link, spec)| GraphOp::AddLink { link, spec }),
        link().prop_map(|link| GraphOp::RmLink { link }),
        (opt_digest(), opt_digest(), depends()).prop_map(|(prev, new, depends)| GraphOp::SetJoin {
            prev,
            new,
            depends
        }),
        (
            link(),
            opt_digest(),
            opt_digest(),
            depends(),
            prop::option::of(input_types())
        )
            .prop_map(
                |(link, prev, new, depends, input_type)| GraphOp::SetDfFunc {
                    link,
                    prev,
                    new,
                    depends,
                    input_type,
                }
            ),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic(body in bytes()) {
        parse_both(&body)?;
    }

    #[test]
    fn shaped_requests_are_parsed_or_refused_with_their_fields(body in request_body()) {
        let (text, body) = as_sent(&body);
        parse_both(text.as_bytes())?;
        match GraphRequest::parse(text.as_bytes()) {
            Ok(r) => {
                prop_assert_eq!(Some(r.op.kind().as_str()), body["op"].as_str());
                if let GraphOp::AddLink { spec, .. } = &r.op {
                    prop_assert!(spec.param_no.is_none_or(|n| (1..=MAX_PARAMS).contains(&n)));
                    prop_assert!(spec.tag_param_no.is_none_or(|n| n <= MAX_PARAMS));
                }
                let again = Value::Object(r.op.to_json()).to_string();
                let again = GraphRequest::parse(again.as_bytes()).map(|a| a.op);
                prop_assert_eq!(again.as_ref().ok(), Some(&r.op));
                prop_assert_eq!(Value::Object(r.fields), body);
            }
            Err(refused) => {
                prop_assert_eq!(Value::Object(refused.fields), body.clone());
                if let Some(kind) = refused.kind {
                    prop_assert_eq!(Some(kind.as_str()), body["op"].as_str());
                }
            }
        }
    }

    #[test]
    fn every_op_round_trips(op in graph_op(), nonce in any::<String>()) {
        let mut body = op.to_json();
        body.insert("nonce".into(), Value::String(nonce));
        let parsed = GraphRequest::parse(Value::Object(body.clone()).to_string().as_bytes());
        let parsed = parsed.map_err(|r| TestCaseError::fail(r.error.to_string()))?;
        prop_assert_eq!(parsed.op, op);
        prop_assert_eq!(parsed.fields, body);
    }

    #[test]
    fn replies_round_trip(
        op in graph_op(),
        ok in prop_oneof![
            Just(None),
            prop::collection::vec(digest(), 0..3).prop_map(|d| Some(GraphOk::Digests(d))),
            (opt_digest(), opt_digest(), depends())
                .prop_map(|(prev, new, depends)| Some(GraphOk::Join { prev, new, depends })),
            any::<String>().prop_map(|topic| Some(GraphOk::Monitor { topic })),
            graph_view().prop_map(|view| Some(GraphOk::Graph(view))),
        ],
        reason in any::<String>(),
    ) {
        let fields = op.to_json();
        let (kind, ok) = match ok {
            Some(ok @ GraphOk::Digests(_)) => (OpKind::AddFuncs, ok),
            Some(ok @ GraphOk::Join { .. }) => (OpKind::SetJoin, ok),
            Some(ok @ GraphOk::Monitor { .. }) => (OpKind::StartMonitor, ok),
            Some(ok @ GraphOk::Graph(_)) => (OpKind::Show, ok),
            _ => (OpKind::Attach, GraphOk::Done),
        };
        let body = reply(&fields, Ok(&ok)).to_string();
        let back = GraphReply::from_json(body.as_bytes());
        prop_assert_eq!(back.as_ref().map(|r| r.outcome.clone()), Some(Ok(())));
        prop_assert_eq!(back.map(|r| r.ok_for(kind)), Some(ok));
        let body = reply(&fields, Err(&reason)).to_string();
        let back = GraphReply::from_json(body.as_bytes()).map(|r| r.outcome);
        prop_assert_eq!(back, Some(Err(reason)));
    }
}

#[test]
fn deeply_nested_requests_are_refused_as_malformed() {
    let deep = nested(10_000);
    parse_both(&deep).expect("no panic and a reason");
    let refused = GraphRequest::parse(&deep).expect_err("refused");
    assert!(refused.error.to_string().starts_with("malformed JSON"));
    assert_eq!(GraphReply::from_json(&deep), None);
}
