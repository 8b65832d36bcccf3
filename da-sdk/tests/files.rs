#![allow(clippy::unwrap_used, clippy::expect_used)]
//! File transfer between DAs through the real controller's broker: round trips checked byte
//! for byte, memory that stays flat for a large file, resumption across a broker restart,
//! names that try to leave the served directory, size limits, digest mismatches.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use da_sdk::{Da, Error, FileOptions, Progress, RpcErrorCode, ServeFiles};
use futures::stream;
use iot_tests::*;
use serde_json::{json, Value};

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Options that record every progress report.
fn recorded() -> (FileOptions, Arc<Mutex<Vec<Progress>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let opts = FileOptions::default().on_progress(move |p| s.lock().unwrap().push(p));
    (opts, seen)
}

async fn pair(app: &App, served: &Path, limits: ServeFiles) -> (Da, Da) {
    let server = builder(app).connect().await.unwrap();
    server.serve_files_with(served, limits).await.unwrap();
    let client = builder(app).connect().await.unwrap();
    (server, client)
}

#[tokio::test]
async fn files_go_both_ways_checked_with_progress_and_nothing_half_written_left() {
    let app = App::spawn().await;
    let (served, local) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (server, client) = pair(&app, served.path(), ServeFiles::default()).await;
    let target = server.id().to_string();
    // Not a multiple of the chunk size, and an empty file.
    let src = random_file(local.path(), "a.bin", 3 * 65_536 + 1_234);
    let (opts, seen) = recorded();
    let n = client
        .send_file_with(&target, &src, "report.bin", opts)
        .await
        .unwrap();
    assert_eq!(n, 3 * 65_536 + 1_234);
    same_file(&src, &served.path().join("report.bin"));
    let seen = seen.lock().unwrap().clone();
    assert!(seen.windows(2).all(|w| w[0].done <= w[1].done), "{seen:?}");
    assert_eq!(seen.last(), Some(&Progress { done: n, total: n }));

    let back = local.path().join("back.bin");
    let (opts, seen) = recorded();
    client
        .fetch_file_with(&target, "report.bin", &back, opts)
        .await
        .unwrap();
    same_file(&src, &back);
    assert_eq!(
        seen.lock().unwrap().last(),
        Some(&Progress { done: n, total: n })
    );

    let empty = local.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    assert_eq!(client.send_file(&target, &empty, "empty").await.unwrap(), 0);
    let empty_back = local.path().join("empty-back");
    assert_eq!(
        client
            .fetch_file(&target, "empty", &empty_back)
            .await
            .unwrap(),
        0
    );
    assert_eq!(std::fs::read(&empty_back).unwrap(), b"");
    // No temporary file remains on either side.
    assert_eq!(names(served.path()), ["empty", "report.bin"]);
    assert_eq!(
        names(local.path()),
        ["a.bin", "back.bin", "empty", "empty-back"]
    );
    server.deregister().await.unwrap();
    client.deregister().await.unwrap();
}

/// Runs `transfer` and restarts the controller (its embedded broker) once a quarter of the
/// file is confirmed; returns the controller and the progress seen after the restart.
async fn across_a_restart<F, Fut>(app: App, transfer: F) -> (App, Vec<Progress>)
where
    F: FnOnce(FileOptions) -> Fut,
    Fut: std::future::Future<Output = Result<u64, Error>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = Mutex::new(Some(tx));
    let after = Arc::new(Mutex::new(None::<Vec<Progress>>));
    let a = after.clone();
    let opts = FileOptions {
        chunk_bytes: 16 * 1024,
        window: 2,
        gap: Some(Duration::from_secs(2)),
        retries: 30,
        progress: None,
    }
    .on_progress(move |p| {
        if let Some(v) = a.lock().unwrap().as_mut() {
            v.push(p);
        }
        if p.done >= p.total / 4 {
            if let Some(tx) = tx.lock().unwrap().take() {
                let _ = tx.send(());
            }
        }
    });
    let job = tokio::spawn(transfer(opts));
    rx.await.unwrap();
    let mut app = app;
    app.stop().await;
    *after.lock().unwrap() = Some(Vec::new());
    let app = app.restart().await;
    job.await.unwrap().unwrap();
    let seen = after.lock().unwrap().take().unwrap();
    (app, seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn transfers_cut_by_a_broker_restart_resume_where_they_were() {
    let app = fixed_app().await;
    let (served, local) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (server, client) = pair(&app, served.path(), ServeFiles::default()).await;
    let target = server.id().to_string();
    let size = 8 << 20;
    let src = random_file(local.path(), "up.bin", size);

    let (c, t, s) = (client.clone(), target.clone(), src.clone());
    let (app, seen) = across_a_restart(app, move |o| async move {
        c.send_file_with(&t, &s, "up.bin", o).await
    })
    .await;
    same_file(&src, &served.path().join("up.bin"));
    let first = seen.first().expect("progress after the restart");
    assert!(
        first.done >= size as u64 / 4,
        "the upload started over: {first:?}"
    );

    let back = local.path().join("down.bin");
    let (c, t, b) = (client.clone(), target.clone(), back.clone());
    let (_app, seen) = across_a_restart(app, move |o| async move {
        c.fetch_file_with(&t, "up.bin", &b, o).await
    })
    .await;
    same_file(&src, &back);
    let first = seen.first().expect("progress after the restart");
    assert!(
        first.done > size as u64 / 4,
        "the download started over: {first:?}"
    );
    server.deregister().await.unwrap();
    client.deregister().await.unwrap();
}

#[tokio::test]
async fn names_that_leave_the_directory_and_files_over_the_limit_are_refused() {
    let app = App::spawn().await;
    let root = tempfile::tempdir().unwrap();
    let served = root.path().join("served");
    std::fs::create_dir(&served).unwrap();
    std::fs::write(root.path().join("secret"), b"outside").unwrap();
    std::os::unix::fs::symlink(root.path().join("secret"), served.join("link")).unwrap();
    std::fs::write(served.join("inside"), b"in").unwrap();
    std::os::unix::fs::symlink(served.join("inside"), served.join("alias")).unwrap();
    let limits = ServeFiles {
        max_file_bytes: 1_000,
        ..ServeFiles::default()
    };
    let (server, client) = pair(&app, &served, limits).await;
    let target = server.id().to_string();

    let long = "x".repeat(256);
    let bad_names = [
        "../secret",
        "/etc/passwd",
        "..",
        "a/b",
        ".inside.part",
        "a\0b",
        long.as_str(),
    ];
    // Straight to the server, as a peer that skips the SDK's own checks would.
    for name in bad_names.iter().chain(&["link"]) {
        let read = client
            .call_stream::<_, Value>(&target, "files.read", json!({ "name": name }))
            .await
            .unwrap();
        let items: Vec<_> = futures::StreamExt::collect(read).await;
        match items.as_slice() {
            [Err(Error::Remote { code, reason, .. })] => {
                assert_eq!(*code, RpcErrorCode::Handler, "{name:?}: {reason}");
            }
            other => panic!("{name:?} read: {other:?}"),
        }
    }
    for name in bad_names {
        let err = client
            .call::<_, Value>(&target, "files.begin", json!({ "name": name, "size": 2 }))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Remote { .. }), "{name:?} begin: {err}");
        // The SDK refuses them before sending.
        let err = client
            .send_file(&target, root.path().join("secret"), name)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidName(_)), "{name:?}: {err}");
    }
    // A link that stays inside is an ordinary name.
    let got = root.path().join("got");
    client.fetch_file(&target, "alias", &got).await.unwrap();
    assert_eq!(std::fs::read(&got).unwrap(), b"in");
    // Writing a name that is a link leading out replaces the link, never the file outside.
    let two = root.path().join("two");
    std::fs::write(&two, b"22").unwrap();
    client.send_file(&target, &two, "link").await.unwrap();
    assert_eq!(
        std::fs::read(root.path().join("secret")).unwrap(),
        b"outside"
    );
    assert_eq!(std::fs::read(served.join("link")).unwrap(), b"22");

    // Over max_file_bytes, both ways.
    let big = random_file(root.path(), "big", 1_001);
    let err = client.send_file(&target, &big, "big").await.unwrap_err();
    assert!(
        matches!(&err, Error::Remote { reason, .. } if reason.contains("max_file_bytes")),
        "{err}"
    );
    std::fs::copy(&big, served.join("big")).unwrap();
    let err = client
        .fetch_file(&target, "big", root.path().join("big-back"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Remote { reason, .. } if reason.contains("max_file_bytes")),
        "{err}"
    );
    assert!(!root.path().join("big-back").exists());
    assert!(!root.path().join(".big-back.part").exists());
    // Chunks for no upload, or past the declared size.
    let err = client
        .call::<_, Value>(
            &target,
            "files.write",
            json!({"name": "n", "offset": 0, "data": "AA=="}),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("files.begin first"), "{err}");
    client
        .call::<_, Value>(&target, "files.begin", json!({"name": "n", "size": 1}))
        .await
        .unwrap();
    let err = client
        .call::<_, Value>(
            &target,
            "files.write",
            json!({"name": "n", "offset": 0, "data": "AAA="}),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("past the declared size"), "{err}");
    let left = names(&served);
    assert_eq!(left[1..], ["alias", "big", "inside", "link"]);
    // The upload begun is in a temporary file of its own: `.n.<8 hex>.part`.
    let tag = left[0]
        .strip_prefix(".n.")
        .and_then(|t| t.strip_suffix(".part"));
    assert!(tag.is_some_and(|t| t.len() == 8), "{left:?}");
    server.deregister().await.unwrap();
    client.deregister().await.unwrap();
}

#[tokio::test]
async fn a_digest_mismatch_deletes_the_partial_file_on_either_side() {
    let app = App::spawn().await;
    let (served, local) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (server, client) = pair(&app, served.path(), ServeFiles::default()).await;
    let target = server.id().to_string();
    // An upload whose commit names another digest: refused, nothing left.
    client
        .call::<_, Value>(&target, "files.begin", json!({"name": "f", "size": 1}))
        .await
        .unwrap();
    client
        .call::<_, Value>(
            &target,
            "files.write",
            json!({"name": "f", "offset": 0, "data": "eA=="}),
        )
        .await
        .unwrap();
    let err = client
        .call::<_, Value>(
            &target,
            "files.commit",
            json!({"name": "f", "size": 1, "sha256": "00".repeat(32)}),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("SHA-256 mismatch"), "{err}");
    assert!(
        names(served.path()).is_empty(),
        "{:?}",
        names(served.path())
    );

    // A server whose digest does not match what it sent: the download fails, nothing left.
    let liar = builder(&app).connect().await.unwrap();
    liar.serve_stream("files.read", |_: Value| {
        stream::iter([
            Ok::<_, String>(json!({"size": 2})),
            Ok(json!({"offset": 0, "data": "aGk="})),
            Ok(json!({"sha256": "00".repeat(32)})),
        ])
    })
    .await
    .unwrap();
    let out = local.path().join("hi");
    let err = client
        .fetch_file(&liar.id().to_string(), "hi", &out)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Transfer { reason, .. } if reason.contains("SHA-256 mismatch")),
        "{err}"
    );
    assert!(names(local.path()).is_empty(), "{:?}", names(local.path()));
    for da in [server, client, liar] {
        da.deregister().await.unwrap();
    }
}

#[tokio::test]
async fn iotctl_da_calls_streams_and_copies_files() {
    let app = App::spawn().await;
    let (served, local) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (server, client) = pair(&app, served.path(), ServeFiles::default()).await;
    client.deregister().await.unwrap();
    server
        .serve("echo", |v: Value| async move { Ok::<_, String>(v) })
        .await
        .unwrap();
    server
        .serve_stream("count", |n: u64| stream::iter((0..n).map(Ok::<_, String>)))
        .await
        .unwrap();
    let id = server.id().to_string();
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };

    let o = app
        .iotctl(&["da", "call", &id, "echo", r#"{"a": [1, "x"]}"#], None)
        .await;
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "{\"a\":[1,\"x\"]}\n");
    // The operator's DA coming and going is not printed.
    assert_eq!(String::from_utf8_lossy(&o.stderr), "");
    let o = app.iotctl(&["da", "call", &id, "count", "3"], None).await;
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "0\n1\n2\n");
    let o = app.iotctl(&["da", "call", &id, "nope"], None).await;
    assert!(!o.status.success());
    assert!(text(&o).contains("unknown_method"), "{}", text(&o));
    let o = app
        .iotctl(&["da", "call", &id, "echo", "{not json"], None)
        .await;
    assert!(!o.status.success());
    assert!(text(&o).contains("ARGS is not JSON"), "{}", text(&o));

    let src = random_file(local.path(), "src.bin", 200_000);
    let src_s = src.to_str().unwrap();
    let o = app
        .iotctl(&["da", "send-file", &id, src_s, "copy.bin"], None)
        .await;
    assert!(o.status.success(), "{}", text(&o));
    same_file(&src, &served.path().join("copy.bin"));
    let back = local.path().join("back.bin");
    let o = app
        .iotctl(
            &["da", "fetch-file", &id, "copy.bin", back.to_str().unwrap()],
            None,
        )
        .await;
    assert!(o.status.success(), "{}", text(&o));
    same_file(&src, &back);
    let o = app
        .iotctl(&["da", "send-file", &id, src_s, "../escape.bin"], None)
        .await;
    assert!(!o.status.success());
    assert!(text(&o).contains("invalid name"), "{}", text(&o));
    assert!(!served.path().parent().unwrap().join("escape.bin").exists());
    server.deregister().await.unwrap();
}
