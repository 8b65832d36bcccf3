//! The home handler at run time: subscribes to `iottalk/home/cmd/+`, turns each message into
//! a [`Plan`], applies the rate limit (per client and target), runs the tree under its
//! deadline on its own task (a slow scene never holds up the next command), publishes the
//! one reply and the retained states, and keeps the retained catalog current. The REST API
//! runs targets through the same [`Home::run`].

use std::sync::Arc;
use std::time::Duration;

use iot_auth::rate::Limiter;
use iot_broker::{BrokerHandle, Message};
use iot_proto::home::{self, HomeResult};
use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::catalog::Catalog;
use super::command::Command;
use super::drivers::Drivers;
use super::metrics::{HomeMetrics, Outcome, UNKNOWN};
use super::request::{self, Plan};
use super::run::Run;
use super::HomeConfig;
use crate::Ccm;

/// Commands running at once; one more is refused (`busy`) rather than queued.
const MAX_RUNNING: usize = 256;

/// The handler's parts.
#[derive(Debug)]
pub struct Home {
    cfg: HomeConfig,
    ccm: Ccm,
    drivers: Drivers,
    limiter: Limiter<(String, String)>,
    running: Arc<Semaphore>,
}

impl Home {
    pub fn new(cfg: HomeConfig, ccm: Ccm, drivers: Drivers) -> Result<Home, String> {
        let rate = cfg.check()?;
        Ok(Home {
            cfg,
            ccm,
            drivers,
            limiter: Limiter::new(rate),
            running: Arc::new(Semaphore::new(MAX_RUNNING)),
        })
    }

    pub fn config(&self) -> &HomeConfig {
        &self.cfg
    }

    fn metrics(&self) -> &HomeMetrics {
        self.ccm.home_metrics()
    }

    fn catalog(&self) -> Arc<Catalog> {
        self.ccm.read(|s| s.home.clone())
    }

    /// The last command each device took (the retained states), by device.
    pub async fn states(&self) -> Result<Map<String, Value>, String> {
        let found = self
            .drivers
            .broker
            .retained(&home::state("+"))
            .await
            .map_err(|e| format!("reading the device states: {e}"))?;
        Ok(found
            .into_iter()
            .filter_map(|m| {
                let device = m.topic.rsplit('/').next()?.to_owned();
                Some((device, serde_json::from_slice(&m.payload).ok()?))
            })
            .collect())
    }

    /// Reads a command message; `None` when its topic is not a command topic.
    pub fn plan(&self, msg: &Message) -> Option<Plan> {
        request::plan(msg, &self.catalog(), &self.cfg)
    }

    /// Runs a plan for `client` (its MQTT client id, or `api:<user>`), publishes the device
    /// states it changed, and returns the result (the caller sends it where it belongs).
    pub async fn run(&self, plan: &Plan, client: &str) -> HomeResult {
        let (target, cmd) = match &plan.what {
            Ok(tc) => tc.clone(),
            Err(why) => {
                self.metrics().command(UNKNOWN, Outcome::Refused);
                return plan.refusal(why);
            }
        };
        if let Err(wait) = self.limiter.take(
            (client.to_owned(), target.clone()),
            std::time::Instant::now(),
        ) {
            self.metrics().command(&target, Outcome::Refused);
            let mut r = plan.refusal("rate limited");
            r.retry_after_ms = Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1));
            return r;
        }
        let catalog = self.catalog();
        let mut result = self.tree(&catalog, &target, cmd, plan.deadline).await;
        result.id = plan.id.clone();
        let outcome = if result.ok {
            Outcome::Ok
        } else {
            Outcome::Failed
        };
        self.metrics().command(&target, outcome);
        // The states go out on their own task: the reply is not held up by them.
        let states = request::states(&result, &catalog, crate::now());
        let broker = self.drivers.broker.clone();
        tokio::spawn(async move {
            for m in states {
                if let Err(e) = broker.publish(m).await {
                    tracing::warn!(error = %e, "cannot publish a home device state");
                }
            }
        });
        result
    }

    async fn tree(
        &self,
        catalog: &Catalog,
        target: &str,
        cmd: Command,
        deadline: Duration,
    ) -> HomeResult {
        let start = Instant::now();
        let run = Run {
            catalog,
            drive: &self.drivers,
            retries: self.cfg.retries,
            start,
            deadline: start + deadline,
            metrics: self.metrics(),
        };
        run.target(target, cmd).await
    }

    /// One message: plan, run, reply. Refused at once when too many run already.
    async fn handle(self: Arc<Self>, msg: Message) {
        let Some(plan) = self.plan(&msg) else {
            return;
        };
        let client = msg
            .from
            .as_ref()
            .map_or_else(|| "(external)".to_owned(), |p| p.client_id.clone());
        let result = match self.running.clone().try_acquire_owned() {
            Ok(_permit) => self.run(&plan, &client).await,
            Err(_) => {
                self.metrics().command(UNKNOWN, Outcome::Refused);
                plan.refusal("busy: too many commands running, try again later")
            }
        };
        if !result.ok {
            tracing::debug!(
                home.target = %iot_proto::log::Escaped(&result.target),
                home.failures = ?result.failures(),
                "home command did not fully succeed"
            );
        }
        let broker = &self.drivers.broker;
        if let Err(e) = broker.publish(request::reply(&plan, &result)).await {
            // Still one reply: a short refusal on the target's default topic.
            tracing::warn!(error = %e, "cannot publish a home reply");
            let why = format!("the reply could not be published: {e}");
            let fallback = Plan {
                reply_topic: home::res(&plan.asked),
                ..plan.clone()
            };
            let short = HomeResult {
                children: Vec::new(),
                ..plan.refusal(&why)
            };
            if let Err(e) = broker.publish(request::reply(&fallback, &short)).await {
                tracing::warn!(error = %e, "cannot publish a home reply");
            }
        }
    }
}

/// Serves home commands until `shutdown`.
pub async fn serve(home: Arc<Home>, broker: BrokerHandle, shutdown: CancellationToken) {
    let mut sub = match broker.subscribe(home::CMD_FILTER, 1024).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "home scenes: cannot subscribe to commands");
            return;
        }
    };
    let mut changes = home.ccm.changes();
    let mut shown: Option<Arc<Catalog>> = None;
    loop {
        let current = home.catalog();
        if !shown.as_ref().is_some_and(|s| Arc::ptr_eq(s, &current)) {
            match broker.publish(request::catalog_message(&current)).await {
                Ok(()) => shown = Some(current),
                Err(e) => tracing::warn!(error = %e, "cannot publish the home catalog"),
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            changed = changes.changed() => if changed.is_err() { break },
            msg = sub.recv() => match msg {
                Some(m) => { tokio::spawn(home.clone().handle(m)); }
                None => break,
            },
        }
    }
}
