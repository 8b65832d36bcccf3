//! The MQTT connection of one DA: a supervisor task that owns the rumqttc event loop, polls
//! it and forwards what happens to the DA's task (`core`), and nothing else.
//!
//! Every connection gets a fresh `AsyncClient`/`EventLoop` pair and a generation number.
//! rumqttc would otherwise replay requests queued before a connection loss onto the next
//! connection, ahead of our re-subscription and `online`; with a fresh pair the DA's task
//! knows exactly what reached which connection, and events of an old generation are ignored.
//! Between attempts the supervisor waits a jittered backoff (rumqttc has none), and before
//! each reconnect it asks the server whether the registration still stands (`GET /{id}`):
//! after a 404 it registers again (`PUT`) and connects with the new rev and credentials.
//!
//! The DA's task never awaits on rumqttc: it uses the `try_*` calls and keeps its own queue,
//! so the bounded hand-off from this task to it can never deadlock.
//!
//! Layout: this file is the supervisor; `client` builds a connection's client and event
//! loop (MQTT options, will, TLS), `link` hands the DA's requests to it, `poller` reduces
//! its events, and `events` is what the supervisor reports to the DA's task. None of them
//! imports this file.

mod client;
mod events;
mod link;
mod poller;

use std::sync::Arc;

use iot_proto::wire::RegisterRequest;
use iot_proto::DaId;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub(crate) use self::client::{scheme_is_tls, tls_transport};
pub(crate) use self::events::{Input, NetEvent, Registration};
pub(crate) use self::link::{Link, Out, Props, Tag};
use self::poller::Polled;
use crate::config::{MqttVersion, Options};
use crate::http::Registrar;
use crate::status::Protocol;

/// Builds (and drops) a connection's client and event loop without connecting, for the
/// property tests of the settings and registration replies the client is built from.
#[cfg(test)]
pub(crate) fn try_build(
    id: &DaId,
    reg: &Registration,
    opts: &Options,
    protocol: Protocol,
) -> Result<(), String> {
    client::build(id, &id.to_string(), reg, opts, protocol)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The supervisor of one DA's connection.
pub(crate) struct Supervisor {
    pub id: DaId,
    /// Stable for the life of the process, so a reconnect takes over our previous session
    /// (and its will fires before we go online again).
    pub client_id: String,
    pub reg: Registration,
    pub registrar: Registrar,
    pub request: Arc<RegisterRequest>,
    pub opts: Arc<Options>,
    pub tx: mpsc::Sender<Input>,
    pub stop: CancellationToken,
}

impl Supervisor {
    /// Connects, reconnects and reports, until stopped or the DA's task is gone. It runs in
    /// a span like the DA's task (`Core::run`, which says why the level): `da`, with `da.id`.
    #[tracing::instrument(name = "da", level = "error", skip_all, fields(da.id = %self.id))]
    pub async fn run(mut self) {
        let mut gen: u64 = 0;
        let mut failures: u32 = 0;
        let mut fixed: Option<Protocol> = match self.opts.mqtt_version {
            MqttVersion::V311 => Some(Protocol::V311),
            MqttVersion::V5 => Some(Protocol::V5),
            MqttVersion::Auto => None,
        };
        let mut protocol = fixed.unwrap_or(Protocol::V5);
        loop {
            if gen > 0 && !self.check_registration().await {
                return;
            }
            gen += 1;
            let built = client::build(&self.id, &self.client_id, &self.reg, &self.opts, protocol);
            let (link, mut poller) = match built {
                Ok(p) => p,
                Err(e) => {
                    // A configuration problem (e.g. TLS roots); report it and retry slowly.
                    if self
                        .tx
                        .send(Input::Disconnected {
                            gen,
                            error: e.to_string(),
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                    failures = failures.saturating_add(1);
                    if !self.pause(failures).await {
                        return;
                    }
                    continue;
                }
            };
            let mut connected = false;
            loop {
                let polled = tokio::select! {
                    p = poller.poll() => p,
                    () = self.stop.cancelled() => return,
                };
                let input = match polled {
                    Ok(Polled::ConnAck) => {
                        connected = true;
                        failures = 0;
                        fixed = Some(protocol);
                        Input::Connected {
                            gen,
                            link: link.clone(),
                            protocol,
                        }
                    }
                    Ok(Polled::Event(ev)) => Input::Net { gen, ev },
                    Ok(Polled::Skip) => continue,
                    Err(e) => {
                        if !connected && fixed.is_none() && e.version_refused {
                            protocol = match protocol {
                                Protocol::V5 => Protocol::V311,
                                Protocol::V311 => Protocol::V5,
                            };
                            tracing::info!(
                                error = %e.message,
                                "the broker refused this MQTT version; trying {protocol:?}"
                            );
                        }
                        if self
                            .tx
                            .send(Input::Disconnected {
                                gen,
                                error: e.message,
                            })
                            .await
                            .is_err()
                        {
                            return;
                        }
                        break;
                    }
                };
                if self.tx.send(input).await.is_err() {
                    return;
                }
            }
            failures = failures.saturating_add(1);
            if !self.pause(failures).await {
                return;
            }
        }
    }

    /// Waits the backoff delay; `false` when stopped meanwhile.
    async fn pause(&self, failures: u32) -> bool {
        let delay = self.opts.backoff.delay(failures);
        tokio::select! {
            () = tokio::time::sleep(delay) => true,
            () = self.stop.cancelled() => false,
        }
    }

    /// Before a reconnect: is our registration still the server's? Registers again when the
    /// server lost it (404) or holds another rev. `false` when stopped or the DA's task is gone.
    async fn check_registration(&mut self) -> bool {
        let current = tokio::select! {
            r = self.registrar.current_rev(&self.id) => r,
            () = self.stop.cancelled() => return false,
        };
        let why = match current {
            Ok(Some(rev)) if rev == self.reg.rev => return true,
            Ok(Some(_)) => "the server holds another revision",
            Ok(None) => "the server no longer knows this DA",
            Err(e) => {
                // The broker may still be reachable: connect with what we have.
                tracing::debug!(error = %e, "cannot check the registration");
                return true;
            }
        };
        let put = tokio::select! {
            r = self.registrar.register(&self.id, &self.request) => r,
            () = self.stop.cancelled() => return false,
        };
        match put {
            Ok(resp) => {
                tracing::info!(rev = %resp.rev, "{why}: registered again");
                self.reg = Registration::from(resp);
                self.tx
                    .send(Input::Registered(self.reg.clone()))
                    .await
                    .is_ok()
            }
            Err(e) => {
                tracing::warn!(error = %e, "{why}, and registering again failed");
                true
            }
        }
    }
}
