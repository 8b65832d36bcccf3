//! Properties of the text parsers: topics, ids and broker urls.

use proptest::prelude::*;

use super::*;
use crate::ids::{DaId, FeatureName};
use crate::topics::{self, ApiRequest};
use crate::url::MqttUrl;

/// A topic-like string: levels from protocol words, wildcards and any text.
fn topic() -> impl Strategy<Value = String> {
    let level = prop_oneof![
        Just(String::new()),
        Just("+".to_owned()),
        Just("#".to_owned()),
        Just("$SYS".to_owned()),
        prop::sample::select(
            &["iottalk", "api", "req", "res", "graph", "device", "ctrl", "i", "o", "rpc"][..]
        )
        .prop_map(str::to_owned),
        da_id_text(),
        any::<String>(),
    ];
    prop_oneof![
        prop::collection::vec(level, 0..8).prop_map(|l| l.join("/")),
        any::<String>(),
    ]
}

/// A url-like string: schemes, hosts, ports and separators in any order.
fn url() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        prop::sample::select(
            &[
                "mqtt://", "tcp://", "ws://", "://", ":", "[", "]", "/", "@", "::1", "h", "1883",
                "70000", "-1", ""
            ][..]
        )
        .prop_map(str::to_owned),
        any::<String>(),
    ];
    prop_oneof![
        prop::collection::vec(part, 0..6).prop_map(|p| p.concat()),
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn topic_parsers_never_panic(t in topic(), f in topic()) {
        if let Some(Err(id)) = topics::parse_ctrl_i(&t) {
            prop_assert!(id.parse::<DaId>().is_err());
        }
        if let Some(req) = ApiRequest::parse(&t) {
            let again = req.response_topic().replacen("/res/", "/req/", 1);
            prop_assert_eq!(ApiRequest::parse(&again), Some(req));
        }
        if let Err(e) = topics::check_level(&t) {
            has_reason(&e)?;
            prop_assert!(topics::rpc_req(&t).is_err());
        } else {
            prop_assert!(!t.contains('/'));
            let req = topics::rpc_req(&t).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(req.split('/').count(), 4);
        }
        let _ = topics::rpc_res(&t, &f);
        if topics::valid_filter(&f) {
            prop_assert!(!f.is_empty());
        }
        let _ = topics::matches(&f, &t);
        prop_assert!(topics::matches("#", &t) || t.starts_with('$'));
        prop_assert!(topics::matches(&t, &t) || t.contains(['+', '#']));
    }

    #[test]
    fn topics_round_trip(n in any::<u128>(), client in "[^/]{1,20}", gid in "[^/]{1,20}") {
        let id = DaId::from_uuid(uuid::Uuid::from_u128(n));
        let (ctrl_i, ctrl_o) = (topics::ctrl_i(&id), topics::ctrl_o(&id));
        prop_assert_eq!(topics::parse_ctrl_i(&ctrl_i), Some(Ok(id)));
        prop_assert_eq!(topics::parse_ctrl_i(&ctrl_o), None);
        let graph = ApiRequest::Graph { client: &client, gid: &gid };
        let (req, dev) = (topics::graph_req(&client, &gid), topics::device_req(&client));
        prop_assert_eq!(ApiRequest::parse(&req), Some(graph.clone()));
        prop_assert_eq!(graph.response_topic(), topics::graph_res(&client, &gid));
        prop_assert_eq!(ApiRequest::parse(&dev), Some(ApiRequest::Device { client: &client }));
        let odf_req = topics::odf_req(&client);
        let odf = ApiRequest::parse(&odf_req);
        prop_assert_eq!(odf.as_ref().map(ApiRequest::response_topic), Some(topics::odf_res(&client)));
        prop_assert!(topics::matches(&topics::graph_res_filter(&client), &topics::graph_res(&client, &gid)));
    }

    #[test]
    fn ids_parse_or_say_why(s in prop_oneof![any::<String>(), da_id_text(), da_id_text().prop_map(|s| s.to_uppercase())]) {
        match s.parse::<DaId>() {
            Ok(id) => prop_assert_eq!(id.to_string(), s.clone()),
            Err(e) => has_reason(&e)?,
        }
        match s.parse::<FeatureName>() {
            Ok(f) => {
                prop_assert_eq!(f.as_str(), s.as_str());
                prop_assert!(!s.is_empty() && s.len() <= crate::ids::MAX_FEATURE_NAME_BYTES);
            }
            Err(e) => has_reason(&e)?,
        }
        let json = serde_json::to_string(&s).expect("a string encodes");
        if let Err(e) = serde_json::from_str::<DaId>(&json) {
            has_reason(&e)?;
        }
    }

    #[test]
    fn ids_round_trip(n in any::<u128>(), f in feature_text()) {
        let id = DaId::from_uuid(uuid::Uuid::from_u128(n));
        prop_assert_eq!(id.to_string().parse::<DaId>(), Ok(id));
        let json = serde_json::to_string(&id).expect("encodes");
        prop_assert_eq!(serde_json::from_str::<DaId>(&json).ok(), Some(id));
        let name: FeatureName = f.parse().map_err(|e: crate::IdError| TestCaseError::fail(e.to_string()))?;
        let json = serde_json::to_string(&name).expect("encodes");
        prop_assert_eq!(serde_json::from_str::<FeatureName>(&json).ok(), Some(name));
    }

    #[test]
    fn urls_parse_or_say_why(s in url()) {
        match MqttUrl::parse(&s) {
            Ok(u) => {
                prop_assert!(!u.host.is_empty());
                prop_assert_eq!(MqttUrl::parse(&u.to_string()), Ok(u));
            }
            Err(e) => {
                has_reason(&e)?;
                prop_assert!(e.to_string().contains(&s));
            }
        }
    }

    #[test]
    fn urls_round_trip(host in "[a-z0-9.-]{1,20}|[0-9a-f:]{2,20}", port in any::<u16>(), tcp in any::<bool>()) {
        let scheme = if tcp { "tcp" } else { "mqtt" };
        let host = host.trim_matches(':').to_owned();
        prop_assume!(!host.is_empty());
        let u = MqttUrl::parse(&format!("{scheme}://{}", MqttUrl {
            scheme: crate::url::Scheme::Mqtt, host: host.clone(), port,
        }.authority())).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!((u.host.as_str(), u.port, u.scheme.as_str()), (host.as_str(), port, scheme));
    }
}
