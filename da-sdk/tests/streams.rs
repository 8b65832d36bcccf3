#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Streamed replies between DAs through the real controller's broker: order and completeness,
//! flow control (a slow reader slows the producer), cancellation both ways, errors, and the
//! wire format as a plain MQTT client sees it.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use da_sdk::{Da, Error, RpcErrorCode, StreamOptions};
use futures::{stream, StreamExt};
use iot_tests::*;
use rumqttc::QoS;
use serde_json::{json, Value};

/// Sets a flag when dropped: shows that a producer was stopped.
struct Dropped(Arc<AtomicBool>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Waits (at most 1 s: the promise the SDK makes) until `flag` is set.
async fn within_a_second(flag: &AtomicBool, what: &str) {
    let started = Instant::now();
    while !flag.load(Ordering::SeqCst) {
        assert!(started.elapsed() < Duration::from_secs(1), "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A DA serving `count` (0 to n-1), counting what its producer made in `made`.
async fn counter(app: &App, made: Arc<AtomicU64>) -> Da {
    let da = builder(app).connect().await.unwrap();
    da.serve_stream("count", move |n: u64| {
        let made = made.clone();
        stream::iter(0..n).map(move |i| {
            made.fetch_add(1, Ordering::SeqCst);
            Ok::<_, String>(i)
        })
    })
    .await
    .unwrap();
    da
}

#[tokio::test]
async fn ten_thousand_items_arrive_in_order_never_more_than_a_window_ahead() {
    let app = App::spawn().await;
    let made = Arc::new(AtomicU64::new(0));
    let server = counter(&app, made.clone()).await;
    let caller = builder(&app).connect().await.unwrap();
    let mut items = caller
        .call_stream::<_, u64>(&server.id().to_string(), "count", 10_000)
        .await
        .unwrap();
    let mut expect = 0;
    let mut most_ahead = 0;
    while let Some(item) = items.next().await {
        assert_eq!(item.unwrap(), expect, "in order, each once");
        expect += 1;
        most_ahead = most_ahead.max(made.load(Ordering::SeqCst) - expect);
    }
    assert_eq!(expect, 10_000, "complete");
    // What is held anywhere (in flight, in the reader's buffer) is at most a window.
    assert!(
        most_ahead <= 16,
        "the producer ran {most_ahead} items ahead"
    );
    server.deregister().await.unwrap();
    caller.deregister().await.unwrap();
}

#[tokio::test]
async fn a_slow_reader_slows_the_producer_instead_of_growing_a_queue() {
    let app = App::spawn().await;
    let made = Arc::new(AtomicU64::new(0));
    let server = counter(&app, made.clone()).await;
    let caller = builder(&app).connect().await.unwrap();
    let options = StreamOptions {
        window: 4,
        ..StreamOptions::default()
    };
    let mut items = caller
        .call_stream_with::<_, u64>(&server.id().to_string(), "count", 1_000_000, options)
        .await
        .unwrap();
    for i in 0..10 {
        assert_eq!(items.next().await.unwrap().unwrap(), i);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let ahead = made.load(Ordering::SeqCst) - (i + 1);
        assert!(
            ahead <= 4,
            "after {} items the producer made {ahead} more",
            i + 1
        );
    }
    drop(items);
    server.deregister().await.unwrap();
    caller.deregister().await.unwrap();
}

#[tokio::test]
async fn dropping_the_callers_stream_stops_the_producer_within_a_second() {
    let app = App::spawn().await;
    let server = builder(&app).connect().await.unwrap();
    let stopped = Arc::new(AtomicBool::new(false));
    let flag = stopped.clone();
    server
        .serve_stream("ticks", move |_: Value| {
            let guard = Dropped(flag.clone());
            stream::unfold((0u64, guard), |(i, g)| async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                Some((Ok::<_, String>(i), (i + 1, g)))
            })
        })
        .await
        .unwrap();
    let caller = builder(&app).connect().await.unwrap();
    let mut ticks = caller
        .call_stream::<_, u64>(&server.id().to_string(), "ticks", ())
        .await
        .unwrap();
    for i in 0..3 {
        assert_eq!(ticks.next().await.unwrap().unwrap(), i);
    }
    assert!(!stopped.load(Ordering::SeqCst));
    drop(ticks);
    within_a_second(&stopped, "the producer still runs a second after the drop").await;
    server.deregister().await.unwrap();
    caller.deregister().await.unwrap();
}

#[tokio::test]
async fn a_producer_error_ends_the_callers_stream_with_remote_within_a_second() {
    let app = App::spawn().await;
    let server = builder(&app).connect().await.unwrap();
    server
        .serve_stream("scan", |n: u64| {
            stream::iter(0..=n).then(move |i| async move {
                if i < n {
                    Ok(i)
                } else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Err(format!("disk {i} is on fire"))
                }
            })
        })
        .await
        .unwrap();
    let caller = builder(&app).connect().await.unwrap();
    let target = server.id().to_string();
    let mut items = caller
        .call_stream::<_, u64>(&target, "scan", 3)
        .await
        .unwrap();
    for i in 0..3 {
        assert_eq!(items.next().await.unwrap().unwrap(), i);
    }
    let started = Instant::now();
    match items.next().await {
        Some(Err(Error::Remote { code, reason, .. })) => {
            assert_eq!(code, RpcErrorCode::Handler);
            assert_eq!(reason, "disk 3 is on fire");
        }
        other => panic!("expected the server's error, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(items.next().await.is_none(), "the error ends the stream");

    // Arguments that do not fit: the caller hears why.
    let mut bad = caller
        .call_stream::<_, u64>(&target, "scan", "three")
        .await
        .unwrap();
    match bad.next().await {
        Some(Err(Error::Remote { code, .. })) => assert_eq!(code, RpcErrorCode::BadRequest),
        other => panic!("expected bad_request, got {other:?}"),
    }
    // A plain call of a streamed method is refused; a streamed call of a missing one too.
    let err = caller
        .call::<_, Value>(&target, "scan", 3)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Remote { code: RpcErrorCode::BadRequest, reason, .. } if reason.contains("streams its reply")),
        "{err}"
    );
    let mut missing = caller
        .call_stream::<_, u64>(&target, "nope", ())
        .await
        .unwrap();
    match missing.next().await {
        Some(Err(Error::Remote { code, reason, .. })) => {
            assert_eq!(code, RpcErrorCode::UnknownMethod);
            assert!(reason.contains("scan"), "{reason}");
        }
        other => panic!("expected unknown_method, got {other:?}"),
    }
    // A method answered once, called as a stream: its one result is the stream's one item.
    server
        .serve("one", |n: u64| async move { Ok::<_, String>(n + 1) })
        .await
        .unwrap();
    let one: Vec<u64> = caller
        .call_stream::<_, u64>(&target, "one", 41)
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(one, vec![42]);
    server.deregister().await.unwrap();
    caller.deregister().await.unwrap();
}

#[tokio::test]
async fn a_stalled_producer_times_the_reader_out_and_is_stopped() {
    let app = App::spawn().await;
    let server = builder(&app).connect().await.unwrap();
    let stopped = Arc::new(AtomicBool::new(false));
    let flag = stopped.clone();
    server
        .serve_stream("stall", move |_: Value| {
            let guard = Dropped(flag.clone());
            stream::once(async { Ok::<_, String>(1) }).chain(stream::once(async move {
                let _guard = guard;
                std::future::pending::<()>().await;
                Ok(2)
            }))
        })
        .await
        .unwrap();
    let caller = builder(&app).connect().await.unwrap();
    let options = StreamOptions {
        gap: Some(Duration::from_millis(300)),
        ..StreamOptions::default()
    };
    let mut items = caller
        .call_stream_with::<_, u64>(&server.id().to_string(), "stall", (), options)
        .await
        .unwrap();
    assert_eq!(items.next().await.unwrap().unwrap(), 1);
    // Both sides wait 300 ms: the reader's own timeout, or the server's deadline error,
    // whichever comes first.
    match items.next().await {
        Some(Err(Error::Timeout { timeout_ms, .. })) => assert_eq!(timeout_ms, 300),
        Some(Err(Error::Remote { code, reason, .. })) => {
            assert_eq!(code, RpcErrorCode::Deadline);
            assert!(reason.contains("within 300 ms"), "{reason}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(items.next().await.is_none());
    // The server's own deadline for the item stops the producer either way.
    within_a_second(&stopped, "the stalled producer was not dropped").await;
    server.deregister().await.unwrap();
    caller.deregister().await.unwrap();
}

#[tokio::test]
async fn a_plain_mqtt_client_follows_a_stream_and_its_window() {
    let app = App::spawn().await;
    let server = counter(&app, Arc::default()).await;
    let mut m = app.mqtt(None).await;
    let res = "iottalk/rpc/tester/res/s1";
    m.subscribe(res, QoS::AtLeastOnce).await;
    let req = format!("iottalk/rpc/{}/req", server.id());
    m.publish_json(
        &req,
        &json!({"id": "s1", "method": "count", "args": 5, "reply_to": res, "stream": {"window": 2}}),
        false,
    )
    .await;
    let next = async |m: &mut Mqtt| m.recv_until("a stream message", |_| true).await.json();
    assert_eq!(next(&mut m).await, json!({"id": "s1", "seq": 0, "item": 0}));
    assert_eq!(next(&mut m).await, json!({"id": "s1", "seq": 1, "item": 1}));
    // The window is full: nothing more until an acknowledgement.
    let early = m.recv_within(Duration::from_millis(300)).await;
    assert!(early.is_none(), "sent past the window: {early:?}");
    m.publish_json(&req, &json!({"id": "s1", "ack": 1}), false)
        .await;
    assert_eq!(next(&mut m).await, json!({"id": "s1", "seq": 2, "item": 2}));
    assert_eq!(next(&mut m).await, json!({"id": "s1", "seq": 3, "item": 3}));
    m.publish_json(&req, &json!({"id": "s1", "ack": 3}), false)
        .await;
    assert_eq!(next(&mut m).await, json!({"id": "s1", "seq": 4, "item": 4}));
    assert_eq!(
        next(&mut m).await,
        json!({"id": "s1", "seq": 5, "state": "end"})
    );

    // Cancelled by the client: nothing after it.
    m.publish_json(
        &req,
        &json!({"id": "s2", "method": "count", "args": 100, "reply_to": res, "stream": {"window": 2}}),
        false,
    )
    .await;
    assert_eq!(next(&mut m).await["seq"], 0);
    assert_eq!(next(&mut m).await["seq"], 1);
    m.publish_json(&req, &json!({"id": "s2", "cancel": true}), false)
        .await;
    m.publish_json(&req, &json!({"id": "s2", "ack": 1}), false)
        .await;
    let after = m.recv_within(Duration::from_millis(300)).await;
    assert!(after.is_none(), "sent after a cancel: {after:?}");
    // A bad window gets a clear error.
    m.publish_json(
        &req,
        &json!({"id": "s3", "method": "count", "args": 1, "reply_to": res, "stream": {"window": 0}}),
        false,
    )
    .await;
    let r = next(&mut m).await;
    assert_eq!(r["code"], "bad_request", "{r}");
    assert!(r["reason"].as_str().unwrap().contains("window"), "{r}");
    server.deregister().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_blocking_api_serves_an_iterator_and_reads_a_stream() {
    let app = App::spawn().await;
    let url = app.csm.clone();
    let pulled = Arc::new(AtomicU64::new(0));
    let seen = pulled.clone();
    let worker = std::thread::spawn(move || {
        let server = patient(Da::builder(url.clone()))
            .model("Dummy_Device")
            .connect_blocking()
            .unwrap();
        server
            .serve_stream("lines", move |n: u64| {
                let pulled = pulled.clone();
                (0..n).map(move |i| {
                    pulled.fetch_add(1, Ordering::SeqCst);
                    if i < 1_000 {
                        Ok(format!("line {i}"))
                    } else {
                        Err("too many lines")
                    }
                })
            })
            .unwrap();
        let caller = patient(Da::builder(url))
            .model("Dummy_Device")
            .connect_blocking()
            .unwrap();
        let target = server.id().to_string();
        let lines: Vec<String> = caller
            .call_stream::<_, String>(&target, "lines", 500)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(lines.len(), 500);
        assert_eq!(lines[499], "line 499");
        let mut failing = caller
            .call_stream::<_, String>(&target, "lines", 2_000)
            .unwrap();
        let taken = failing.by_ref().take_while(Result::is_ok).count();
        assert_eq!(taken, 1_000, "every item before the error");
        assert!(failing.next().is_none(), "the error ended the stream");
        // Dropped after three items: the iterator is no longer pulled.
        let mut endless = caller
            .call_stream::<_, String>(&target, "lines", u64::MAX)
            .unwrap();
        for _ in 0..3 {
            endless.next().unwrap().unwrap();
        }
        drop(endless);
        // Files too.
        let (dir, mine) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        server
            .serve_files_with(dir.path(), da_sdk::ServeFiles::default())
            .unwrap();
        std::fs::write(mine.path().join("a"), b"blocking bytes").unwrap();
        let opts = da_sdk::FileOptions::default;
        let n = caller
            .send_file_with(&target, mine.path().join("a"), "b", opts())
            .unwrap();
        assert_eq!(n, 14);
        caller
            .fetch_file_with(&target, "b", mine.path().join("c"), opts())
            .unwrap();
        assert_eq!(
            std::fs::read(mine.path().join("c")).unwrap(),
            b"blocking bytes"
        );
        server.deregister().unwrap();
        caller.deregister().unwrap();
    });
    tokio::task::spawn_blocking(move || worker.join().unwrap())
        .await
        .unwrap();
    // 500 + 1,001 + what the endless one made ahead of its reader (window 16, one buffered).
    let pulled = seen.load(Ordering::SeqCst);
    assert!(pulled <= 1_501 + 3 + 16 + 2, "pulled {pulled}");
}

#[tokio::test]
async fn dropping_a_fast_stream_mid_window_still_stops_its_producer() {
    let app = App::spawn().await;
    let server = builder(&app).connect().await.unwrap();
    let stopped = Arc::new(AtomicBool::new(false));
    let flag = stopped.clone();
    // Items as fast as the window allows: some are on their way when the reader drops.
    server
        .serve_stream("fast", move |_: Value| {
            let guard = Dropped(flag.clone());
            stream::iter(0u64..).map(move |i| {
                let _ = &guard;
                Ok::<_, String>(i)
            })
        })
        .await
        .unwrap();
    let caller = builder(&app).connect().await.unwrap();
    let target = server.id().to_string();
    let mut items = caller
        .call_stream::<_, u64>(&target, "fast", ())
        .await
        .unwrap();
    for i in 0..9 {
        assert_eq!(items.next().await.unwrap().unwrap(), i);
    }
    drop(items);
    within_a_second(&stopped, "the producer still runs a second after the drop").await;
    server.deregister().await.unwrap();
    caller.deregister().await.unwrap();
}

#[tokio::test]
async fn repeated_requests_and_forged_acks_from_a_plain_client() {
    let app = App::spawn().await;
    let server = counter(&app, Arc::default()).await;
    let mut m = app.mqtt(None).await;
    let res = "iottalk/rpc/tester/res/r1";
    m.subscribe(res, QoS::AtLeastOnce).await;
    let req = format!("iottalk/rpc/{}/req", server.id());
    let ask = json!({"id": "r1", "method": "count", "args": 100, "reply_to": res, "stream": {"window": 2}});
    // The same request twice (as QoS 1 may deliver it): one stream, no error.
    m.publish_json(&req, &ask, false).await;
    m.publish_json(&req, &ask, false).await;
    let mut got = Vec::new();
    while let Some(r) = m.recv_within(Duration::from_millis(500)).await {
        got.push(r.json());
    }
    assert_eq!(
        got,
        vec![
            json!({"id": "r1", "seq": 0, "item": 0}),
            json!({"id": "r1", "seq": 1, "item": 1})
        ]
    );
    // An acknowledgement of items never sent (the largest number there is) ends the stream
    // with a clear error, and the DA goes on serving.
    m.publish_json(&req, &json!({"id": "r1", "ack": u64::MAX}), false)
        .await;
    let r = m.recv_until("the error", |_| true).await.json();
    assert_eq!(r["state"], "error", "{r}");
    assert_eq!(r["code"], "bad_request", "{r}");
    // A late repeat of the request, after its stream ended, does not run it again.
    m.publish_json(&req, &ask, false).await;
    let late = m.recv_within(Duration::from_millis(500)).await;
    assert!(late.is_none(), "the stream ran again: {late:?}");
    let caller = builder(&app).connect().await.unwrap();
    let n: Vec<u64> = caller
        .call_stream::<_, u64>(&server.id().to_string(), "count", 3)
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(n, [0, 1, 2]);
    server.deregister().await.unwrap();
    caller.deregister().await.unwrap();
}

#[tokio::test]
async fn a_server_of_streams_only_serves_again_after_a_controller_restart() {
    let mut app = fixed_app().await;
    let server = counter(&app, Arc::default()).await;
    let caller = builder(&app).connect().await.unwrap();
    let target = server.id().to_string();
    let count = async |caller: &Da| -> Vec<u64> {
        caller
            .call_stream::<_, u64>(&target, "count", 3)
            .await
            .unwrap()
            .map(Result::unwrap)
            .collect()
            .await
    };
    assert_eq!(count(&caller).await, [0, 1, 2]);
    app.stop().await;
    let _app = app.restart().await;
    for da in [&server, &caller] {
        wait(da, "online again", |s| s.is_online() && s.sessions == 2).await;
    }
    assert_eq!(count(&caller).await, [0, 1, 2]);
    server.deregister().await.unwrap();
    caller.deregister().await.unwrap();
}
