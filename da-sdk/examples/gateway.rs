//! A gateway fronting simulated lamps: each lamp is a DA of its own (IDF `Dummy_Sensor`
//! pushing a counter, ODF `Dummy_Control` printed as `<lamp> <value>`), kept in an SQLite
//! file with their durable outboxes. The first run creates `--devices` lamps (ids derived
//! from the gateway's `--id`); later runs bring back whatever the file holds, whatever
//! `--devices` says. Ctrl-C or SIGTERM deregisters every lamp but keeps the file.
//!
//! stdout: `online <id> <name>` per lamp once it is online, then the ODF values.
//!
//! ```sh
//! cargo run -p da-sdk --example gateway -- --db /tmp/gw.db --devices 3
//! ```

mod common;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use da_sdk::{DaId, Device, Error, Gateway, OutboxConfig, Retry, SqliteDeviceManager};
use serde_json::Value;

const USAGE: &str =
    "usage: gateway [--api-url URL] [--id UUID] [--db PATH] [--devices N] [--interval-ms MS]";

#[tokio::main]
async fn main() -> ExitCode {
    common::init_logging();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    // First, so that a signal during startup stops us cleanly.
    let stop = common::terminated();
    let args = common::Args::parse(USAGE, &["db", "devices", "interval-ms"])?;
    let gateway_id = args.id.unwrap_or_else(DaId::new_v4);
    let db: PathBuf = args.get("db", PathBuf::from("gateway.db"))?;
    let count: usize = args.get("devices", 2)?;
    let interval = Duration::from_millis(args.get("interval-ms", 1000u64)?);
    let e = |e: Error| e.to_string();

    let path = db.clone();
    let manager = tokio::task::spawn_blocking(move || SqliteDeviceManager::open(path))
        .await
        .map_err(|e| e.to_string())?
        .map_err(e)?;
    let mut gw = Gateway::new(&args.api_url, Arc::new(manager))
        .map_err(e)?
        .configure(|b| {
            b.outbox(OutboxConfig::sqlite(&db, 10_000))
                .retry(Retry::For(Duration::from_secs(30)))
        });
    let report = gw.start().await.map_err(e)?;
    for id in &report.deleted {
        eprintln!("gateway: finished deleting {id}");
    }
    for (id, err) in &report.failed {
        eprintln!("gateway: {id}: {err}");
    }
    if gw.devices().await.map_err(e)?.is_empty() {
        for i in 1..=count {
            let name = format!("lamp-{i}");
            let device = Device::new(Device::derive_id(&gateway_id, &name), "Dummy_Device", &name)
                .and_then(|d| d.with_idf("Dummy_Sensor", ["int"]))
                .and_then(|d| d.with_odf("Dummy_Control", ()))
                .and_then(|d| d.with_tag("gateway", &gateway_id.to_string()))
                .map_err(e)?;
            gw.add(device).await.map_err(e)?;
        }
    }

    let mut tasks = Vec::new();
    for stored in gw.devices().await.map_err(e)? {
        let Some(da) = gw.da(&stored.device.id()).cloned() else {
            continue;
        };
        let name = stored.device.name().to_owned();
        println!("online {} {name}", da.id());
        let printer = da
            .on_odf::<Value, _>("Dummy_Control", {
                let name = name.clone();
                move |sample| match sample {
                    Ok(v) => println!("{name} {v}"),
                    Err(err) => eprintln!("gateway: {name}: {err}"),
                }
            })
            .await
            .map_err(e)?;
        tasks.push(printer);
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            let mut n: u64 = 1;
            loop {
                tick.tick().await;
                match da.push("Dummy_Sensor", n).await {
                    Ok(()) => n += 1,
                    Err(Error::NotConnected(_)) => {}
                    Err(Error::Closed) => return,
                    Err(err) => eprintln!("gateway: {name}: push: {err}"),
                }
            }
        }));
    }

    stop.await;
    for t in &tasks {
        t.abort();
    }
    gw.deregister_all().await.map_err(e)?;
    eprintln!(
        "gateway: every device deregistered; the store is kept in {}",
        db.display()
    );
    Ok(())
}
