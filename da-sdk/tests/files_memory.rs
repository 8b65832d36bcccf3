#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The SDK's memory while a large file goes both ways, alone in its test binary: the figure
//! is this process's resident size, which other tests running beside it would disturb.

mod common;

use common::*;
use da_sdk::{FileOptions, ServeFiles};
use iot_tests::*;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_100_mib_file_goes_both_ways_with_the_sdks_memory_flat() {
    let app = App::spawn().await;
    let (served, local) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let server = builder(&app).connect().await.unwrap();
    server
        .serve_files_with(served.path(), ServeFiles::default())
        .await
        .unwrap();
    let client = builder(&app).connect().await.unwrap();
    let target = server.id().to_string();
    let src = random_file(local.path(), "big.bin", 100 << 20);
    let before = rss_kib();
    let long = FileOptions {
        gap: Some(WAIT),
        ..FileOptions::default()
    };
    client
        .send_file_with(&target, &src, "big.bin", long.clone())
        .await
        .unwrap();
    let back = local.path().join("big-back.bin");
    client
        .fetch_file_with(&target, "big.bin", &back, long)
        .await
        .unwrap();
    let grew = rss_kib().saturating_sub(before);
    same_file(&src, &served.path().join("big.bin"));
    same_file(&src, &back);
    eprintln!("100 MiB both ways: the process grew by {grew} KiB");
    // Both DAs are in this process; a file held whole anywhere would add 100 MiB.
    assert!(grew < 40 << 10, "the process grew by {grew} KiB");
    server.deregister().await.unwrap();
    client.deregister().await.unwrap();
}
