//! The protocol rules of the registry, without a network.

use serde_json::json;

use super::*;

pub(super) fn id(n: u8) -> DaId {
    format!("00000000-0000-4000-8000-0000000000{n:02x}")
        .parse()
        .unwrap()
}

fn req(name: Option<&str>) -> RegisterRequest {
    let body = json!({
        "name": name,
        "idf_list": [["Dummy_Sensor", ["dB"]]],
        "odf_list": [["Dummy_Control", [null]]],
        "accept_protos": ["mqtt"],
        "profile": {"model": "Dummy_Device"},
    });
    RegisterRequest::from_json(body.to_string().as_bytes()).unwrap()
}

pub(super) fn publishes(fx: &[Effect]) -> Vec<(&str, Value, bool)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Publish(m) => Some((
                m.topic.as_str(),
                serde_json::from_slice(&m.payload).unwrap_or(Value::Null),
                m.retain,
            )),
            _ => None,
        })
        .collect()
}

pub(super) fn presence(rev: &Rev, state: &str) -> Vec<u8> {
    json!({"state": state, "rev": rev}).to_string().into_bytes()
}

pub(super) fn registered(st: &mut Registry, n: u8) -> Rev {
    st.register(id(n), req(None), 1.0, &mut Vec::new())
        .unwrap()
        .record
        .rev
}

#[test]
fn default_names_are_the_first_free_ones() {
    let mut st = Registry::default();
    let a = st.register(id(1), req(None), 1.0, &mut Vec::new()).unwrap();
    let b = st.register(id(2), req(None), 1.0, &mut Vec::new()).unwrap();
    assert_eq!(a.record.name, "00.Dummy_Device");
    assert_eq!(b.record.name, "01.Dummy_Device");
    st.deregister(&id(1), &a.record.rev, 1.0, &mut Vec::new())
        .unwrap();
    let c = st.register(id(3), req(None), 1.0, &mut Vec::new()).unwrap();
    assert_eq!(c.record.name, "00.Dummy_Device");
}

#[test]
fn name_pool_exhaustion_is_a_conflict() {
    let mut st = Registry::default();
    for n in 0..100 {
        st.register(id(n), req(None), 1.0, &mut Vec::new()).unwrap();
    }
    let err = st
        .register(id(200), req(None), 1.0, &mut Vec::new())
        .unwrap_err();
    assert!(matches!(err, CsmError::NoFreeName(_)), "{err:?}");
}

#[test]
fn reput_issues_new_rev_and_updates_record() {
    let mut st = Registry::default();
    let first = registered(&mut st, 1);
    let again = st
        .register(id(1), req(Some("Renamed")), 2.0, &mut Vec::new())
        .unwrap();
    assert_ne!(again.record.rev, first);
    assert_eq!(st.record(&id(1)).unwrap().0.name, "Renamed");
    // A re-PUT without a name keeps the current one.
    st.register(id(1), req(None), 3.0, &mut Vec::new()).unwrap();
    assert_eq!(st.record(&id(1)).unwrap().0.name, "Renamed");
}

#[test]
fn stale_rev_does_not_flip_presence() {
    let mut st = Registry::default();
    let old = registered(&mut st, 1);
    let new = st
        .register(id(1), req(None), 1.0, &mut Vec::new())
        .unwrap()
        .record
        .rev;
    let topic = topics::ctrl_i(&id(1));
    let mut fx = Vec::new();
    assert_eq!(
        st.uplink(&topic, &presence(&old, "offline"), true, 1.0, &mut fx),
        UplinkKind::Stale
    );
    assert!(fx.is_empty());
    assert_eq!(
        st.uplink(&topic, &presence(&new, "online"), true, 1.0, &mut fx),
        UplinkKind::Online
    );
    assert_eq!(st.record(&id(1)).unwrap().1, PresenceState::Online);
    assert!(fx.contains(&Effect::DisarmExpiry(id(1))));
}

#[test]
fn offline_arms_expiry_and_expiry_deregisters() {
    let mut st = Registry::default();
    let rev = registered(&mut st, 1);
    let topic = topics::ctrl_i(&id(1));
    let mut fx = Vec::new();
    st.uplink(&topic, &presence(&rev, "offline"), true, 1.0, &mut fx);
    assert!(fx.contains(&Effect::ArmExpiry {
        id: id(1),
        rev: rev.clone()
    }));
    // Expiry for another rev does nothing; for the current one it deregisters.
    assert!(!st.expire(&id(1), &Rev::from("other".to_owned()), 1.0, &mut Vec::new()));
    let mut fx = Vec::new();
    assert!(st.expire(&id(1), &rev, 1.0, &mut fx));
    assert!(!st.contains(&id(1)));
    assert!(fx.contains(&Effect::Persist(Write::Da(DaWrite::Delete(
        id(1).to_string()
    )))));
}

#[test]
fn online_da_does_not_expire() {
    let mut st = Registry::default();
    let rev = registered(&mut st, 1);
    st.uplink(
        &topics::ctrl_i(&id(1)),
        &presence(&rev, "online"),
        true,
        1.0,
        &mut Vec::new(),
    );
    assert!(!st.expire(&id(1), &rev, 1.0, &mut Vec::new()));
    assert!(st.contains(&id(1)));
}

#[test]
fn deregister_checks_rev_and_clears_retained_uplink() {
    let mut st = Registry::default();
    let rev = registered(&mut st, 1);
    assert!(matches!(
        st.deregister(&id(1), &Rev::from("wrong".to_owned()), 1.0, &mut Vec::new()),
        Err(CsmError::StaleRev)
    ));
    assert!(matches!(
        st.deregister(&id(9), &rev, 1.0, &mut Vec::new()),
        Err(CsmError::NotFound)
    ));
    let mut fx = Vec::new();
    st.deregister(&id(1), &rev, 1.0, &mut fx).unwrap();
    let ctrl = topics::ctrl_i(&id(1));
    assert!(fx.iter().any(
        |e| matches!(e, Effect::Publish(m) if m.topic == ctrl && m.retain && m.payload.is_empty())
    ));
}

#[test]
fn offline_after_delete_is_cleared() {
    let mut st = Registry::default();
    let rev = registered(&mut st, 1);
    st.deregister(&id(1), &rev, 1.0, &mut Vec::new()).unwrap();
    let mut fx = Vec::new();
    let topic = topics::ctrl_i(&id(1));
    assert_eq!(
        st.uplink(&topic, &presence(&rev, "offline"), true, 1.0, &mut fx),
        UplinkKind::Unknown
    );
    assert!(fx.iter().any(
        |e| matches!(e, Effect::Publish(m) if m.topic == topic && m.retain && m.payload.is_empty())
    ));
    assert!(fx.contains(&Effect::ClearAgainLater(id(1))));
}

#[test]
fn garbage_and_empty_uplinks_are_ignored() {
    let mut st = Registry::default();
    registered(&mut st, 1);
    let mut fx = Vec::new();
    let topic = topics::ctrl_i(&id(1));
    assert_eq!(
        st.uplink(&topic, b"\xff\x00not json", false, 1.0, &mut fx),
        UplinkKind::Garbage
    );
    assert_eq!(
        st.uplink(&topic, b"[1,2]", false, 1.0, &mut fx),
        UplinkKind::Garbage
    );
    assert_eq!(
        st.uplink(&topic, b"", true, 1.0, &mut fx),
        UplinkKind::Empty
    );
    assert_eq!(
        st.uplink("NOT-A-UUID/ctrl/i", b"{}", false, 1.0, &mut fx),
        UplinkKind::Garbage
    );
    assert!(fx.is_empty());
}

#[test]
fn links_connect_when_online_and_acks_are_recorded() {
    let mut st = Registry::default();
    let rev = registered(&mut st, 1);
    let key: LinkKey = (Direction::Odf, "Dummy_Control".parse().unwrap());
    let mut fx = Vec::new();
    // Offline DA: the link waits, nothing is sent.
    let topic = st.link_acquire(&id(1), key.clone(), None, &mut fx).unwrap();
    assert!(publishes(&fx).is_empty());
    assert_eq!(st.links(&id(1)).unwrap()[&key].status, LinkStatus::Waiting);
    // Online: CONNECT goes out with a msg_id.
    let mut fx = Vec::new();
    st.uplink(
        &topics::ctrl_i(&id(1)),
        &presence(&rev, "online"),
        true,
        1.0,
        &mut fx,
    );
    let sent = publishes(&fx);
    let (t, signal, _) = sent.iter().find(|(t, ..)| t.ends_with("/ctrl/o")).unwrap();
    assert_eq!(*t, topics::ctrl_o(&id(1)));
    assert_eq!(signal["command"], "CONNECT");
    assert_eq!(signal["odf"], "Dummy_Control");
    assert_eq!(signal["topic"], topic.as_str());
    // The DA refuses it: recorded.
    let reply = json!({"msg_id": signal["msg_id"], "state": "error", "reason": "busy"}).to_string();
    st.uplink(
        &topics::ctrl_i(&id(1)),
        reply.as_bytes(),
        false,
        1.0,
        &mut Vec::new(),
    );
    assert_eq!(
        st.links(&id(1)).unwrap()[&key].status,
        LinkStatus::Error("busy".into())
    );
    assert_eq!(st.failed_links().len(), 1);
    // Online again (reconnect): CONNECT re-sent, and an ok reply is recorded.
    let mut fx = Vec::new();
    st.uplink(
        &topics::ctrl_i(&id(1)),
        &presence(&rev, "online"),
        true,
        1.0,
        &mut fx,
    );
    let sent = publishes(&fx);
    let (_, signal, _) = sent.iter().find(|(t, ..)| t.ends_with("/ctrl/o")).unwrap();
    let reply = json!({"msg_id": signal["msg_id"], "state": "ok"}).to_string();
    st.uplink(
        &topics::ctrl_i(&id(1)),
        reply.as_bytes(),
        false,
        1.0,
        &mut Vec::new(),
    );
    assert_eq!(st.links(&id(1)).unwrap()[&key].status, LinkStatus::Ok);
}

#[test]
fn shared_link_disconnects_on_last_release() {
    let mut st = Registry::default();
    let rev = registered(&mut st, 1);
    st.uplink(
        &topics::ctrl_i(&id(1)),
        &presence(&rev, "online"),
        true,
        1.0,
        &mut Vec::new(),
    );
    let key: LinkKey = (Direction::Idf, "Dummy_Sensor".parse().unwrap());
    let mut fx = Vec::new();
    let t1 = st.link_acquire(&id(1), key.clone(), None, &mut fx).unwrap();
    let t2 = st.link_acquire(&id(1), key.clone(), None, &mut fx).unwrap();
    assert_eq!(t1, t2);
    assert_eq!(publishes(&fx).len(), 1, "one CONNECT for a shared link");
    let mut fx = Vec::new();
    st.link_release(&id(1), &key, &mut fx).unwrap();
    assert!(
        publishes(&fx).is_empty(),
        "no DISCONNECT while another user holds the link"
    );
    st.link_release(&id(1), &key, &mut fx).unwrap();
    let sent = publishes(&fx);
    assert!(sent
        .iter()
        .any(|(_, s, _)| s["command"] == "DISCONNECT" && s["idf"] == "Dummy_Sensor"));
    assert!(st.links(&id(1)).unwrap().is_empty());
    assert!(st.link_release(&id(1), &key, &mut fx).is_err());
    assert!(st
        .link_acquire(
            &id(1),
            (Direction::Idf, "Nope".parse().unwrap()),
            None,
            &mut fx
        )
        .is_err());
}

#[test]
fn device_api_attach_lists_and_announces() {
    let mut st = Registry::default();
    let rev = registered(&mut st, 1);
    let mut fx = Vec::new();
    st.device_request("gui", br#"{"op":"attach"}"#, &mut fx);
    let sent = publishes(&fx);
    assert_eq!(sent[0].0, "iottalk/api/res/gui/device");
    assert_eq!(sent[0].1["state"], "ok");
    assert_eq!(sent[0].1["da_list"][id(1).to_string()]["state"], "nothing");
    let mut fx = Vec::new();
    st.uplink(
        &topics::ctrl_i(&id(1)),
        &presence(&rev, "online"),
        true,
        5.0,
        &mut fx,
    );
    let sent = publishes(&fx);
    let anno = sent
        .iter()
        .find(|(t, ..)| *t == "iottalk/api/res/gui/device")
        .unwrap();
    assert_eq!(anno.1["op"], "anno");
    assert_eq!(anno.1["type"], "online");
    assert_eq!(anno.1["da"]["state"], "online");
    let mut fx = Vec::new();
    st.device_request("gui", b"{oops", &mut fx);
    st.device_request("gui", br#"{"op":"frobnicate"}"#, &mut fx);
    let sent = publishes(&fx);
    assert_eq!(sent[0].1["state"], "error");
    assert_eq!(sent[1].1["reason"], "unknown op: `frobnicate`");
}

#[test]
fn credentials_are_issued_when_enabled() {
    let mut st = Registry::new(RegistryConfig {
        credentials: true,
        ..RegistryConfig::default()
    });
    let mut fx = Vec::new();
    let r = st.register(id(1), req(None), 1.0, &mut fx).unwrap();
    assert_eq!(r.username.as_deref(), Some(id(1).to_string().as_str()));
    let pw = r.password.unwrap();
    let want: [u8; 32] = Sha256::digest(pw.as_bytes()).into();
    assert!(fx.contains(&Effect::Credential {
        username: id(1).to_string(),
        password_sha256: Some(want)
    }));
}

#[test]
fn restore_round_trips_rows() {
    let mut st = Registry::default();
    registered(&mut st, 1);
    let (record, _) = st.record(&id(1)).unwrap();
    let row = to_row(record, None);
    let mut restored = Registry::default();
    let fx = restored.restore(vec![row]).unwrap();
    assert_eq!(restored.record(&id(1)).unwrap().0, record);
    assert!(fx.iter().any(|e| matches!(e, Effect::ArmExpiry { .. })));
}

fn gates(fx: &[Effect]) -> Vec<(&str, bool)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::OdfGate { topic, open } => Some((topic.as_str(), *open)),
            _ => None,
        })
        .collect()
}

/// DA 1 sends `body` on its ctrl/i; the effects.
pub(super) fn uplink1(st: &mut Registry, body: &[u8], retained: bool) -> Vec<Effect> {
    let mut fx = Vec::new();
    st.uplink(&topics::ctrl_i(&id(1)), body, retained, 1.0, &mut fx);
    fx
}

/// The msg_id of the CONNECT for ODF `Dummy_Control` among `fx`.
pub(super) fn odf_connect_id(fx: &[Effect]) -> Value {
    publishes(fx)
        .into_iter()
        .map(|(_, s, _)| s)
        .find(|s| s["odf"] == "Dummy_Control")
        .expect("CONNECT for the ODF")["msg_id"]
        .clone()
}

/// A reply to CONNECT: `ok`, or `error` with a reason.
pub(super) fn reply(msg_id: &Value, state: &str) -> Vec<u8> {
    let mut body = json!({"msg_id": msg_id, "state": state});
    if state == "error" {
        body["reason"] = json!("no");
    }
    body.to_string().into_bytes()
}

#[test]
fn odf_topics_open_on_ack_and_close_on_reconnect_or_offline() {
    let mut st = Registry::default();
    let rev = registered(&mut st, 1);
    let odf: LinkKey = (Direction::Odf, "Dummy_Control".parse().unwrap());
    let idf: LinkKey = (Direction::Idf, "Dummy_Sensor".parse().unwrap());
    let topic = st
        .link_acquire(&id(1), odf.clone(), None, &mut Vec::new())
        .unwrap();
    st.link_acquire(&id(1), idf, None, &mut Vec::new()).unwrap();
    assert!(!st.odf_open(&id(1), &odf.1));
    // Online: CONNECT goes out and the ODF topic (not the IDF one) is closed until the ack.
    let fx = uplink1(&mut st, &presence(&rev, "online"), true);
    assert_eq!(gates(&fx), vec![(topic.as_str(), false)]);
    let fx = uplink1(&mut st, &reply(&odf_connect_id(&fx), "ok"), false);
    assert_eq!(gates(&fx), vec![(topic.as_str(), true)]);
    assert!(st.odf_open(&id(1), &odf.1));
    // Offline closes it.
    let fx = uplink1(&mut st, &presence(&rev, "offline"), true);
    assert_eq!(gates(&fx), vec![(topic.as_str(), false)]);
    assert!(!st.odf_open(&id(1), &odf.1));
    // A refused CONNECT leaves it closed.
    let fx = uplink1(&mut st, &presence(&rev, "online"), true);
    let waits: Vec<_> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::AwaitAck { link, msg_id } => Some((link.clone(), msg_id.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(waits.len(), 1, "only the ODF link waits for its ack");
    assert_eq!(waits[0].0, link_ref(&id(1), &odf));
    let fx = uplink1(&mut st, &reply(&odf_connect_id(&fx), "error"), false);
    assert!(gates(&fx).is_empty());
    assert!(!st.odf_open(&id(1), &odf.1));
}

#[test]
fn an_odf_whose_da_never_replies_to_connect_opens_after_the_wait() {
    let mut st = Registry::default();
    let rev = registered(&mut st, 1);
    let odf: LinkKey = (Direction::Odf, "Dummy_Control".parse().unwrap());
    let topic = st
        .link_acquire(&id(1), odf.clone(), None, &mut Vec::new())
        .unwrap();
    let fx = uplink1(&mut st, &presence(&rev, "online"), true);
    let msg_id = fx
        .iter()
        .find_map(|e| match e {
            Effect::AwaitAck { msg_id, .. } => Some(msg_id.clone()),
            _ => None,
        })
        .unwrap();
    // A wait for an older CONNECT changes nothing.
    let mut fx = Vec::new();
    st.ack_wait_over(&id(1), &odf, &MsgId::generate(), &mut fx);
    assert!(gates(&fx).is_empty());
    assert!(!st.odf_open(&id(1), &odf.1));
    // The wait for this one opens the topic; the link is still reported unacked.
    st.ack_wait_over(&id(1), &odf, &msg_id, &mut fx);
    assert_eq!(gates(&fx), vec![(topic.as_str(), true)]);
    assert!(st.odf_open(&id(1), &odf.1));
    assert_eq!(st.unacked_links(), 1);
    // A late ok reply does not open it twice.
    let fx = uplink1(&mut st, &reply(&json!(msg_id), "ok"), false);
    assert!(gates(&fx).is_empty());
    assert_eq!(st.unacked_links(), 0);
}

#[test]
fn an_online_da_is_re_registered_only_with_its_password() {
    let mut st = Registry::new(RegistryConfig {
        credentials: true,
        ..RegistryConfig::default()
    });
    let reg = st.register(id(1), req(None), 1.0, &mut Vec::new()).unwrap();
    let password = reg.password.clone().unwrap();
    // Registered but not online yet: anyone may re-register (a device restarting).
    st.check_takeover(&id(1), None).unwrap();
    st.check_takeover(&id(2), None).unwrap();
    let topic = topics::ctrl_i(&id(1));
    let mut fx = Vec::new();
    st.uplink(
        &topic,
        &presence(&reg.record.rev, "online"),
        false,
        1.0,
        &mut fx,
    );
    assert!(matches!(
        st.check_takeover(&id(1), None),
        Err(CsmError::Online)
    ));
    assert!(matches!(
        st.check_takeover(&id(1), Some(b"guess")),
        Err(CsmError::Online)
    ));
    st.check_takeover(&id(1), Some(password.as_bytes()))
        .unwrap();
    st.uplink(
        &topic,
        &presence(&reg.record.rev, "offline"),
        false,
        1.0,
        &mut fx,
    );
    st.check_takeover(&id(1), None).unwrap();
}
