//! The serving side of file transfer ([`crate::Da::serve_files`]): the four methods, each
//! checking the name it is given against the served directory. Reads stream the file from
//! disk; uploads are written at their offsets into `.<name>.<tag>.part`, which is hashed and
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
    check_name, fresh_tag, partial_path, BeginArgs, CommitArgs, ReadArgs, ServeFiles, WriteArgs,
    BEGIN, COMMIT, MAX_CHUNK_BYTES, READ, WRITE,
};
use crate::da::Da;
use crate::error::Error;

/// How long an upload may sit without a chunk before a new one may drop it.
const UPLOAD_IDLE: Duration = Duration::from_secs(600);

/// Chunks an upload may hold past a gap (a window's worth), and commits remembered.
const MAX_AHEAD: usize = 1024;

/// One upload in progress.
struct Upload {
    size: u64,
    partial: PathBuf,
    /// Bytes `0..confirmed` were written.
    confirmed: u64,
    /// Ranges written past a gap (start to end).
    ahead: BTreeMap<u64, u64>,
    touched: Instant,
    /// Writes under way: a commit waits for none.
    writers: usize,
}

struct Server {
    root: PathBuf,
    options: ServeFiles,
    uploads: Mutex<HashMap<String, Upload>>,
    /// Recent commits (name: size and digest), so that a repeated commit succeeds.
    committed: Mutex<HashMap<String, (u64, String)>>,
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
        committed: Mutex::new(HashMap::new()),
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
        /// The digest so far, when reading from the start; else the digest of the whole file,
        /// computed beside the reading.
        digest: Digesting,
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
                Ok((file, digest, size)) => (
                    Ok(json!({ "size": size })),
                    Reading::Data {
                        file,
                        digest,
                        pos: a.offset,
                        size,
                        chunk: a.chunk_bytes.clamp(1, MAX_CHUNK_BYTES),
                    },
                ),
                Err(e) => (Err(e), Reading::Done),
            }),
            Reading::Data {
                mut file,
                mut digest,
                pos,
                size,
                chunk,
            } => {
                if pos >= size {
                    let item = match digest {
                        Digesting::Inline(h) => Ok(hex::encode(h.finalize())),
                        Digesting::Beside(job) => match job.await {
                            Ok(Ok(d)) => Ok(d),
                            Ok(Err(e)) => Err(format!("cannot read the file: {e}")),
                            Err(e) => Err(e.to_string()),
                        },
                    };
                    let item = item.map(|d| json!({ "sha256": d }));
                    return Some((item, Reading::Done));
                }
                let n = usize::try_from(size - pos).map_or(chunk, |left| left.min(chunk));
                let mut buf = vec![0; n];
                if let Err(e) = file.read_exact(&mut buf).await {
                    return Some((Err(format!("cannot read the file: {e}")), Reading::Done));
                }
                if let Digesting::Inline(h) = &mut digest {
                    h.update(&buf);
                }
                let item = json!({ "offset": pos, "data": B64.encode(&buf) });
                let next = Reading::Data {
                    file,
                    digest,
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

    fn committed(&self) -> MutexGuard<'_, HashMap<String, (u64, String)>> {
        self.committed.lock().unwrap_or_else(|p| p.into_inner())
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

    /// Opens a file to read from `a.offset`, with how its digest is made.
    async fn open(&self, a: &ReadArgs) -> Result<(tokio::fs::File, Digesting, u64), String> {
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
        // Resumed: the chunks go out at once, the whole file is hashed beside them (the part
        // before the offset could take longer than the caller waits for an item).
        let digest = if a.offset == 0 {
            Digesting::Inline(Sha256::new())
        } else {
            Digesting::Beside(tokio::task::spawn_blocking(move || {
                sha256_of_first(&path, size)
            }))
        };
        file.seek(std::io::SeekFrom::Start(a.offset))
            .await
            .map_err(|e| format!("cannot read `{}`: {e}", a.name))?;
        Ok((file, digest, size))
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
        let (partial, stale) = {
            let mut ups = self.uploads();
            let mut stale = Vec::new();
            ups.retain(|_, u| {
                let keep = u.touched.elapsed() < UPLOAD_IDLE || u.writers > 0;
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
            // Reserved now (the limit holds against begins running meanwhile); a file of its
            // own, so that nothing another upload of the name does can touch it.
            let partial = partial_path(&self.root.join(&a.name), &fresh_tag());
            let replaced = ups.insert(
                a.name.clone(),
                Upload {
                    size: a.size,
                    partial: partial.clone(),
                    confirmed: 0,
                    ahead: BTreeMap::new(),
                    touched: Instant::now(),
                    writers: 0,
                },
            );
            stale.extend(replaced.map(|u| u.partial));
            (partial, stale)
        };
        for p in stale {
            let _ = tokio::fs::remove_file(p).await;
        }
        // A new file, never one found in place (`create_new` follows no symbolic link).
        let created = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&partial)
            .await;
        if let Err(e) = created {
            self.uploads().remove(&a.name);
            return Err(format!("cannot start `{}`: {e}", a.name));
        }
        Ok(json!({ "offset": 0 }))
    }

    /// `files.write`: one chunk at its offset; answers the bytes confirmed from the start.
    async fn write(&self, a: WriteArgs) -> Result<Value, String> {
        // Base64 of a chunk is 4/3 of it.
        if a.data.is_empty() || a.data.len() > MAX_CHUNK_BYTES / 3 * 4 + 4 {
            return Err(format!("a chunk is 1 to {MAX_CHUNK_BYTES} bytes"));
        }
        let data = B64
            .decode(a.data.as_bytes())
            .map_err(|e| format!("`data` is not base64: {e}"))?;
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
            if a.offset > u.confirmed && u.ahead.len() >= MAX_AHEAD {
                return Err(format!(
                    "more than {MAX_AHEAD} chunks arrived past a gap at byte {}",
                    u.confirmed
                ));
            }
            u.touched = Instant::now();
            u.writers += 1;
            u.partial.clone()
        };
        let offset = a.offset;
        let path = partial.clone();
        let written = tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::FileExt;
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)?
                .write_all_at(&data, offset)
        })
        .await;
        let mut ups = self.uploads();
        // The upload may have been begun again meanwhile (another file): not this one then.
        let u = (ups.get_mut(&a.name))
            .filter(|u| u.partial == partial)
            .ok_or_else(|| format!("the upload of `{}` was begun again", a.name))?;
        u.writers = u.writers.saturating_sub(1);
        written
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot write `{}`: {e}", a.name))?;
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

    /// `files.commit`: checks the digest of the whole upload and renames it into place. A
    /// repeat of a commit that succeeded (its reply lost) succeeds again.
    async fn commit(&self, a: CommitArgs) -> Result<Value, String> {
        let upload = {
            let mut ups = self.uploads();
            let Some(u) = ups.get(&a.name) else {
                let done = self.committed().get(&a.name).cloned();
                return match done {
                    Some((size, digest))
                        if size == a.size && digest.eq_ignore_ascii_case(&a.sha256) =>
                    {
                        Ok(json!({ "size": a.size }))
                    }
                    _ => Err(no_upload(&a.name)),
                };
            };
            if u.size != a.size || u.confirmed != u.size {
                return Err(format!(
                    "`{}`: {} of {} bytes arrived",
                    a.name, u.confirmed, u.size
                ));
            }
            if u.writers > 0 {
                return Err(format!("`{}`: writes are in progress", a.name));
            }
            // Out of the map: no write or begin reaches this file from now on.
            ups.remove(&a.name).ok_or_else(|| no_upload(&a.name))?
        };
        let path = upload.partial.clone();
        let digest = tokio::task::spawn_blocking(move || {
            let d = sha256_of(&path)?;
            std::fs::File::open(&path)?.sync_all()?;
            Ok::<_, std::io::Error>(d)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot read `{}`: {e}", a.name));
        let digest = match digest {
            Ok(d) if d.eq_ignore_ascii_case(&a.sha256) => d,
            other => {
                let _ = tokio::fs::remove_file(&upload.partial).await;
                let got = other?;
                return Err(format!(
                    "SHA-256 mismatch for `{}`: received {got}, sent {}; the partial file was deleted",
                    a.name, a.sha256
                ));
            }
        };
        let fin = self.root.join(&a.name);
        tokio::fs::rename(&upload.partial, &fin)
            .await
            .map_err(|e| format!("cannot put `{}` in place: {e}", a.name))?;
        let mut done = self.committed();
        if done.len() >= MAX_AHEAD {
            done.clear();
        }
        done.insert(a.name, (a.size, digest));
        Ok(json!({ "size": a.size }))
    }
}

fn no_upload(name: &str) -> String {
    format!("no upload of `{name}` in progress: call files.begin first")
}

/// How a read makes the file's digest.
enum Digesting {
    Inline(Sha256),
    Beside(tokio::task::JoinHandle<std::io::Result<String>>),
}

/// The SHA-256 of a file, read in chunks (lower-case hex).
pub(super) fn sha256_of(path: &Path) -> std::io::Result<String> {
    sha256_of_first(path, u64::MAX)
}

/// The SHA-256 of the first `len` bytes of a file (all of it if shorter).
fn sha256_of_first(path: &Path, len: u64) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?.take(len);
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
