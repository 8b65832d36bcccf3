//! Running a target: a device is one leaf (retried while the deadline allows, stopping at the
//! first success); a scene runs its items in parallel (all at once) or in sequence, each
//! with its own command or the one passed down. One deadline bounds the whole tree: a leaf
//! still running then is cut and reported as `deadline`, so the result is ready by then at
//! the latest. How a leaf reaches its device is the [`Drive`] given (the network drivers in
//! [`super::drivers`], or a stand-in in tests).

use std::future::Future;
use std::time::Duration;

use futures::future::{join_all, BoxFuture, FutureExt};
use iot_proto::home::HomeResult;
use tokio::time::Instant;

use super::catalog::{parse_item, Catalog, Driver, Mode, MAX_DEPTH};
use super::command::Command;
use super::metrics::HomeMetrics;

/// Pause between two attempts of a leaf.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Drives one device.
pub trait Drive: Sync {
    /// Sends `cmd` to device `name`; `Err` is the result's `detail` (`connection refused`,
    /// `err_code 1`, `HTTP 500`, ...). Cancelled (dropped) at the deadline.
    fn drive(
        &self,
        name: &str,
        driver: &Driver,
        cmd: Command,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

/// One run of a tree.
#[allow(missing_debug_implementations)] // holds the drivers and borrowed data for one run
pub struct Run<'a, D> {
    pub catalog: &'a Catalog,
    pub drive: &'a D,
    /// Attempts after the first, per leaf.
    pub retries: u32,
    pub start: Instant,
    pub deadline: Instant,
    pub metrics: &'a HomeMetrics,
}

impl<D: Drive> Run<'_, D> {
    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn failed(&self, target: &str, cmd: Command, detail: impl Into<String>) -> HomeResult {
        HomeResult {
            target: target.to_owned(),
            cmd: cmd.to_string(),
            ok: false,
            ms: self.elapsed_ms(),
            detail: Some(detail.into()),
            ..HomeResult::default()
        }
    }

    /// Runs target `name` (a device or a scene, by exact name) with `cmd`.
    pub fn target<'s>(&'s self, name: &'s str, cmd: Command) -> BoxFuture<'s, HomeResult> {
        self.at_depth(name, cmd, 0)
    }

    fn at_depth<'s>(
        &'s self,
        name: &'s str,
        cmd: Command,
        depth: usize,
    ) -> BoxFuture<'s, HomeResult> {
        async move {
            if let Some(driver) = self.catalog.devices.get(name) {
                self.device(name, driver, cmd).await
            } else if depth >= MAX_DEPTH {
                self.failed(name, cmd, format!("scenes nest deeper than {MAX_DEPTH}"))
            } else if let Some(scene) = self.catalog.scene_for(name, cmd) {
                self.scene(name, scene.mode(), scene.items(), cmd, depth)
                    .await
            } else {
                self.failed(name, cmd, "unknown target")
            }
        }
        .boxed()
    }

    async fn device(&self, name: &str, driver: &Driver, cmd: Command) -> HomeResult {
        let began = Instant::now();
        let mut detail = String::from("deadline");
        for attempt in 0..=self.retries {
            if attempt > 0 {
                let pause =
                    RETRY_PAUSE.min(self.deadline.saturating_duration_since(Instant::now()));
                tokio::time::sleep(pause).await;
            }
            if Instant::now() >= self.deadline {
                detail = "deadline".into();
                break;
            }
            let attempt = self.drive.drive(name, driver, cmd);
            match tokio::time::timeout_at(self.deadline, attempt).await {
                Ok(Ok(())) => {
                    self.metrics.leaf(began.elapsed(), true);
                    return HomeResult {
                        target: name.to_owned(),
                        cmd: cmd.to_string(),
                        ok: true,
                        ms: self.elapsed_ms(),
                        ..HomeResult::default()
                    };
                }
                Ok(Err(why)) => detail = why,
                Err(_) => {
                    detail = "deadline".into();
                    break;
                }
            }
        }
        self.metrics.leaf(began.elapsed(), false);
        self.failed(name, cmd, detail)
    }

    async fn scene(
        &self,
        name: &str,
        mode: Mode,
        items: &[String],
        cmd: Command,
        depth: usize,
    ) -> HomeResult {
        let parsed: Vec<_> = items.iter().map(|i| (i, parse_item(i))).collect();
        let children = match mode {
            Mode::Parallel => {
                join_all(parsed.iter().map(|(text, item)| async move {
                    match item {
                        Ok(it) => {
                            self.at_depth(&it.target, it.cmd.unwrap_or(cmd), depth + 1)
                                .await
                        }
                        Err(why) => self.failed(text, cmd, why.clone()),
                    }
                }))
                .await
            }
            Mode::Sequence => {
                let mut out = Vec::with_capacity(parsed.len());
                for (text, item) in &parsed {
                    let r = match item {
                        Ok(it) if Instant::now() >= self.deadline => {
                            self.failed(&it.target, it.cmd.unwrap_or(cmd), "deadline")
                        }
                        Ok(it) => {
                            self.at_depth(&it.target, it.cmd.unwrap_or(cmd), depth + 1)
                                .await
                        }
                        Err(why) => self.failed(text, cmd, why.clone()),
                    };
                    out.push(r);
                }
                out
            }
        };
        HomeResult {
            target: name.to_owned(),
            cmd: cmd.to_string(),
            ok: children.iter().all(|c| c.ok),
            ms: self.elapsed_ms(),
            children,
            ..HomeResult::default()
        }
    }
}

/// The target `asked` names: a device or scene of exactly that name, else the one name that
/// contains it (ignoring case). `Err` is the `detail`: unknown, or the candidates.
pub fn lookup(catalog: &Catalog, asked: &str) -> Result<String, String> {
    let names = catalog
        .devices
        .keys()
        .chain(catalog.scenes.keys().filter(|k| !k.contains(':')));
    let mut found = Vec::new();
    let needle = asked.to_lowercase();
    for n in names {
        if n == asked {
            return Ok(n.clone());
        }
        if n.to_lowercase().contains(&needle) {
            found.push(n.as_str());
        }
    }
    match found.as_slice() {
        [one] => Ok((*one).to_owned()),
        [] => Err("unknown target".into()),
        many => Err(format!(
            "`{}` matches several targets: {}",
            crate::model::shorten(asked),
            many.join(", ")
        )),
    }
}

#[cfg(test)]
#[path = "run_tests.rs"]
mod tests;
