//! Parsing, encoding and replies of the graph API.

use super::*;
use serde_json::json;

fn parse(v: Value) -> Result<GraphRequest, Box<RefusedRequest>> {
    GraphRequest::parse(v.to_string().as_bytes())
}

fn reason(v: Value) -> String {
    parse(v).unwrap_err().error.to_string()
}

const DA: &str = "00000000-0000-4000-8000-000000000001";

#[test]
fn spec_digests() {
    assert_eq!(
        digest("def run(x): return int(x)\n"),
        "f87d5c678bdd9e4b1b5f278c29cdf9a0fd01198060d8c6f3a34a6a05ae536e50"
    );
    assert_eq!(
        digest("def run(x): return x ** 2\n"),
        "70e3d32f1c6abde67d607e3ce77dc286ecf5d0f42fcd18e6336fac5e19a6e07c"
    );
}

#[test]
fn every_op_round_trips_through_to_json() {
    let link = LinkRef {
        da_id: DA.parse().unwrap(),
        direction: Direction::Odf,
        feature: "Out".parse().unwrap(),
    };
    let deps: BTreeMap<String, Digest> = [("sq".to_owned(), "ab".to_owned())].into();
    let ops = [
        GraphOp::Attach,
        GraphOp::Detach,
        GraphOp::add_funcs(["fn run(x) { x }"]),
        GraphOp::RmFuncs {
            digests: vec!["ab".into()],
        },
        GraphOp::AddLink {
            link: link.clone(),
            spec: LinkSpec {
                func: Some("cd".into()),
                input_type: vec![InputType::Variant],
                depends: deps.clone(),
                param_no: Some(2),
                tag_param_no: Some(0),
            },
        },
        GraphOp::RmLink { link: link.clone() },
        GraphOp::SetJoin {
            prev: None,
            new: Some("cd".into()),
            depends: deps.clone(),
        },
        GraphOp::SetDfFunc {
            link,
            prev: Some("cd".into()),
            new: None,
            depends: BTreeMap::new(),
            input_type: Some(vec![InputType::Sample]),
        },
        GraphOp::StartMonitor,
        GraphOp::StopMonitor,
        GraphOp::Show,
    ];
    for op in ops {
        let body = Value::Object(op.to_json());
        let back = parse(body.clone()).unwrap_or_else(|e| panic!("{body}: {e:?}"));
        assert_eq!(back.op, op, "{body}");
    }
}

#[test]
fn each_mistake_has_the_reason_iottalk_clients_know() {
    assert_eq!(
        GraphRequest::parse(b"{").unwrap_err().error.to_string(),
        "malformed JSON: EOF while parsing an object at line 1 column 1"
    );
    let cases = [
        (json!([1]), "the request must be a JSON object"),
        (json!({"x": 1}), "missing field `op`"),
        (json!({"op": "fly"}), "unknown op: `fly`"),
        (
            json!({"op": "add_funcs", "codes": []}),
            "missing field `digests`",
        ),
        (
            json!({"op": "add_funcs", "codes": ["a"], "digests": []}),
            "`codes` has 1 entries but `digests` has 0",
        ),
        (
            json!({"op": "add_funcs", "codes": [1], "digests": []}),
            "`codes` must be a list of strings",
        ),
        (
            json!({"op": "rm_funcs"}),
            "missing field `digests` (a list of function digests)",
        ),
        (
            json!({"op": "add_link", "idf": "A"}),
            "missing field `da_id`",
        ),
        (
            json!({"op": "add_link", "da_id": 3}),
            "`da_id` must be a string",
        ),
        (
            json!({"op": "add_link", "da_id": DA, "idf": "A", "odf": "B"}),
            "exactly one of `idf` and `odf` (a feature name) is required",
        ),
        (
            json!({"op": "add_link", "da_id": DA, "idf": "A", "func": 3}),
            "`func` must be a function digest or null",
        ),
        (
            json!({"op": "add_link", "da_id": DA, "idf": "A", "depends": []}),
            "`depends` must be an object {alias: digest}",
        ),
        (
            json!({"op": "add_link", "da_id": DA, "idf": "A", "depends": {"f": 1}}),
            "`depends.f` must be a function digest",
        ),
        (
            json!({"op": "add_link", "da_id": DA, "idf": "A", "input_type": ["x"]}),
            "`input_type` must be a list of \"sample\" or \"variant\"",
        ),
        (
            json!({"op": "add_link", "da_id": DA, "idf": "A", "param_no": 0}),
            "`param_no` must be an integer from 1 to 1024",
        ),
        (
            json!({"op": "add_link", "da_id": DA, "idf": "A", "tag_param_no": 2000}),
            "`tag_param_no` must be an integer from 0 to 1024",
        ),
        (
            json!({"op": "set_join", "prev": 1}),
            "`prev` must be a function digest or null",
        ),
    ];
    for (body, want) in cases {
        assert_eq!(reason(body.clone()), want, "{body}");
    }
    let refused = parse(json!({"op": "rm_link", "nonce": "n"})).unwrap_err();
    assert_eq!(refused.kind, Some(OpKind::RmLink));
    assert_eq!(
        refused.fields["nonce"], "n",
        "the fields are kept to be echoed"
    );
}

#[test]
fn replies_echo_the_request_and_read_back() {
    let req =
        parse(json!({"op": "add_funcs", "codes": ["x"], "digests": ["y"], "nonce": 7})).unwrap();
    let ok = reply(&req.fields, Ok(&GraphOk::Digests(vec!["y".into()])));
    assert_eq!(ok["nonce"], 7);
    assert_eq!(ok["state"], "ok");
    let back = GraphReply::from_json(ok.to_string().as_bytes()).unwrap();
    assert_eq!(back.outcome, Ok(()));
    assert_eq!(
        back.ok_for(OpKind::AddFuncs),
        GraphOk::Digests(vec!["y".into()])
    );
    let err = reply(&req.fields, Err("link unknown"));
    let back = GraphReply::from_json(err.to_string().as_bytes()).unwrap();
    assert_eq!(back.outcome, Err("link unknown".into()));
    assert!(GraphReply::from_json(b"{\"op\":\"attach\"}").is_none());
}

#[test]
fn show_is_parsed_and_its_reply_is_the_documented_json() {
    let req = parse(json!({"op": "show", "nonce": "n1"})).unwrap();
    assert_eq!(req.op, GraphOp::Show);
    assert_eq!(OpKind::parse("show"), Some(OpKind::Show));
    assert_eq!(
        Value::Object(GraphOp::Show.to_json()),
        json!({"op": "show"})
    );
    const ODF_DA: &str = "00000000-0000-4000-8000-000000000002";
    let view = GraphView {
        funcs: vec!["aa".into(), "bb".into()],
        links: vec![
            LinkView {
                link: LinkRef {
                    da_id: DA.parse().unwrap(),
                    direction: Direction::Idf,
                    feature: "Temp".parse().unwrap(),
                },
                spec: LinkSpec {
                    func: Some("aa".into()),
                    input_type: vec![InputType::Variant],
                    depends: [("sq".to_owned(), "bb".to_owned())].into(),
                    param_no: Some(1),
                    tag_param_no: Some(1),
                },
            },
            LinkView {
                link: LinkRef {
                    da_id: ODF_DA.parse().unwrap(),
                    direction: Direction::Odf,
                    feature: "Show".parse().unwrap(),
                },
                spec: LinkSpec::default(),
            },
        ],
        join: Some("bb".into()),
        join_depends: BTreeMap::new(),
        monitor: None,
    };
    let ok = GraphOk::Graph(view.clone());
    let body = reply(&req.fields, Ok(&ok));
    assert_eq!(
        body,
        json!({
            "op": "show", "nonce": "n1", "state": "ok",
            "graph": {
                "funcs": ["aa", "bb"],
                "links": [
                    {"da_id": DA, "idf": "Temp", "func": "aa", "input_type": ["variant"],
                     "depends": {"sq": "bb"}, "param_no": 1, "tag_param_no": 1},
                    {"da_id": ODF_DA, "odf": "Show", "func": null, "input_type": [],
                     "depends": {}, "param_no": null, "tag_param_no": null},
                ],
                "join": "bb", "join_depends": {}, "monitor": null,
            },
        })
    );
    let back = GraphReply::from_json(body.to_string().as_bytes()).unwrap();
    assert_eq!(back.ok_for(OpKind::Show), ok);
    // A reply without a readable graph is not read as an empty one.
    let mut broken = body.clone();
    broken["graph"]["links"][0]["odf"] = json!("Out");
    let back = GraphReply::from_json(broken.to_string().as_bytes()).unwrap();
    assert_eq!(back.ok_for(OpKind::Show), GraphOk::Done);
    let back = GraphReply::from_json(br#"{"op": "show", "state": "ok"}"#).unwrap();
    assert_eq!(back.ok_for(OpKind::Show), GraphOk::Done);
}
