//! File transfer between DAs over request/response: [`Da::serve_files`] serves a directory,
//! [`Da::send_file`] and [`Da::fetch_file`] copy a file to or from it, in chunks, with flow
//! control, resumption after a lost connection, and a SHA-256 of the whole file checked at
//! the end. Files are streamed from and to disk, never held whole in memory, and written
//! under a temporary name then renamed, so nobody sees half a file.
//!
//! Methods served (the wire format, in `docs/sdk.md`):
//! - `files.read` (streamed): `{"name", "offset", "chunk_bytes"}` → `{"size"}`, then
//!   `{"offset", "data"}` (base64) per chunk, then `{"sha256"}`;
//! - `files.begin`: `{"name", "size"}` → `{"offset"}`, where the upload goes on from;
//! - `files.write`: `{"name", "offset", "data"}` → `{"confirmed"}`, the bytes received
//!   without a gap from the start;
//! - `files.commit`: `{"name", "size", "sha256"}` → `{"size"}` once the file is in place.
//!
//! Here: names, options, the public calls. The serving side is `server`, the copying side
//! `client`.

mod client;
mod server;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::da::Da;
use crate::error::Error;

pub(crate) const READ: &str = "files.read";
pub(crate) const BEGIN: &str = "files.begin";
pub(crate) const WRITE: &str = "files.write";
pub(crate) const COMMIT: &str = "files.commit";

/// The default chunk size (64 KiB).
pub const DEFAULT_CHUNK_BYTES: usize = 64 * 1024;
/// The largest chunk (its base64 in a reply stays well under the broker's 1 MiB).
pub const MAX_CHUNK_BYTES: usize = 512 * 1024;
/// The longest remote file name, in bytes (a file system's 255, less room for the
/// temporary name `.<name>.<8 hex>.part`).
pub const MAX_NAME_BYTES: usize = 240;

/// How far a transfer got, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes confirmed (sent and acknowledged, or received and written).
    pub done: u64,
    /// The file's size.
    pub total: u64,
}

/// How [`Da::send_file_with`] and [`Da::fetch_file_with`] copy.
#[derive(Clone)]
pub struct FileOptions {
    /// Bytes per chunk (1 to 512 KiB; default 64 KiB).
    pub chunk_bytes: usize,
    /// Chunks in flight ahead of confirmations (1 to 1024; default 8).
    pub window: u32,
    /// Longest wait for a confirmation or the next chunk (default: the builder's
    /// `call_timeout`); a transfer that waited that long resumes from its last confirmed
    /// chunk.
    pub gap: Option<Duration>,
    /// Times a transfer resumes after a timeout before it fails (default 5).
    pub retries: u32,
    /// Called after every confirmed chunk.
    pub progress: Option<Arc<dyn Fn(Progress) + Send + Sync>>,
}

impl Default for FileOptions {
    fn default() -> Self {
        FileOptions {
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            window: 8,
            gap: None,
            retries: 5,
            progress: None,
        }
    }
}

impl FileOptions {
    /// These options with `f` called after every confirmed chunk.
    pub fn on_progress(mut self, f: impl Fn(Progress) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(f));
        self
    }

    fn report(&self, done: u64, total: u64) {
        if let Some(p) = &self.progress {
            p(Progress { done, total });
        }
    }
}

impl fmt::Debug for FileOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileOptions")
            .field("chunk_bytes", &self.chunk_bytes)
            .field("window", &self.window)
            .field("gap", &self.gap)
            .field("retries", &self.retries)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// How [`Da::serve_files_with`] serves a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeFiles {
    /// The largest file sent or received (default 1 GiB).
    pub max_file_bytes: u64,
    /// Uploads begun and not committed at a time (default 16); an upload idle for 10 minutes
    /// is dropped with its partial file when another one begins.
    pub max_uploads: usize,
}

impl Default for ServeFiles {
    fn default() -> Self {
        ServeFiles {
            max_file_bytes: 1 << 30,
            max_uploads: 16,
        }
    }
}

/// Checks a remote file name: a plain name inside the served directory. Refused: empty,
/// over 240 bytes, `/`, `\`, NUL or other control characters, and a leading `.` (which
/// also refuses `.`, `..` and the transfers' temporary names).
pub fn check_name(name: &str) -> Result<(), String> {
    let why = if name.is_empty() {
        "is empty"
    } else if name.len() > MAX_NAME_BYTES {
        "is over 240 bytes"
    } else if name.starts_with('.') {
        "starts with `.`"
    } else if name.contains(['/', '\\']) {
        "has a path separator: name a file inside the served directory"
    } else if name.chars().any(char::is_control) {
        "has a control character"
    } else {
        return Ok(());
    };
    Err(format!("file name `{}` {why}", name.escape_debug()))
}

/// Where the file `path` is written before it is complete: `.<name>.<tag>.part` beside it;
/// the tag tells transfers of one name apart.
fn partial_path(path: &Path, tag: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{tag}.part"))
}

/// A fresh tag for [`partial_path`].
fn fresh_tag() -> String {
    format!("{:08x}", rand::random::<u32>())
}

#[derive(Debug, Serialize, Deserialize)]
struct ReadArgs {
    name: String,
    #[serde(default)]
    offset: u64,
    #[serde(default = "default_chunk")]
    chunk_bytes: usize,
}

fn default_chunk() -> usize {
    DEFAULT_CHUNK_BYTES
}

#[derive(Debug, Serialize, Deserialize)]
struct BeginArgs {
    name: String,
    size: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct WriteArgs {
    name: String,
    offset: u64,
    /// Base64 (standard, padded).
    data: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct CommitArgs {
    name: String,
    size: u64,
    /// Lower-case hex.
    sha256: String,
}

impl Da {
    /// Serves the files of `dir` to [`Da::send_file`] and [`Da::fetch_file`] callers with
    /// the default limits (1 GiB per file). See [`Da::serve_files_with`].
    pub async fn serve_files(&self, dir: impl AsRef<Path>) -> Result<(), Error> {
        self.serve_files_with(dir, ServeFiles::default()).await
    }

    /// Serves the files of `dir`: callers read and write plain file names inside it, never
    /// elsewhere (no `..`, no absolute path, no symbolic link leading out, names of at most
    /// 240 bytes; see [`check_name`]); files larger than `max_file_bytes` are refused.
    pub async fn serve_files_with(
        &self,
        dir: impl AsRef<Path>,
        options: ServeFiles,
    ) -> Result<(), Error> {
        server::serve(self, dir.as_ref(), options).await
    }

    /// Copies `local` to `remote_name` in the directory `target` serves, with the default
    /// options. See [`Da::send_file_with`].
    pub async fn send_file(
        &self,
        target: &str,
        local: impl AsRef<Path>,
        remote_name: &str,
    ) -> Result<u64, Error> {
        self.send_file_with(target, local, remote_name, FileOptions::default())
            .await
    }

    /// Copies `local` to `remote_name` in the directory `target` serves: chunks with at most
    /// `window` of them unconfirmed, resumed from the last confirmed one after a timeout, the
    /// file's SHA-256 checked by the server before it renames the file into place. Returns the
    /// size. Fails with [`Error::Transfer`] (local file, digest, retries used up) or
    /// [`Error::Remote`] (refused by the server: name, size, digest).
    pub async fn send_file_with(
        &self,
        target: &str,
        local: impl AsRef<Path>,
        remote_name: &str,
        options: FileOptions,
    ) -> Result<u64, Error> {
        client::send(self, target, local.as_ref(), remote_name, &options).await
    }

    /// Copies `remote_name` from the directory `target` serves to `local`, with the default
    /// options. See [`Da::fetch_file_with`].
    pub async fn fetch_file(
        &self,
        target: &str,
        remote_name: &str,
        local: impl AsRef<Path>,
    ) -> Result<u64, Error> {
        self.fetch_file_with(target, remote_name, local, FileOptions::default())
            .await
    }

    /// Copies `remote_name` from the directory `target` serves to `local`: written to
    /// `.<file>.<tag>.part` beside it, resumed from what arrived after a timeout, renamed to
    /// `local` once the SHA-256 of the whole file matches the server's (on a mismatch the
    /// partial file is deleted and the call fails with [`Error::Transfer`]). Returns the size.
    pub async fn fetch_file_with(
        &self,
        target: &str,
        remote_name: &str,
        local: impl AsRef<Path>,
        options: FileOptions,
    ) -> Result<u64, Error> {
        client::fetch(self, target, remote_name, local.as_ref(), &options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_inside_the_directory() {
        for ok in ["a.txt", "report 2026.csv", "ü", &"x".repeat(240)] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../etc/passwd",
            "/etc/passwd",
            "a/b",
            "a\\b",
            ".hidden",
            ".x.part",
            "a\0b",
            "a\nb",
            &"x".repeat(241),
            &"é".repeat(121),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            partial_path(Path::new("/d/a.bin"), "0a1b2c3d"),
            PathBuf::from("/d/.a.bin.0a1b2c3d.part")
        );
    }
}
