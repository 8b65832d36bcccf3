//! How a worker process is started: an empty private working directory, a scrubbed
//! environment, the limits `worker.py` applies to itself before it says it is ready, and,
//! when the controller runs as root, an unprivileged user (`functions.python_user`).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::json;
use tokio::process::Command;

use crate::funcs::FunctionsConfig;

const WORKER_SCRIPT: &str = include_str!("worker.py");
/// The `PATH` of a worker that runs as another user: the system's interpreters only (the
/// controller's own `PATH` may point into its home, out of that user's reach).
const SYSTEM_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Everything needed to start workers, resolved once.
#[derive(Debug, Clone)]
pub struct Sandbox {
    python: String,
    /// The JSON object `worker.py` reads its limits from.
    limits: serde_json::Value,
    /// The user and group to switch to (only when running as root).
    ids: Option<(u32, u32, String)>,
    /// Why no worker can start (an unknown `python_user`): every call fails with it.
    broken: Option<String>,
}

impl Sandbox {
    pub fn new(cfg: &FunctionsConfig) -> Self {
        let limits = json!({
            "memory_mb": cfg.python_max_memory_mb,
            "cpu_seconds": cfg.python_max_cpu_seconds,
            "open_files": cfg.python_max_open_files,
            "file_mb": cfg.python_max_file_mb,
            "max_depth": iot_proto::wire::MAX_DEPTH,
        });
        let mut s = Self {
            python: cfg.python.clone(),
            limits,
            ids: None,
            broken: None,
        };
        if nix::unistd::geteuid().is_root() && cfg.python_user != "root" {
            match nix::unistd::User::from_name(&cfg.python_user) {
                Ok(Some(u)) => {
                    s.ids = Some((u.uid.as_raw(), u.gid.as_raw(), cfg.python_user.clone()))
                }
                Ok(None) => {
                    s.broken = Some(format!(
                        "functions.python_user `{}` does not exist: Python functions need an \
                         unprivileged user to run as when the controller runs as root",
                        cfg.python_user
                    ))
                }
                Err(e) => {
                    s.broken = Some(format!(
                        "cannot look up functions.python_user `{}`: {e}",
                        cfg.python_user
                    ))
                }
            }
        }
        s
    }

    /// The user workers run as, when it is not the controller's own.
    pub fn user(&self) -> Option<&str> {
        self.ids.as_ref().map(|(_, _, name)| name.as_str())
    }

    /// A worker process's command and its working directory (removed when dropped); the
    /// process lowers its CPU priority by `nice` (0: unchanged).
    pub fn command(&self, nice: u8) -> Result<(Command, WorkDir), String> {
        if let Some(why) = &self.broken {
            return Err(why.clone());
        }
        let dir = WorkDir::create(self.ids.as_ref().map(|(u, g, _)| (*u, *g)))
            .map_err(|e| format!("cannot create the worker's directory: {e}"))?;
        let path = match &self.ids {
            Some(_) => SYSTEM_PATH.to_owned(),
            None => std::env::var("PATH").unwrap_or_else(|_| SYSTEM_PATH.to_owned()),
        };
        let mut cmd = Command::new(&self.python);
        // -I: isolated (no PYTHON* variables, no user site, no script directory on sys.path);
        // -u: unbuffered pipes.
        cmd.arg("-I")
            .arg("-u")
            .arg("-c")
            .arg(WORKER_SCRIPT)
            .arg(self.limits_with(nice))
            .env_clear()
            .env("PATH", path)
            .env("LANG", "C.UTF-8")
            .env("HOME", dir.path())
            .env("TMPDIR", dir.path())
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if let Some((uid, gid, _)) = &self.ids {
            // The standard library drops supplementary groups too when switching from root.
            cmd.uid(*uid).gid(*gid);
        }
        Ok((cmd, dir))
    }
}

impl Sandbox {
    fn limits_with(&self, nice: u8) -> String {
        let mut limits = self.limits.clone();
        limits["nice"] = nice.into();
        limits.to_string()
    }
}

/// A worker's private working directory: new and empty, readable by its user only, removed
/// with everything the worker left in it once the worker is gone.
#[derive(Debug)]
pub struct WorkDir(PathBuf);

impl WorkDir {
    fn create(owner: Option<(u32, u32)>) -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let path = std::env::temp_dir().join(format!("iotctl-python-{}", uuid::Uuid::new_v4()));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        let dir = Self(path);
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&dir.0, Some(uid), Some(gid))?;
        }
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
