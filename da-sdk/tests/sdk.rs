#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The SDK end to end against the real controller (`iotctl start` on free ports). Links are
//! made here by playing the CSM's part on the control channel (CONNECT/DISCONNECT on
//! `<id>/ctrl/o`), so nothing needs the graph engine; `routing.rs` does it through graphs.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use da_sdk::{
    Command, ConnState, Da, DaId, Device, Error, Gateway, MqttVersion, OutboxConfig, Protocol,
    Retry, RpcErrorCode, SqliteDeviceManager,
};
use da_sdk::{DeviceManager, DeviceState};
use iot_tests::*;
use rumqttc::QoS;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[tokio::test]
async fn registers_goes_online_and_deregisters() {
    let app = App::spawn().await;
    let (mut dev, _) = app.attach_device_api("sdk-it").await;
    let id = DaId::new_v4();
    let da = builder(&app)
        .id(id)
        .name("SDK_DA")
        .profile("u_name", "tester")
        .idf("Dummy_Sensor", ["dB"])
        .odf("Dummy_Control", ())
        .connect()
        .await
        .unwrap();
    let st = da.status();
    assert_eq!(st.state, ConnState::Online);
    assert_eq!(st.name, "SDK_DA");
    assert_eq!((st.sessions, st.registrations), (1, 1));
    assert_eq!(
        st.protocol,
        Some(Protocol::V5),
        "Auto picks MQTT 5 when the broker has it"
    );
    dev.announcement("online", &id.to_string()).await;

    let (code, rec) = app.get(&id.to_string()).await;
    assert_eq!(code, 200);
    assert_eq!(rec["rev"], st.rev.as_str());
    assert_eq!(rec["idf_list"], json!([["Dummy_Sensor", ["dB"]]]));
    assert_eq!(rec["odf_list"], json!([["Dummy_Control", [null]]]));
    assert_eq!(
        rec["profile"],
        json!({"model": "Dummy_Device", "u_name": "tester"})
    );
    let mut m = app.mqtt(None).await;
    let retained = m
        .retained_until(&format!("{id}/ctrl/i"), "the online message", |r| {
            !r.is_empty()
        })
        .await;
    assert_eq!(
        retained.iter().map(Received::json).collect::<Vec<_>>(),
        vec![json!({"state": "online", "rev": st.rev.as_str()})]
    );

    // Without an id one is generated; without a name the server picks one.
    let anon = builder(&app).connect().await.unwrap();
    assert_ne!(anon.id(), id);
    assert_eq!(anon.status().name, "00.Dummy_Device");
    app.wait_status("two online", |s| s["online"] == 2).await;

    da.deregister().await.unwrap();
    // Offline first, then the DELETE.
    dev.announcement("offline", &id.to_string()).await;
    dev.announcement("deregister", &id.to_string()).await;
    assert_eq!(app.get(&id.to_string()).await.0, 404);
    assert!(m.retained(&format!("{id}/#")).await.is_empty());
    assert_eq!(da.push("Dummy_Sensor", 1).await, Err(Error::Closed));
    assert_eq!(da.status().state, ConnState::Stopped);

    // Dropping every handle takes a DA offline (it stays registered).
    drop(anon);
    app.wait_status("nobody online", |s| {
        s["online"] == 0 && s["registered"] == 1
    })
    .await;
}

#[tokio::test]
async fn signals_are_acked_and_bad_ones_refused_without_crashing() {
    let app = App::spawn().await;
    let da = builder(&app)
        .idf("Dummy_Sensor", ["dB"])
        .odf("Dummy_Control", ())
        .on_signal(|s| {
            if s.command == Command::Disconnect && s.feature == "Dummy_Control" {
                Err("this display stays connected".into())
            } else {
                Ok(())
            }
        })
        .connect()
        .await
        .unwrap();
    let mut csm = Csm::new(&app, da.id()).await;
    let t = data_topic();
    csm.connect("idf", "Dummy_Sensor", &t).await;
    csm.connect("odf", "Dummy_Control", &t).await;

    let r = csm.signal("idf", "Nope", "CONNECT", &t).await;
    assert_eq!(r["state"], "error");
    assert_eq!(
        r["reason"],
        "unknown IDF `Nope`: this DA has IDFs Dummy_Sensor"
    );
    let r = csm
        .send(json!({"msg_id": new_id(), "idf": "Dummy_Sensor", "command": "SUSPEND", "topic": t}))
        .await;
    assert_eq!(r["state"], "error");
    assert!(r["reason"].as_str().unwrap().contains("SUSPEND"), "{r}");
    let r = csm
        .signal("odf", "Dummy_Control", "DISCONNECT", "unused")
        .await;
    assert_eq!(
        r,
        json!({"msg_id": r["msg_id"], "state": "error", "reason": "this display stays connected"})
    );
    // Garbage without a msg_id cannot be answered; it is ignored and breaks nothing.
    let ctrl_o = format!("{}/ctrl/o", da.id());
    csm.m
        .publish(&ctrl_o, "not json", QoS::ExactlyOnce, false)
        .await;
    csm.m
        .publish_json(&ctrl_o, &json!({"command": "CONNECT"}), false)
        .await;
    let r = csm
        .signal("idf", "Dummy_Sensor", "DISCONNECT", "unused")
        .await;
    assert_eq!(r["state"], "ok", "{r}");

    let st = da.status();
    assert_eq!(st.signals_refused, 3);
    assert!(st.connected_idfs.is_empty());
    assert_eq!(
        st.connected_odfs,
        BTreeSet::from(["Dummy_Control".to_owned()])
    );
    assert!(st.is_online());
    da.deregister().await.unwrap();
}

#[tokio::test]
async fn pushes_need_a_connected_idf_and_are_wrapped_into_lists() {
    let app = App::spawn().await;
    let da = builder(&app)
        .idf("Dummy_Sensor", ["dB"])
        .idf("Pair", ["a", "b"])
        .connect()
        .await
        .unwrap();
    assert_eq!(
        da.push("Dummy_Sensor", 1).await,
        Err(Error::NotConnected("Dummy_Sensor".into()))
    );
    assert!(matches!(
        da.push("Nope", 1).await,
        Err(Error::UnknownFeature {
            direction: "IDF",
            ..
        })
    ));
    let t = data_topic();
    let mut reader = data_reader(&app, &t).await;
    let mut csm = Csm::new(&app, da.id()).await;
    csm.connect("idf", "Dummy_Sensor", &t).await;
    csm.connect("idf", "Pair", &t).await;
    da.push("Dummy_Sensor", 1).await.unwrap();
    da.push("Dummy_Sensor", "x").await.unwrap();
    da.push("Pair", vec![1, 2]).await.unwrap();
    da.push("Pair", (1.5, "tag")).await.unwrap();
    da.push("Dummy_Sensor", json!({"k": 1})).await.unwrap();
    assert_eq!(
        take(&mut reader, 5).await,
        vec![
            json!([1]),
            json!(["x"]),
            json!([1, 2]),
            json!([1.5, "tag"]),
            json!([{"k": 1}])
        ]
    );
    tokio::time::timeout(WAIT, da.flush())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(da.status().outbox_len, 0);
    let big = "x".repeat(da_sdk::MAX_PAYLOAD_BYTES);
    assert!(matches!(
        da.push("Dummy_Sensor", big).await,
        Err(Error::Encode(_))
    ));

    let r = csm
        .signal("idf", "Dummy_Sensor", "DISCONNECT", "unused")
        .await;
    assert_eq!(r["state"], "ok");
    assert_eq!(
        da.push("Dummy_Sensor", 2).await,
        Err(Error::NotConnected("Dummy_Sensor".into()))
    );
    da.deregister().await.unwrap();
}

#[tokio::test]
async fn odf_data_decodes_into_the_callers_type() {
    let app = App::spawn().await;
    let da = builder(&app)
        .odf("Dummy_Control", ())
        .connect()
        .await
        .unwrap();
    assert!(matches!(
        da.odf::<i64>("Nope").await,
        Err(Error::UnknownFeature {
            direction: "ODF",
            ..
        })
    ));
    let mut numbers = da.odf::<i64>("Dummy_Control").await.unwrap();
    let (tx, mut values) = tokio::sync::mpsc::unbounded_channel();
    da.on_odf::<Value, _>("Dummy_Control", move |r| {
        let _ = tx.send(r);
    })
    .await
    .unwrap();
    let t = data_topic();
    let mut csm = Csm::new(&app, da.id()).await;
    csm.connect("odf", "Dummy_Control", &t).await;
    let publisher = app.mqtt(None).await;
    for p in ["[5]", r#"["abc"]"#, "{{{", "[6]"] {
        publisher.publish(&t, p, QoS::AtLeastOnce, false).await;
    }
    let mut next = async || {
        tokio::time::timeout(WAIT, numbers.recv())
            .await
            .unwrap()
            .unwrap()
    };
    assert_eq!(next().await, Ok(5));
    let e = next().await.unwrap_err();
    assert_eq!(e.expected, "i64");
    assert!(e.what.contains("Dummy_Control"), "{e}");
    assert!(e.to_string().contains(r#"["abc"]"#), "{e}");
    let e = next().await.unwrap_err();
    assert!(e.reason.starts_with("not JSON"), "{e}");
    assert_eq!(next().await, Ok(6), "a bad sample does not end the stream");
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(
            tokio::time::timeout(WAIT, values.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert_eq!(got[0], Ok(json!([5])));
    assert_eq!(got[1], Ok(json!(["abc"])));
    assert!(got[2].is_err());
    assert_eq!(got[3], Ok(json!([6])));
    da.deregister().await.unwrap();
    assert!(
        tokio::time::timeout(WAIT, numbers.recv())
            .await
            .unwrap()
            .is_none(),
        "streams end when the DA stops"
    );
}

#[tokio::test]
async fn sdk_and_iottalk_py_share_the_data_plane() {
    let app = App::spawn().await;
    let sdk = builder(&app)
        .idf("Dummy_Sensor", ["int"])
        .odf("Dummy_Control", ["int"])
        .connect()
        .await
        .unwrap();
    let mut from_py = sdk.odf::<i64>("Dummy_Control").await.unwrap();
    let py_id = new_id();
    let mut py = PyDa::spawn(
        &app.csm,
        &py_id,
        "PY_DA",
        json!([["Py_Sensor", ["int"]]]),
        json!([["Py_Control", ["int"]]]),
    )
    .await;
    py.expect("registered").await;
    app.wait_status("both online", |s| s["online"] == 2).await;
    let mut csm_sdk = Csm::new(&app, sdk.id()).await;
    let mut csm_py = Csm::new(&app, py_id.parse().unwrap()).await;

    // SDK IDF -> Python ODF.
    let t1 = data_topic();
    csm_py.connect("odf", "Py_Control", &t1).await;
    csm_sdk.connect("idf", "Dummy_Sensor", &t1).await;
    sdk.push("Dummy_Sensor", 7).await.unwrap();
    let d = py.expect("data").await;
    assert_eq!(
        (d["df"].clone(), d["data"].clone()),
        (json!("Py_Control"), json!([7]))
    );

    // Python IDF -> SDK ODF.
    let t2 = data_topic();
    csm_sdk.connect("odf", "Dummy_Control", &t2).await;
    csm_py.connect("idf", "Py_Sensor", &t2).await;
    py.send("push Py_Sensor 8").await;
    let got = tokio::time::timeout(WAIT, from_py.recv()).await.unwrap();
    assert_eq!(got, Some(Ok(8)));

    py.deregister().await;
    sdk.deregister().await.unwrap();
    app.wait_status("both gone", |s| s["registered"] == 0).await;
}

#[tokio::test]
async fn broker_cut_pushes_made_meanwhile_are_delivered_once_in_order() {
    let mut app = fixed_app().await;
    let da = builder(&app)
        .idf("Dummy_Sensor", ["int"])
        .resume_timeout(Duration::from_secs(60))
        .connect()
        .await
        .unwrap();
    let t = data_topic();
    let mut reader = data_reader(&app, &t).await;
    let mut csm = Csm::new(&app, da.id()).await;
    csm.connect("idf", "Dummy_Sensor", &t).await;
    for i in 1..=3 {
        da.push("Dummy_Sensor", i).await.unwrap();
    }
    assert_eq!(
        take(&mut reader, 3).await,
        vec![json!([1]), json!([2]), json!([3])]
    );
    tokio::time::timeout(WAIT, da.flush())
        .await
        .unwrap()
        .unwrap();

    app.stop().await;
    wait(&da, "reconnecting", |s| s.state == ConnState::Reconnecting).await;
    for i in 4..=8 {
        da.push("Dummy_Sensor", i).await.unwrap();
    }
    assert_eq!(da.status().outbox_len, 5);

    let app = app.restart().await;
    wait(&da, "online again", |s| s.is_online() && s.sessions == 2).await;
    let mut reader = data_reader(&app, &t).await;
    // Pushes wait for the server's CONNECT (sent on every online) to know the topic.
    assert_eq!(da.status().outbox_len, 5);
    let mut csm = Csm::new(&app, da.id()).await;
    csm.connect("idf", "Dummy_Sensor", &t).await;
    da.push("Dummy_Sensor", 9).await.unwrap();
    assert_eq!(
        take(&mut reader, 6).await,
        (4..=9).map(|i| json!([i])).collect::<Vec<_>>(),
        "in order, none lost, none twice"
    );
    tokio::time::timeout(WAIT, da.flush())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(da.status().registrations, 1, "the registration survived");
    da.deregister().await.unwrap();
}

#[tokio::test]
async fn controller_restart_mid_stream_loses_nothing_from_a_sqlite_outbox() {
    let mut app = fixed_app().await;
    let dir = tempfile::tempdir().unwrap();
    let da = builder(&app)
        .idf("Dummy_Sensor", ["int"])
        // Room for every push made while the controller restarts, however long that takes
        // (the pusher adds one every 15 ms; a full outbox would refuse it).
        .outbox(OutboxConfig::sqlite(dir.path().join("outbox.db"), 100_000))
        .resume_timeout(Duration::from_secs(60))
        .connect()
        .await
        .unwrap();
    let t = data_topic();
    let mut reader = data_reader(&app, &t).await;
    let mut csm = Csm::new(&app, da.id()).await;
    csm.connect("idf", "Dummy_Sensor", &t).await;
    // A pusher that runs through the restart: it neither knows nor cares about it.
    let stop_after = Arc::new(AtomicU64::new(u64::MAX));
    let (tx, mut pushed) = tokio::sync::mpsc::unbounded_channel();
    let pusher = {
        let da = da.clone();
        let stop_after = stop_after.clone();
        tokio::spawn(async move {
            let mut i = 1u64;
            while i <= stop_after.load(Ordering::SeqCst) {
                da.push("Dummy_Sensor", i).await.unwrap();
                let _ = tx.send(i);
                i += 1;
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            i - 1
        })
    };
    let mut latest = 0;
    let mut wait_pushed = async |n: u64| {
        while latest < n {
            latest = tokio::time::timeout(WAIT, pushed.recv())
                .await
                .unwrap()
                .unwrap();
        }
        latest
    };
    let mut received = take(&mut reader, 10).await;

    app.stop().await;
    // What the first broker delivered before it stopped (more than 10 when stopping is slow)
    // is in this reader, not the next one.
    received.extend(reader.until_closed().await.iter().map(Received::json));
    wait(&da, "reconnecting", |s| s.state == ConnState::Reconnecting).await;
    // The stream runs on while the controller is down...
    let at_stop = wait_pushed(0).await;
    wait_pushed(at_stop + 15).await;
    let app = app.restart().await;
    let mut reader = data_reader(&app, &t).await;
    wait(&da, "online again", |s| s.is_online() && s.sessions == 2).await;
    let mut csm = Csm::new(&app, da.id()).await;
    csm.connect("idf", "Dummy_Sensor", &t).await;
    // ...and for a while after the link is back.
    let now = wait_pushed(0).await;
    stop_after.store(now + 10, Ordering::SeqCst);
    let last = tokio::time::timeout(WAIT, pusher).await.unwrap().unwrap();
    tokio::time::timeout(WAIT, da.flush())
        .await
        .unwrap()
        .unwrap();

    // Everything not yet seen arrives, in order. A push in flight when the broker went
    // away may be seen twice (at least once); none is lost.
    loop {
        if received.last().and_then(|v| v[0].as_u64()) == Some(last) {
            break;
        }
        received.extend(take(&mut reader, 1).await);
    }
    let mut firsts = Vec::new();
    for v in &received {
        let i = v[0].as_u64().unwrap();
        if !firsts.contains(&i) {
            firsts.push(i);
        }
    }
    assert_eq!(
        firsts,
        (1..=last).collect::<Vec<_>>(),
        "received {received:?}"
    );
    assert_eq!(da.status().outbox_len, 0);
    da.deregister().await.unwrap();
}

#[tokio::test]
async fn a_da_the_server_lost_registers_again_by_itself() {
    let csm_listen = free_addr();
    let mqtt_listen = free_addr();
    let opts = AppOptions {
        csm_listen: Some(csm_listen),
        mqtt_listen: Some(mqtt_listen),
        ..Default::default()
    };
    let mut first = App::start(opts.clone()).await;
    let da = builder(&first)
        .idf("Dummy_Sensor", ["int"])
        .resume_timeout(Duration::from_secs(60))
        .connect()
        .await
        .unwrap();
    let rev1 = da.status().rev;
    let mut csm = Csm::new(&first, da.id()).await;
    csm.connect("idf", "Dummy_Sensor", &data_topic()).await;
    first.stop().await;
    wait(&da, "reconnecting", |s| s.state == ConnState::Reconnecting).await;
    da.push("Dummy_Sensor", 1).await.unwrap();
    da.push("Dummy_Sensor", 2).await.unwrap();

    // Another controller on the same addresses, with an empty database.
    let second = App::start(opts).await;
    let st = wait(&da, "registered again and online", |s| {
        s.is_online() && s.registrations == 2
    })
    .await;
    assert_ne!(st.rev, rev1);
    let (code, rec) = second.get(&da.id().to_string()).await;
    assert_eq!(code, 200);
    assert_eq!(rec["rev"], st.rev.as_str());
    assert_eq!(rec["idf_list"], json!([["Dummy_Sensor", ["int"]]]));
    second
        .wait_status("online with the new rev", |s| s["online"] == 1)
        .await;
    // The new server links the IDF to a new topic; the pushes made meanwhile go there.
    let t2 = data_topic();
    let mut reader = data_reader(&second, &t2).await;
    let mut csm = Csm::new(&second, da.id()).await;
    csm.connect("idf", "Dummy_Sensor", &t2).await;
    assert_eq!(take(&mut reader, 2).await, vec![json!([1]), json!([2])]);
    da.deregister().await.unwrap();
    assert_eq!(second.get(&da.id().to_string()).await.0, 404);
}

#[tokio::test]
async fn a_late_will_does_not_leave_the_da_offline() {
    let app = App::spawn().await;
    let da = builder(&app).connect().await.unwrap();
    let rev = da.status().rev;
    let mut csm = Csm::new(&app, da.id()).await;
    csm.online(None).await;
    // What the broker does when it notices a dead previous connection after we reconnected.
    csm.m
        .publish_json(
            &format!("{}/ctrl/i", da.id()),
            &json!({"state": "offline", "rev": rev.as_str()}),
            true,
        )
        .await;
    csm.m
        .recv_until("the late will", |r| r.json()["state"] == "offline")
        .await;
    let again = csm.online(None).await;
    assert_eq!(again, rev.as_str(), "online again, same rev, no sleep");
    app.wait_status("online", |s| s["online"] == 1).await;
    // The last word retained is online (stored by the time the online above arrived; the
    // broker may hand retained messages over late, hence the poll).
    csm.m
        .retained_until(&format!("{}/ctrl/i", da.id()), "online", |r| {
            r.last().is_some_and(|m| m.json()["state"] == "online")
        })
        .await;
    da.deregister().await.unwrap();
}

#[tokio::test]
async fn calls_between_das_over_mqtt_5_and_3_1_1() {
    let app = App::spawn().await;
    let server = builder(&app)
        .mqtt_version(MqttVersion::V5)
        .connect()
        .await
        .unwrap();
    server
        .serve(
            "add",
            |(a, b): (i64, i64)| async move { Ok::<_, String>(a + b) },
        )
        .await
        .unwrap();
    server
        .serve("fail", |_: Value| async {
            Err::<Value, _>("the lamp is broken")
        })
        .await
        .unwrap();
    server
        .serve("sleep", |ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, String>(ms)
        })
        .await
        .unwrap();
    server
        .serve("panic", |_: Value| async {
            if true {
                panic!("handler bug");
            }
            Ok::<Value, String>(Value::Null)
        })
        .await
        .unwrap();
    let target = server.id().to_string();
    for version in [MqttVersion::V311, MqttVersion::V5] {
        let client = builder(&app).mqtt_version(version).connect().await.unwrap();
        let expected = match version {
            MqttVersion::V311 => Protocol::V311,
            _ => Protocol::V5,
        };
        assert_eq!(client.status().protocol, Some(expected));
        let sum: i64 = client.call(&target, "add", (2, 3)).await.unwrap();
        assert_eq!(sum, 5);
        let err = client
            .call::<_, Value>(&target, "fail", ())
            .await
            .unwrap_err();
        assert_eq!(
            err,
            Error::Remote {
                target: target.clone(),
                method: "fail".into(),
                code: RpcErrorCode::Handler,
                reason: "the lamp is broken".into()
            }
        );
        let err = client
            .call::<_, Value>(&target, "nope", ())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Remote { code: RpcErrorCode::UnknownMethod, reason, .. } if reason.contains("add")),
            "{err}"
        );
        let err = client
            .call::<_, Value>(&target, "add", "x")
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Remote {
                    code: RpcErrorCode::BadRequest,
                    ..
                }
            ),
            "{err}"
        );
        let err = client
            .call::<_, Value>(&target, "panic", ())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Remote { code: RpcErrorCode::Handler, reason, .. } if reason.contains("panicked")),
            "{err}"
        );
        let err = client
            .call::<_, String>(&target, "add", (1, 1))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Decode(_)), "{err}");
        // The handler outlives the caller's deadline: the caller stops waiting at it.
        let err = client
            .call_within::<_, Value>(&target, "sleep", 5000, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
        // Many calls at once: every reply finds its caller.
        let calls = (0..20i64).map(|i| {
            let c = client.clone();
            let t = target.clone();
            async move { c.call::<_, i64>(&t, "add", (i, 1000)).await.unwrap() }
        });
        let sums = futures::future::join_all(calls).await;
        assert_eq!(sums, (0..20).map(|i| i + 1000).collect::<Vec<_>>());
        client.deregister().await.unwrap();
    }
    server.deregister().await.unwrap();
}

#[tokio::test]
async fn a_call_to_a_missing_target_fails_at_its_deadline() {
    let app = App::spawn().await;
    let da = builder(&app).connect().await.unwrap();
    let started = Instant::now();
    let err = da
        .call_within::<_, Value>("nobody-is-here", "ping", (), Duration::from_millis(700))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(
        err,
        Error::Timeout {
            target: "nobody-is-here".into(),
            method: "ping".into(),
            timeout_ms: 700
        }
    );
    // It waited for its deadline, and gave up then, not after some other, much longer wait.
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(25),
        "{took:?}"
    );
    assert!(matches!(
        da.call::<_, Value>("a/b", "ping", ()).await,
        Err(Error::InvalidName(_))
    ));
    // Cancelling (dropping) a call leaves the DA usable.
    let cancelled = tokio::time::timeout(
        Duration::from_millis(50),
        da.call::<_, Value>("nobody-is-here", "ping", ()),
    )
    .await;
    assert!(cancelled.is_err());
    da.serve("ping", |_: Value| async { Ok::<_, String>("pong") })
        .await
        .unwrap();
    let pong: String = da.call(&da.id().to_string(), "ping", ()).await.unwrap();
    assert_eq!(pong, "pong");
    da.deregister().await.unwrap();
}

#[tokio::test]
async fn plain_mqtt_clients_can_call_and_get_one_reply() {
    let app = App::spawn().await;
    let server = builder(&app).connect().await.unwrap();
    server
        .serve("echo", |v: Value| async move { Ok::<_, String>(v) })
        .await
        .unwrap();
    let mut m = app.mqtt(None).await;
    m.subscribe("iottalk/rpc/tester/res/n1", QoS::AtLeastOnce)
        .await;
    let req = format!("iottalk/rpc/{}/req", server.id());
    m.publish_json(
        &req,
        &json!({"id": "42", "method": "echo", "args": {"a": 1}, "reply_to": "iottalk/rpc/tester/res/n1"}),
        false,
    )
    .await;
    let r = m.recv_until("echo reply", |_| true).await.json();
    assert_eq!(r, json!({"id": "42", "state": "ok", "result": {"a": 1}}));
    m.publish_json(
        &req,
        &json!({"id": "43", "reply_to": "iottalk/rpc/tester/res/n1"}),
        false,
    )
    .await;
    let r = m.recv_until("error reply", |_| true).await.json();
    assert_eq!(r["id"], "43");
    assert_eq!(r["state"], "error");
    assert_eq!(r["code"], "bad_request");
    assert_eq!(r["reason"], "missing field `method`");
    server.deregister().await.unwrap();
}

#[tokio::test]
async fn bad_urls_and_rejections_give_clear_errors() {
    let app = App::spawn().await;
    let err = Da::builder("not a url")
        .model("M")
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidUrl { .. }), "{err}");
    let err = Da::builder(&app.csm).connect().await.unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");

    let nobody = format!("http://{}", free_addr());
    let started = Instant::now();
    let err = Da::builder(&nobody).model("M").connect().await.unwrap_err();
    assert!(
        matches!(&err, Error::Unreachable { url, .. } if url.starts_with(&nobody)),
        "{err}"
    );
    assert!(err.to_string().contains("refused"), "{err}");
    // Retrying (which is not asked for here) would go on for minutes.
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "no retry unless asked"
    );

    let err = builder(&app)
        .name("n".repeat(300))
        .connect()
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::Rejected {
            status: 400,
            reason: "field `name`: must be at most 256 bytes".into()
        }
    );
    let err = Da::builder(format!("{}/wrong/prefix", app.csm))
        .model("M")
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Rejected { status: 404, reason } if reason.contains("no such endpoint")),
        "{err}"
    );
    // Pointed at something that is not the registration API at all (the broker's port).
    let err = Da::builder(format!("http://{}", app.mqtt))
        .model("M")
        .http_timeout(Duration::from_secs(2))
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Unreachable { .. } | Error::Protocol { .. } | Error::Rejected { .. }
        ),
        "{err}"
    );
    app.wait_status("nothing registered", |s| s["registered"] == 0)
        .await;
}

#[tokio::test]
async fn a_server_down_at_start_is_waited_for_when_asked() {
    // A port that refuses HTTP by closing every connection, counting the attempts.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let csm_listen = listener.local_addr().unwrap().to_string();
    let url = format!("http://{csm_listen}");
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let refuser = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            drop(s);
            let _ = seen_tx.send(());
        }
    });
    let err = Da::builder(&url).model("M").connect().await.unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err}");

    let id = DaId::new_v4();
    let waiting = tokio::spawn(
        patient(Da::builder(&url))
            .id(id)
            .model("Dummy_Device")
            .retry(Retry::Forever)
            .backoff(Duration::from_millis(20), Duration::from_millis(200))
            .connect(),
    );
    for _ in 0..3 {
        tokio::time::timeout(WAIT, seen.recv()).await.unwrap();
    }
    refuser.abort();
    let _ = refuser.await;
    let app = App::start(AppOptions {
        csm_listen: Some(csm_listen),
        ..Default::default()
    })
    .await;
    let da = tokio::time::timeout(WAIT, waiting)
        .await
        .expect("connects once the server is up")
        .unwrap()
        .unwrap();
    assert_eq!(da.id(), id);
    assert!(da.status().is_online());
    assert_eq!(app.get(&id.to_string()).await.0, 200);
    da.deregister().await.unwrap();
}

#[tokio::test]
async fn the_examples_talk_and_stop_cleanly() {
    let app = App::spawn().await;
    let (sid, did) = (DaId::new_v4(), DaId::new_v4());
    let mut display = Example::spawn(
        "dummy_display",
        &["--api-url", &app.csm, "--id", &did.to_string()],
    );
    let mut sensor = Example::spawn(
        "dummy_sensor",
        &[
            "--api-url",
            &app.csm,
            "--id",
            &sid.to_string(),
            "--interval-ms",
            "30",
        ],
    );
    app.wait_status("both online", |s| s["online"] == 2).await;
    let t = data_topic();
    Csm::new(&app, did)
        .await
        .connect("odf", "Dummy_Control", &t)
        .await;
    Csm::new(&app, sid)
        .await
        .connect("idf", "Dummy_Sensor", &t)
        .await;
    for i in 1..=3 {
        assert_eq!(sensor.line("a pushed value").await, i.to_string());
        assert_eq!(display.line("a displayed value").await, format!("[{i}]"));
    }
    sensor.terminate().await;
    display.terminate().await;
    assert_eq!(app.get(&sid.to_string()).await.0, 404);
    assert_eq!(app.get(&did.to_string()).await.0, 404);
}

#[tokio::test]
async fn gateway_devices_round_trip_through_sqlite_across_a_process_restart() {
    let app = App::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gw.db");
    let db_arg = db.to_str().unwrap().to_owned();
    let gw_id = DaId::new_v4();
    let expected: BTreeSet<String> = ["lamp-1", "lamp-2"]
        .iter()
        .map(|n| Device::derive_id(&gw_id, n).to_string())
        .collect();
    let run = |devices: &str| {
        Example::spawn(
            "gateway",
            &[
                "--api-url",
                &app.csm,
                "--id",
                &gw_id.to_string(),
                "--db",
                &db_arg,
                "--devices",
                devices,
                "--interval-ms",
                "50",
            ],
        )
    };
    let online = async |g: &mut Example| {
        let mut ids = BTreeSet::new();
        for _ in 0..2 {
            let line = g.line("online").await;
            let mut w = line.split(' ');
            assert_eq!(w.next(), Some("online"), "{line}");
            ids.insert(w.next().unwrap().to_owned());
        }
        ids
    };

    let mut gw = run("2");
    assert_eq!(online(&mut gw).await, expected);
    for id in &expected {
        let (code, rec) = app.get(id).await;
        assert_eq!(code, 200);
        assert_eq!(rec["profile"]["tags"]["gateway"], gw_id.to_string());
        assert!(rec["name"].as_str().unwrap().starts_with("lamp-"));
    }
    gw.terminate().await;
    for id in &expected {
        assert_eq!(app.get(id).await.0, 404, "deregistered on SIGTERM");
    }
    let stored = tokio::task::spawn_blocking({
        let db = db.clone();
        move || SqliteDeviceManager::open(db).unwrap().list().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(stored.len(), 2);
    assert!(stored
        .iter()
        .all(|s| s.state == DeviceState::Active && s.hash == s.device.hash()));

    // Second process: no new devices asked for; the store brings the same ones back.
    let mut gw = run("0");
    assert_eq!(online(&mut gw).await, expected);
    for id in &expected {
        assert_eq!(app.get(id).await.0, 200);
    }
    gw.terminate().await;
}

#[tokio::test]
async fn gateway_finishes_a_delete_the_server_missed_after_a_restart() {
    let mut app = fixed_app().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gw.db");
    let open = |db: std::path::PathBuf| async move {
        let m = tokio::task::spawn_blocking(move || SqliteDeviceManager::open(db).unwrap())
            .await
            .unwrap();
        Arc::new(m)
    };
    let gateway = |app: &App, m: Arc<SqliteDeviceManager>| {
        Gateway::new(&app.csm, m).unwrap().configure(|b| {
            patient(b).backoff(Duration::from_millis(50), Duration::from_millis(400))
        })
    };
    let mut gw = gateway(&app, open(db.clone()).await);
    assert!(gw.start().await.unwrap().online.is_empty());
    let lamp = |name: &str| {
        Device::new(DaId::new_v4(), "Dummy_Device", name)
            .unwrap()
            .with_idf("Dummy_Sensor", ["int"])
            .unwrap()
            .with_tag("room", "lab")
            .unwrap()
    };
    let (d1, d2) = (lamp("lamp-1"), lamp("lamp-2"));
    gw.add(d1.clone()).await.unwrap();
    gw.add(d2.clone()).await.unwrap();
    assert!(matches!(
        gw.add(d1.clone()).await,
        Err(Error::DeviceExists(_))
    ));
    app.wait_status("two online", |s| s["online"] == 2).await;

    // An update with a new hash registers again; the same description changes nothing.
    let mut d1b = d1.clone();
    d1b.tags_mut().change("room", "hall").unwrap();
    assert!(gw.update(d1b.clone()).await.unwrap());
    assert!(!gw.update(d1b.clone()).await.unwrap());
    let (_, rec) = app.get(&d1.id().to_string()).await;
    assert_eq!(rec["profile"]["tags"], json!({"room": "hall"}));

    app.stop().await;
    let err = gw.delete(&d2.id()).await.unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err}");
    let states: Vec<_> = gw
        .devices()
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.device.id(), s.state))
        .collect();
    assert!(
        states.contains(&(d2.id(), DeviceState::Deleting)),
        "{states:?}"
    );
    gw.shutdown().await.unwrap();

    let app = app.restart().await;
    assert_eq!(
        app.get(&d2.id().to_string()).await.0,
        200,
        "the server still has it"
    );
    let mut gw = gateway(&app, open(db.clone()).await);
    let report = gw.start().await.unwrap();
    assert_eq!(report.deleted, vec![d2.id()]);
    assert_eq!(report.online, vec![d1.id()]);
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(app.get(&d2.id().to_string()).await.0, 404);
    let (_, rec) = app.get(&d1.id().to_string()).await;
    assert_eq!(
        rec["profile"]["tags"],
        json!({"room": "hall"}),
        "the update was stored"
    );
    assert!(gw.da(&d1.id()).unwrap().status().is_online());

    // Disconnect: offline and forgotten here, still registered on the server.
    gw.disconnect(&d1.id()).await.unwrap();
    assert!(gw.devices().await.unwrap().is_empty());
    app.wait_status("offline but registered", |s| {
        s["online"] == 0 && s["registered"] == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_blocking_api_pushes_receives_and_calls() {
    let app = App::spawn().await;
    let url = app.csm.clone();
    let id = DaId::new_v4();
    let (linked_tx, linked_rx) = std::sync::mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        let da = patient(Da::builder(url))
            .id(id)
            .model("Dummy_Device")
            .idf("Dummy_Sensor", ["int"])
            .odf("Dummy_Control", ["int"])
            .connect_blocking()
            .unwrap();
        let mut rx = da.odf::<i64>("Dummy_Control").unwrap();
        linked_rx.recv().unwrap();
        da.push("Dummy_Sensor", 41).unwrap();
        let got = rx.recv_timeout(WAIT).unwrap();
        da.serve("double", |x: i64| Ok::<_, String>(x * 2)).unwrap();
        let doubled: i64 = da.call(&id.to_string(), "double", 21).unwrap();
        da.flush().unwrap();
        da.deregister().unwrap();
        (got, doubled)
    });
    app.wait_status("online", |s| s["online"] == 1).await;
    // The DA's own IDF and ODF share one topic: what it pushes comes back to it.
    let t = data_topic();
    let mut csm = Csm::new(&app, id).await;
    csm.connect("odf", "Dummy_Control", &t).await;
    csm.connect("idf", "Dummy_Sensor", &t).await;
    linked_tx.send(()).unwrap();
    let (got, doubled) = tokio::task::spawn_blocking(move || worker.join().unwrap())
        .await
        .unwrap();
    assert_eq!(got, Some(Ok(41)));
    assert_eq!(doubled, 42);
    assert_eq!(app.get(&id.to_string()).await.0, 404);
}

/// Sets the controller's home catalog through its REST API.
async fn put_home_catalog(app: &App, catalog: &Value) {
    let r = app
        .operator(app.http.put(format!("{}/api/home", app.ccm)))
        .json(catalog)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    assert!(status.is_success(), "PUT /api/home: {status} {body}");
}

/// Home scenes from a DA (issue 11), against the controller's home handler: a scene of one
/// `delay` device runs and its result tree comes back; an unknown target is a result with
/// `ok: false`, not an error; concurrent commands each get their own result; the reply
/// filter is subscribed to again after a controller restart; the blocking API too.
#[tokio::test(flavor = "multi_thread")]
async fn home_scenes_run_from_a_da_and_failures_are_results() {
    let mut app = fixed_app().await;
    put_home_catalog(
        &app,
        &json!({"devices": {"pause": {"driver": "delay", "ms": 10}}, "scenes": {"s": ["pause"]}}),
    )
    .await;
    let da = builder(&app).connect().await.unwrap();

    let r = da.home_run("s", "on").await.unwrap();
    assert!(r.ok, "{r:?}");
    assert_eq!((r.target.as_str(), r.cmd.as_str()), ("s", "on"));
    assert_eq!(
        r.id.len(),
        32,
        "the request's nonce comes back as its id: {r:?}"
    );
    assert_eq!(r.children.len(), 1, "{r:?}");
    assert_eq!(r.children[0].target, "pause");
    assert!(r.children[0].ok, "{r:?}");
    assert!(r.failures().is_empty());

    let r = da
        .home_run_within("garage", "off", Duration::from_secs(3))
        .await
        .unwrap();
    assert!(!r.ok, "{r:?}");
    assert_eq!(r.target, "garage");
    assert_eq!(r.detail.as_deref(), Some("unknown target"), "{r:?}");
    assert_eq!(r.failures(), ["garage: unknown target"]);

    // Several at once: each result reaches its own caller.
    let runs = ["on", "off", "dim:40"].map(|cmd| {
        let da = da.clone();
        async move { da.home_run_within("s", cmd, WAIT).await }
    });
    let results = futures::future::join_all(runs).await;
    let cmds: Vec<String> = results
        .into_iter()
        .map(|r| {
            let r = r.unwrap();
            assert!(r.ok, "{r:?}");
            r.cmd
        })
        .collect();
    assert_eq!(cmds, ["on", "off", "dim:40"]);
    assert!(matches!(
        da.home_run("a/b", "on").await,
        Err(Error::InvalidName(_))
    ));

    // After a restart the DA subscribes to its results again (the catalog is stored).
    app.stop().await;
    wait(&da, "reconnecting", |s| s.state == ConnState::Reconnecting).await;
    let app = app.restart().await;
    wait(&da, "online again", |s| s.is_online() && s.sessions == 2).await;
    let r = da.home_run_within("s", "full", WAIT).await.unwrap();
    assert!(r.ok && r.children.len() == 1, "{r:?}");

    let url = app.csm.clone();
    let blocking = std::thread::spawn(move || {
        let da = patient(Da::builder(url))
            .model("Dummy_Device")
            .connect_blocking()
            .unwrap();
        let r = da.home_run("s", "off");
        da.deregister().unwrap();
        r
    });
    let r = tokio::task::spawn_blocking(move || blocking.join().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(r.ok && r.cmd == "off", "{r:?}");
    da.deregister().await.unwrap();
}

/// With authentication on, a DA runs home scenes only when the controller sets
/// `home.allow_das = true`; otherwise the broker refuses its result filter and the command
/// fails at once with an error that says so (not after a silent timeout).
#[tokio::test]
async fn home_scenes_from_a_da_need_allow_das_when_authentication_is_on() {
    let catalog =
        json!({"devices": {"pause": {"driver": "delay", "ms": 10}}, "scenes": {"s": ["pause"]}});
    let app = App::start(AppOptions {
        auth: true,
        ..AppOptions::default()
    })
    .await;
    put_home_catalog(&app, &catalog).await;
    let da = builder(&app).connect().await.unwrap();
    let started = Instant::now();
    let err = da.home_run("s", "on").await.unwrap_err();
    assert!(matches!(err, Error::HomeRefused { .. }), "{err:?}");
    assert!(err.to_string().contains("home.allow_das = true"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    // The DA is still usable, and the next command asks again.
    assert!(matches!(
        da.home_run_within("s", "on", Duration::from_millis(300))
            .await,
        Err(Error::HomeRefused { .. })
    ));
    da.deregister().await.unwrap();
    drop(app);

    let app = App::start(AppOptions {
        auth: true,
        extra_toml: "[home]\nallow_das = true\n".into(),
        ..AppOptions::default()
    })
    .await;
    put_home_catalog(&app, &catalog).await;
    let da = builder(&app).connect().await.unwrap();
    let r = da
        .home_run_within("s", "on", Duration::from_secs(3))
        .await
        .unwrap();
    assert!(r.ok && r.children.len() == 1, "{r:?}");
    da.deregister().await.unwrap();
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tls")
            .join(name),
    )
    .unwrap()
}

#[tokio::test]
async fn mqtts_brokers_are_reached_over_tls() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    // A TLS-terminating proxy in front of the embedded broker; the controller advertises it.
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = proxy.local_addr().unwrap().port();
    let env = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    let app = App::start(AppOptions {
        env: vec![
            env("IOTCTL__BROKER__SCHEME", "mqtts"),
            env("IOTCTL__BROKER__ADVERTISE_HOST", "127.0.0.1"),
            env("IOTCTL__BROKER__ADVERTISE_PORT", &port.to_string()),
        ],
        ..Default::default()
    })
    .await;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&fixture("cert.pem"))
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(&fixture("key.pem")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let upstream = app.mqtt.clone();
    let (hs_tx, mut handshakes) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = proxy.accept().await {
            let (acceptor, upstream, hs_tx) = (acceptor.clone(), upstream.clone(), hs_tx.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    let _ = hs_tx.send(false);
                    return;
                };
                let _ = hs_tx.send(true);
                if let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                }
            });
        }
    });

    let da = builder(&app)
        .idf("Dummy_Sensor", ["int"])
        .tls_roots_pem(fixture("ca.pem"))
        .connect()
        .await
        .unwrap();
    assert!(da.status().is_online());
    assert_eq!(handshakes.recv().await, Some(true));
    let t = data_topic();
    let mut reader = data_reader(&app, &t).await;
    Csm::new(&app, da.id())
        .await
        .connect("idf", "Dummy_Sensor", &t)
        .await;
    da.push("Dummy_Sensor", 1).await.unwrap();
    assert_eq!(take(&mut reader, 1).await, vec![json!([1])]);

    // Without the test CA the broker's certificate is not trusted: a clear error, no hang.
    let err = builder(&app).connect().await.unwrap_err();
    assert!(
        matches!(&err, Error::Broker { broker, reason } if broker.starts_with("mqtts://") && reason.contains("certificate")),
        "{err}"
    );
    da.deregister().await.unwrap();
}
