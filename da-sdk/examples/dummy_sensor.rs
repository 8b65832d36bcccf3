//! A DA with one IDF, `Dummy_Sensor`, pushing a counter: 1, 2, 3, ... every interval.
//! Each value pushed is printed on stdout; the counter only advances once a graph links the
//! IDF. Ctrl-C or SIGTERM deregisters it (offline, then DELETE) and exits.
//!
//! ```sh
//! cargo run -p iotctl -- start &
//! cargo run -p da-sdk --example dummy_sensor -- --api-url http://127.0.0.1:9992
//! ```

mod common;

use std::process::ExitCode;
use std::time::Duration;

use da_sdk::{Da, Error, Retry};

const USAGE: &str =
    "usage: dummy_sensor [--api-url URL] [--id UUID] [--interval-ms MS] [--name NAME]";

#[tokio::main]
async fn main() -> ExitCode {
    common::init_logging();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dummy_sensor: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    // First, so that a signal during startup stops us cleanly.
    let stop = common::terminated();
    let args = common::Args::parse(USAGE, &["interval-ms", "name"])?;
    let interval = Duration::from_millis(args.get("interval-ms", 1000u64)?);
    let mut b = Da::builder(&args.api_url)
        .model("Dummy_Device")
        .idf("Dummy_Sensor", ["int"])
        .retry(Retry::For(Duration::from_secs(30)));
    if let Some(id) = args.id {
        b = b.id(id);
    }
    if let Some(name) = args
        .get::<String>("name", String::new())
        .ok()
        .filter(|n| !n.is_empty())
    {
        b = b.name(name);
    }
    let da = b.connect().await.map_err(|e| e.to_string())?;
    let st = da.status();
    eprintln!("dummy_sensor: registered {} as {}", st.id, st.name);

    let mut tick = tokio::time::interval(interval);
    let mut counter: u64 = 1;
    let mut waiting_said = false;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = tick.tick() => match da.push("Dummy_Sensor", counter).await {
                Ok(()) => {
                    println!("{counter}");
                    counter += 1;
                    waiting_said = false;
                }
                Err(Error::NotConnected(_)) => {
                    if !waiting_said {
                        eprintln!("dummy_sensor: waiting for a graph to link Dummy_Sensor");
                        waiting_said = true;
                    }
                }
                Err(e) => eprintln!("dummy_sensor: push: {e}"),
            },
        }
    }
    da.deregister().await.map_err(|e| e.to_string())?;
    eprintln!("dummy_sensor: deregistered");
    Ok(())
}
