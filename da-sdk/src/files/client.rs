//! The copying side of file transfer: [`crate::Da::send_file`] (begin, chunks with at most a
//! window of them unconfirmed, commit with the file's SHA-256) and [`crate::Da::fetch_file`]
//! (a streamed read into `.<file>.<tag>.part`, digest checked, renamed). Both resume from the last
//! confirmed byte after a timeout, up to `retries` times.

use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use iot_proto::rpc::RpcErrorCode;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::server::sha256_of;
use super::{
    check_name, fresh_tag, partial_path, BeginArgs, CommitArgs, FileOptions, ReadArgs, WriteArgs,
    BEGIN, COMMIT, MAX_CHUNK_BYTES, READ, WRITE,
};
use crate::da::Da;
use crate::error::Error;
use crate::streams::StreamOptions;

/// The longest a commit may take (the server reads the whole file to check its digest): the
/// server's own limit for a request.
const COMMIT_WAIT: Duration = Duration::from_secs(60);

/// Errors after which a transfer resumes: nothing came in time, or the server was busy.
fn resumable(e: &Error) -> bool {
    matches!(
        e,
        Error::Timeout { .. }
            | Error::Remote {
                code: RpcErrorCode::Deadline | RpcErrorCode::Busy,
                ..
            }
    )
}

fn transfer(name: &str, reason: impl std::fmt::Display) -> Error {
    Error::Transfer {
        name: name.to_owned(),
        reason: reason.to_string(),
    }
}

/// Waits a little longer after each failed attempt (at most 2 s).
async fn pause(attempt: u32) {
    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt.min(10)))).await;
}

pub(super) async fn send(
    da: &Da,
    target: &str,
    local: &Path,
    name: &str,
    opts: &FileOptions,
) -> Result<u64, Error> {
    check_name(name).map_err(Error::InvalidName)?;
    let meta = tokio::fs::metadata(local)
        .await
        .map_err(|e| transfer(name, format!("cannot read `{}`: {e}", local.display())))?;
    if !meta.is_file() {
        return Err(transfer(
            name,
            format!("`{}` is not a regular file", local.display()),
        ));
    }
    let size = meta.len();
    let path = local.to_owned();
    let digest = tokio::task::spawn_blocking(move || sha256_of(&path))
        .await
        .map_err(|e| transfer(name, e))?
        .map_err(|e| transfer(name, format!("cannot read `{}`: {e}", local.display())))?;
    let mut failures = 0;
    loop {
        match send_from(da, target, local, name, size, opts).await {
            Ok(()) => break,
            Err(e) if resumable(&e) && failures < opts.retries => {
                failures += 1;
                tracing::info!(name, error = %e, failures, "file upload resumes");
                pause(failures).await;
            }
            Err(e) if resumable(&e) => {
                return Err(transfer(
                    name,
                    format!("gave up after {failures} resumptions: {e}"),
                ))
            }
            Err(e) => return Err(e),
        }
    }
    let args = CommitArgs {
        name: name.to_owned(),
        size,
        sha256: digest,
    };
    let wait = gap(da, opts).max(COMMIT_WAIT);
    // A commit whose reply was lost succeeds again when repeated.
    loop {
        match da
            .call_within::<_, Value>(target, COMMIT, &args, wait)
            .await
        {
            Ok(_) => return Ok(size),
            Err(e) if matches!(e, Error::Timeout { .. }) && failures < opts.retries => {
                failures += 1;
                tracing::info!(name, error = %e, failures, "file commit repeated");
                pause(failures).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn gap(da: &Da, opts: &FileOptions) -> Duration {
    opts.gap.unwrap_or(da.options().call_timeout)
}

/// One attempt: begin (or resume) and send every chunk from where the server is.
async fn send_from(
    da: &Da,
    target: &str,
    local: &Path,
    name: &str,
    size: u64,
    opts: &FileOptions,
) -> Result<(), Error> {
    let gap = gap(da, opts);
    let begin = BeginArgs {
        name: name.to_owned(),
        size,
    };
    let r: Value = da.call_within(target, BEGIN, begin, gap).await?;
    let offset = r["offset"]
        .as_u64()
        .filter(|o| *o <= size)
        .ok_or_else(|| transfer(name, format!("the server answered files.begin with {r}")))?;
    opts.report(offset, size);
    let mut file = tokio::fs::File::open(local)
        .await
        .map_err(|e| transfer(name, format!("cannot read `{}`: {e}", local.display())))?;
    file.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(|e| transfer(name, e))?;
    let chunk = opts.chunk_bytes.clamp(1, MAX_CHUNK_BYTES);
    let window = opts.window.clamp(1, 1024) as usize;
    let mut next = offset;
    let mut confirmed = offset;
    let mut inflight = FuturesUnordered::new();
    loop {
        while inflight.len() < window && next < size {
            let n = usize::try_from(size - next).map_or(chunk, |left| left.min(chunk));
            let mut buf = vec![0; n];
            file.read_exact(&mut buf)
                .await
                .map_err(|e| transfer(name, format!("cannot read `{}`: {e}", local.display())))?;
            let args = WriteArgs {
                name: name.to_owned(),
                offset: next,
                data: B64.encode(&buf),
            };
            inflight.push(da.call_within::<_, Value>(target, WRITE, args, gap));
            next += n as u64;
        }
        match inflight.next().await {
            None => return Ok(()),
            Some(Ok(v)) => {
                if let Some(c) = v["confirmed"].as_u64().filter(|c| *c > confirmed) {
                    confirmed = c.min(size);
                    opts.report(confirmed, size);
                }
            }
            Some(Err(e)) => return Err(e),
        }
    }
}

pub(super) async fn fetch(
    da: &Da,
    target: &str,
    name: &str,
    local: &Path,
    opts: &FileOptions,
) -> Result<u64, Error> {
    check_name(name).map_err(Error::InvalidName)?;
    let partial = partial_path(local, &fresh_tag());
    // A new file of our own, never one found in place (`create_new` follows no link).
    let created = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&partial)
        .await;
    let mut out = Fetched {
        file: created
            .map_err(|e| transfer(name, format!("cannot write `{}`: {e}", partial.display())))?,
        hasher: Sha256::new(),
        written: 0,
        size: None,
        digest: None,
    };
    let r = fetch_into(da, target, name, opts, &mut out).await;
    let r = match r {
        Ok(()) => out.finish(name, &partial, local).await,
        Err(e) => Err(e),
    };
    if r.is_err() {
        let _ = tokio::fs::remove_file(&partial).await;
    }
    r
}

/// A download so far.
struct Fetched {
    file: tokio::fs::File,
    hasher: Sha256,
    written: u64,
    size: Option<u64>,
    digest: Option<String>,
}

impl Fetched {
    /// One item of `files.read`.
    async fn take(&mut self, name: &str, v: &Value, opts: &FileOptions) -> Result<(), Error> {
        let bad = || transfer(name, "the server sent an item that is not a file chunk");
        if let Some(size) = v.get("size").and_then(Value::as_u64) {
            if self.written > size {
                return Err(transfer(name, "the file shrank on the server"));
            }
            self.size = Some(size);
        } else if let Some(d) = v.get("sha256").and_then(Value::as_str) {
            self.digest = Some(d.to_owned());
        } else {
            let (Some(offset), Some(data)) = (v["offset"].as_u64(), v["data"].as_str()) else {
                return Err(bad());
            };
            let size = self.size.ok_or_else(bad)?;
            let bytes = B64.decode(data.as_bytes()).map_err(|_| bad())?;
            if offset != self.written || offset + bytes.len() as u64 > size {
                return Err(transfer(
                    name,
                    format!(
                        "the server sent bytes from {offset}, expected {}",
                        self.written
                    ),
                ));
            }
            self.file
                .write_all(&bytes)
                .await
                .map_err(|e| transfer(name, format!("cannot write: {e}")))?;
            self.hasher.update(&bytes);
            self.written += bytes.len() as u64;
            opts.report(self.written, size);
        }
        Ok(())
    }

    /// Checks the whole file and puts it in place.
    async fn finish(mut self, name: &str, partial: &Path, local: &Path) -> Result<u64, Error> {
        self.file
            .flush()
            .await
            .and(self.file.sync_all().await)
            .map_err(|e| transfer(name, format!("cannot write: {e}")))?;
        let size = self.size.unwrap_or(0);
        if self.written != size {
            return Err(transfer(
                name,
                format!("the stream ended after {} of {size} bytes", self.written),
            ));
        }
        let mine = hex::encode(self.hasher.finalize());
        match self.digest {
            Some(d) if d.eq_ignore_ascii_case(&mine) => {}
            other => {
                return Err(transfer(
                    name,
                    format!(
                        "SHA-256 mismatch: received {mine}, the server has {}; the partial file was deleted",
                        other.as_deref().unwrap_or("none")
                    ),
                ))
            }
        }
        tokio::fs::rename(partial, local).await.map_err(|e| {
            transfer(
                name,
                format!("cannot put `{}` in place: {e}", local.display()),
            )
        })?;
        Ok(size)
    }
}

/// Reads the file into `out`, resuming from what arrived after a timeout.
async fn fetch_into(
    da: &Da,
    target: &str,
    name: &str,
    opts: &FileOptions,
    out: &mut Fetched,
) -> Result<(), Error> {
    let options = StreamOptions {
        window: opts.window,
        gap: Some(gap(da, opts)),
    };
    let mut failures = 0;
    loop {
        let args = ReadArgs {
            name: name.to_owned(),
            offset: out.written,
            chunk_bytes: opts.chunk_bytes,
        };
        let mut items = da
            .call_stream_with::<_, Value>(target, READ, args, options)
            .await?;
        let failed = loop {
            match items.next().await {
                Some(Ok(v)) => out.take(name, &v, opts).await?,
                Some(Err(e)) => break e,
                None => return Ok(()),
            }
        };
        if !resumable(&failed) {
            return Err(failed);
        }
        if failures >= opts.retries {
            return Err(transfer(
                name,
                format!("gave up after {failures} resumptions: {failed}"),
            ));
        }
        failures += 1;
        tracing::info!(name, error = %failed, failures, "file download resumes");
        pause(failures).await;
    }
}
