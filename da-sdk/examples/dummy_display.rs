//! A DA with one ODF, `Dummy_Control`, printing each value it receives on its own line
//! (the JSON list as sent, e.g. `[4]`). A payload that is not JSON is reported on stderr.
//! Ctrl-C or SIGTERM deregisters it (offline, then DELETE) and exits.
//!
//! ```sh
//! cargo run -p da-sdk --example dummy_display -- --api-url http://127.0.0.1:9992
//! ```

mod common;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use da_sdk::{Da, Retry};
use serde_json::Value;

const USAGE: &str = "usage: dummy_display [--api-url URL] [--id UUID] [--name NAME]";

#[tokio::main]
async fn main() -> ExitCode {
    common::init_logging();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dummy_display: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    // First, so that a signal during startup stops us cleanly.
    let stop = common::terminated();
    let args = common::Args::parse(USAGE, &["name"])?;
    let mut b = Da::builder(&args.api_url)
        .model("Dummy_Device")
        .odf("Dummy_Control", ())
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
    eprintln!("dummy_display: registered {} as {}", st.id, st.name);

    let mut data = da
        .odf::<Value>("Dummy_Control")
        .await
        .map_err(|e| e.to_string())?;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            sample = data.recv() => match sample {
                Some(Ok(v)) => {
                    let mut out = std::io::stdout().lock();
                    // A closed stdout (e.g. `| head`) is no reason to stop displaying.
                    let _ = writeln!(out, "{v}");
                    let _ = out.flush();
                }
                Some(Err(e)) => eprintln!("dummy_display: {e}"),
                None => break,
            },
        }
    }
    da.deregister().await.map_err(|e| e.to_string())?;
    eprintln!("dummy_display: deregistered");
    Ok(())
}
