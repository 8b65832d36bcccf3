//! `iotctl da ...`: the operator's DA: call a method of any DA or app (each streamed item
//! printed as it arrives), send a file to or fetch one from a DA serving files. It registers a
//! short-lived DA of its own (model `iotctl`) at the controller, does the one thing, and
//! deregisters (docs/sdk.md).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use da_sdk::{Da, FileOptions, StreamOptions};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::bench_cmd::{resolve, TargetArgs};
use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum DaCommand {
    /// Call METHOD on TARGET (a DA id or an app's name) with ARGS (JSON, default null) and
    /// print the reply, or each item of a streamed reply as it arrives, one JSON per line.
    Call {
        target: String,
        method: String,
        args: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Send the local file LOCAL to TARGET's served directory as REMOTE (default: LOCAL's
    /// file name), with a progress bar.
    SendFile {
        target: String,
        local: PathBuf,
        remote: Option<String>,
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        transfer: Transfer,
    },
    /// Fetch REMOTE from TARGET's served directory to LOCAL (default: REMOTE in the current
    /// directory), with a progress bar.
    FetchFile {
        target: String,
        remote: String,
        local: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        transfer: Transfer,
    },
}

#[derive(Debug, Args)]
pub struct Common {
    /// Longest wait for a reply, or between two items (seconds).
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    timeout: f64,
    /// Base URL of the controller's HTTP API (default: the running controller's).
    #[arg(long, value_name = "URL")]
    csm: Option<String>,
}

#[derive(Debug, Args)]
pub struct Transfer {
    /// Bytes per chunk (1 to 524288).
    #[arg(long, default_value_t = da_sdk::files::DEFAULT_CHUNK_BYTES)]
    chunk_bytes: usize,
    /// Times a transfer resumes after a timeout before it fails.
    #[arg(long, default_value_t = 5)]
    retries: u32,
}

fn timeout(c: &Common) -> Result<Duration> {
    Duration::try_from_secs_f64(c.timeout)
        .ok()
        .filter(|d| !d.is_zero())
        .context("--timeout must be a positive number of seconds")
}

/// Registers the operator's DA.
async fn connect(cfg: &Config, c: &Common, wait: Duration) -> Result<Da> {
    let target = resolve(
        cfg,
        &TargetArgs {
            csm: c.csm.clone(),
            ..TargetArgs::default()
        },
    )?;
    Da::builder(&target.csm)
        .model("iotctl")
        .name(format!("iotctl-{}", std::process::id()))
        .call_timeout(wait)
        .connect()
        .await
        .with_context(|| format!("cannot register at {}", target.csm))
}

pub async fn run(cfg: &Config, command: DaCommand) -> Result<ExitCode> {
    let common = match &command {
        DaCommand::Call { common, .. }
        | DaCommand::SendFile { common, .. }
        | DaCommand::FetchFile { common, .. } => common,
    };
    let wait = timeout(common)?;
    let da = connect(cfg, common, wait).await?;
    let r = act(&da, command, wait).await;
    // Best effort: an operator's DA is not worth a failure of its own.
    let _ = da.deregister().await;
    r
}

async fn act(da: &Da, command: DaCommand, wait: Duration) -> Result<ExitCode> {
    match command {
        DaCommand::Call {
            target,
            method,
            args,
            ..
        } => {
            let args: Value = match args {
                Some(a) => serde_json::from_str(&a).context("ARGS is not JSON")?,
                None => Value::Null,
            };
            // A streamed call: a method answered once is a stream of its one reply.
            let options = StreamOptions {
                gap: Some(wait),
                ..StreamOptions::default()
            };
            let mut items = da
                .call_stream_with::<_, Value>(&target, &method, args, options)
                .await?;
            while let Some(item) = items.next().await {
                println!("{}", item?);
            }
            Ok(ExitCode::SUCCESS)
        }
        DaCommand::SendFile {
            target,
            local,
            remote,
            transfer,
            ..
        } => {
            let remote = match remote {
                Some(r) => r,
                None => file_name(&local)?,
            };
            let (opts, bar) = options(&transfer, wait);
            let n = da.send_file_with(&target, &local, &remote, opts).await;
            bar.finish_and_clear();
            let n = n?;
            eprintln!(
                "sent {} ({n} bytes) to {target} as {remote}",
                local.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        DaCommand::FetchFile {
            target,
            remote,
            local,
            transfer,
            ..
        } => {
            let local = local.unwrap_or_else(|| PathBuf::from(&remote));
            let (opts, bar) = options(&transfer, wait);
            let n = da.fetch_file_with(&target, &remote, &local, opts).await;
            bar.finish_and_clear();
            let n = n?;
            eprintln!(
                "fetched {remote} ({n} bytes) from {target} to {}",
                local.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn file_name(p: &Path) -> Result<String> {
    match p.file_name().and_then(|n| n.to_str()) {
        Some(n) => Ok(n.to_owned()),
        None => bail!("{} has no file name: give REMOTE", p.display()),
    }
}

/// Transfer options with a progress bar on stderr (drawn only on a terminal).
fn options(t: &Transfer, wait: Duration) -> (FileOptions, ProgressBar) {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let b = bar.clone();
    let opts = FileOptions {
        chunk_bytes: t.chunk_bytes,
        gap: Some(wait),
        retries: t.retries,
        ..FileOptions::default()
    }
    .on_progress(move |p| {
        b.set_length(p.total);
        b.set_position(p.done);
    });
    (opts, bar)
}
