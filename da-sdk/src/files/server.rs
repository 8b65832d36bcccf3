//! The serving side of file transfer ([`crate::Da::serve_files`]): the four methods, each
//! checking the name it is given against the served directory. Reads stream the file from
//! disk; uploads are written at their offsets into `.<name>.part`, which is hashed and
//! renamed into place on commit.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use futures::{stream, Stream};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{
    check_name, partial_path, BeginArgs, CommitArgs, ReadArgs, ServeFiles, WriteArgs, BEGIN,
    COMMIT, MAX_CHUNK_BYTES, READ, WRITE,
};
use crate::da::Da;
use crate::error::Error;

/// How long an upload may sit without a chunk before a new one may drop it.
const UPLOAD_IDLE: Duration = Duration::from_secs(600);

/// One upload in progress.
struct Upload {
    size: u64,
    partial: PathBuf,
    /// Bytes `0..confirmed` were written.
    confirmed: u64,
    /// Ranges written past a gap (start to end).
    ahead: BTreeMap<u64, u64>,
    touched: Instant,
}

struct Server {
    root: PathBuf,
    options: ServeFiles,
    uploads: Mutex<HashMap<String, Upload>>,
}

pub(super) async fn serve(da: &Da, dir: &Path, options: ServeFiles) -> Result<(), Error> {
    let config = |why: String| Error::Config(format!("cannot serve `{}`: {why}", dir.display()));
    let root = tokio::fs::canonicalize(dir)
        .await
        .map_err(|e| config(e.to_string()))?;
    if !tokio::fs::metadata(&root)
        .await
        .map_err(|e| config(e.to_string()))?
        .is_dir()
    {
        return Err(config("not a directory".into()));
    }
    let srv = Arc::new(Server {
        root,
        options,
        uploads: Mutex::new(HashMap::new()),
    });
    let s = srv.clone();
    da.serve_stream(READ, move |a: ReadArgs| read(s.clone(), a))
        .await?;
    let s = srv.clone();
    da.serve(BEGIN, move |a: BeginArgs| {
        let s = s.clone();
        async move { s.begin(a).await }
    })
    .await?;
    let s = srv.clone();
    da.serve(WRITE, move |a: WriteArgs| {
        let s = s.clone();
        async move { s.write(a).await }
    })
    .await?;
    let s = srv;
    da.serve(COMMIT, move |a: CommitArgs| {
        let s = s.clone();
        async move { s.commit(a).await }
    })
    .await
}

/// The state of a read, from one chunk to the next.
enum Reading {
    Start(Arc<Server>, ReadArgs),
    Data {
        file: tokio::fs::File,
        hasher: Sha256,
        pos: u64,
        size: u64,
        chunk: usize,
    },
    Done,
}

/// `files.read`: the size, the chunks from `offset`, the SHA-256 of the whole file.
fn read(srv: Arc<Server>, a: ReadArgs) -> impl Stream<Item = Result<Value, String>> {
    stream::unfold(Reading::Start(srv, a), |state| async move {
        match state {
            Reading::Start(srv, a) => Some(match srv.open(&a).await {
                Ok((file, hasher, size)) => (
                    Ok(json!({ "size": size })),
                    Reading::Data {
                        file,
                        hasher,
                        pos: a.offset,
                        size,
                        chunk: a.chunk_bytes.clamp(1, MAX_CHUNK_BYTES),
                    },
                ),
                Err(e) => (Err(e), Reading::Done),
            }),
            Reading::Data {
                mut file,
                mut hasher,
                pos,
                size,
                chunk,
            } => {
                if pos >= size {
                    let digest = hex::encode(hasher.finalize());
                    return Some((Ok(json!({ "sha256": digest })), Reading::Done));
                }
                let n = usize::try_from(size - pos).map_or(chunk, |left| left.min(chunk));
                let mut buf = vec![0; n];
                if let Err(e) = file.read_exact(&mut buf).await {
                    return Some((Err(format!("cannot read the file: {e}")), Reading::Done));
                }
                hasher.update(&buf);
                let item = json!({ "offset": pos, "data": B64.encode(&buf) });
                let next = Reading::Data {
                    file,
                    hasher,
                    pos: pos + n as u64,
                    size,
                    chunk,
                };
                Some((Ok(item), next))
            }
            Reading::Done => None,
        }
    })
}

impl Server {
    fn uploads(&self) -> MutexGuard<'_, HashMap<String, Upload>> {
        // A panic elsewhere while holding the lock leaves consistent maps: go on with them.
        self.uploads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The path of an existing regular file named `name`, inside the served directory.
    async fn existing(&self, name: &str) -> Result<PathBuf, String> {
        check_name(name)?;
        let path = tokio::fs::canonicalize(self.root.join(name))
            .await
            .map_err(|_| format!("no file `{name}`"))?;
        if !path.starts_with(&self.root) {
            return Err(format!("`{name}` leads out of the served directory"));
        }
        let meta = tokio::fs::metadata(&path)
            .await
            .map_err(|e| format!("`{name}`: {e}"))?;
        if !meta.is_file() {
            return Err(format!("`{name}` is not a regular file"));
        }
        Ok(path)
    }

    /// Opens a file to read from `a.offset`, with the SHA-256 of what comes before it.
    async fn open(&self, a: &ReadArgs) -> Result<(tokio::fs::File, Sha256, u64), String> {
        let path = self.existing(&a.name).await?;
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| format!("cannot open `{}`: {e}", a.name))?;
        let size = file
            .metadata()
            .await
            .map_err(|e| format!("`{}`: {e}", a.name))?
            .len();
        self.within_limit(&a.name, size)?;
        if a.offset > size {
            return Err(format!(
                "offset {} is past the end of `{}` ({size} bytes)",
                a.offset, a.name
            ));
        }
        let mut hasher = Sha256::new();
        let mut left = a.offset;
        let mut buf = vec![0; MAX_CHUNK_BYTES];
        while left > 0 {
            let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
            file.read_exact(&mut buf[..n])
                .await
                .map_err(|e| format!("cannot read `{}`: {e}", a.name))?;
            hasher.update(&buf[..n]);
            left -= n as u64;
        }
        file.seek(std::io::SeekFrom::Start(a.offset))
            .await
            .map_err(|e| format!("cannot read `{}`: {e}", a.name))?;
        Ok((file, hasher, size))
    }

    fn within_limit(&self, name: &str, size: u64) -> Result<(), String> {
        if size > self.options.max_file_bytes {
            return Err(format!(
                "`{name}` is {size} bytes, over this server's limit of {} (max_file_bytes)",
                self.options.max_file_bytes
            ));
        }
        Ok(())
    }

    /// `files.begin`: where an upload of `name` goes on from (0 for a new one).
    async fn begin(&self, a: BeginArgs) -> Result<Value, String> {
        check_name(&a.name)?;
        self.within_limit(&a.name, a.size)?;
        let stale: Vec<PathBuf> = {
            let mut ups = self.uploads();
            let mut stale = Vec::new();
            ups.retain(|_, u| {
                let keep = u.touched.elapsed() < UPLOAD_IDLE;
                if !keep {
                    stale.push(u.partial.clone());
                }
                keep
            });
            if let Some(u) = ups.get_mut(&a.name).filter(|u| u.size == a.size) {
                u.touched = Instant::now();
                return Ok(json!({ "offset": u.confirmed }));
            }
            if ups.len() >= self.options.max_uploads && !ups.contains_key(&a.name) {
                return Err(format!(
                    "{} uploads are in progress; try again later",
                    ups.len()
                ));
            }
            stale
        };
        for p in stale {
            let _ = tokio::fs::remove_file(p).await;
        }
        let partial = partial_path(&self.root.join(&a.name));
        match tokio::fs::remove_file(&partial).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot start `{}`: {e}", a.name)),
        }
        // A new file, never one found in place (`create_new` follows no symbolic link).
        tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&partial)
            .await
            .map_err(|e| format!("cannot start `{}`: {e}", a.name))?;
        self.uploads().insert(
            a.name,
            Upload {
                size: a.size,
                partial,
                confirmed: 0,
                ahead: BTreeMap::new(),
                touched: Instant::now(),
            },
        );
        Ok(json!({ "offset": 0 }))
    }

    /// `files.write`: one chunk at its offset; answers the bytes confirmed from the start.
    async fn write(&self, a: WriteArgs) -> Result<Value, String> {
        let data = B64
            .decode(a.data.as_bytes())
            .map_err(|e| format!("`data` is not base64: {e}"))?;
        if data.len() > MAX_CHUNK_BYTES {
            return Err(format!("a chunk is at most {MAX_CHUNK_BYTES} bytes"));
        }
        let end = a.offset.saturating_add(data.len() as u64);
        let partial = {
            let mut ups = self.uploads();
            let u = ups.get_mut(&a.name).ok_or_else(|| no_upload(&a.name))?;
            if end > u.size {
                return Err(format!(
                    "bytes {}..{end} are past the declared size {}",
                    a.offset, u.size
                ));
            }
            u.touched = Instant::now();
            u.partial.clone()
        };
        let offset = a.offset;
        tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::FileExt;
            std::fs::OpenOptions::new()
                .write(true)
                .open(&partial)?
                .write_all_at(&data, offset)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot write `{}`: {e}", a.name))?;
        let mut ups = self.uploads();
        let u = ups.get_mut(&a.name).ok_or_else(|| no_upload(&a.name))?;
        if a.offset <= u.confirmed {
            u.confirmed = u.confirmed.max(end);
        } else {
            let e = u.ahead.entry(a.offset).or_insert(end);
            *e = (*e).max(end);
        }
        while let Some((&start, &stop)) = u.ahead.first_key_value() {
            if start > u.confirmed {
                break;
            }
            u.confirmed = u.confirmed.max(stop);
            u.ahead.pop_first();
        }
        Ok(json!({ "confirmed": u.confirmed }))
    }

    /// `files.commit`: checks the digest of the whole upload and renames it into place.
    async fn commit(&self, a: CommitArgs) -> Result<Value, String> {
        let partial = {
            let ups = self.uploads();
            let u = ups.get(&a.name).ok_or_else(|| no_upload(&a.name))?;
            if u.size != a.size || u.confirmed != u.size {
                return Err(format!(
                    "`{}`: {} of {} bytes arrived",
                    a.name, u.confirmed, u.size
                ));
            }
            u.partial.clone()
        };
        let path = partial.clone();
        let digest = tokio::task::spawn_blocking(move || sha256_of(&path))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot read `{}`: {e}", a.name))?;
        self.uploads().remove(&a.name);
        if !digest.eq_ignore_ascii_case(&a.sha256) {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(format!(
                "SHA-256 mismatch for `{}`: received {digest}, sent {}; the partial file was deleted",
                a.name, a.sha256
            ));
        }
        let fin = self.root.join(&a.name);
        tokio::fs::rename(&partial, &fin)
            .await
            .map_err(|e| format!("cannot put `{}` in place: {e}", a.name))?;
        Ok(json!({ "size": a.size }))
    }
}

fn no_upload(name: &str) -> String {
    format!("no upload of `{name}` in progress: call files.begin first")
}

/// The SHA-256 of a file, read in chunks (lower-case hex).
pub(super) fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; MAX_CHUNK_BYTES];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}
