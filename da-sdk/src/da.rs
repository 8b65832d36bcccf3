//! [`Da`]: a running device application, and [`DaBuilder::connect`], which starts one.
//! `Da` is a cheap clonable handle; the work happens in the DA's task (`core`) and its
//! connection supervisor (`transport`). Dropping every handle stops the DA (without
//! deregistering: the server sees it go offline).

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use iot_proto::home::{HomeResult, MAX_DEADLINE_MS};
use iot_proto::{DaId, Rev};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{DaBuilder, Options, Retry};
use crate::core::{Cmd, Core};
use crate::error::{DecodeError, Error};
use crate::features::Features;
use crate::http::{retryable, Registrar};
use crate::odf::OdfStream;
use crate::outbox::Outbox;
use crate::rpc;
use crate::status::{ConnState, Status};
use crate::transport::{Registration, Supervisor};

/// Largest push payload (the JSON list), in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// How long past a home command's deadline [`Da::home_run`] waits for its result: the
/// controller answers by the deadline, this covers the trip there and back.
pub const HOME_REPLY_MARGIN: Duration = Duration::from_secs(2);

/// A home command's `deadline_ms` (1 ms to [`MAX_DEADLINE_MS`]; `None`: the controller's
/// default) and how long its caller waits: that deadline (the largest the controller may
/// have as its default when none is given) plus [`HOME_REPLY_MARGIN`].
fn home_deadline(deadline: Option<Duration>) -> (Option<u64>, Duration) {
    let ms = deadline.map(|d| {
        u64::try_from(d.as_millis())
            .unwrap_or(u64::MAX)
            .clamp(1, MAX_DEADLINE_MS)
    });
    let wait = Duration::from_millis(ms.unwrap_or(MAX_DEADLINE_MS)) + HOME_REPLY_MARGIN;
    (ms, wait)
}

/// A registered, running device application. Clone it freely: every clone drives the same DA.
#[derive(Debug, Clone)]
pub struct Da {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    id: DaId,
    cmd: mpsc::Sender<Cmd>,
    status: watch::Receiver<Status>,
    registrar: Registrar,
    opts: Arc<Options>,
}

/// Registers, retrying as `opts.retry` allows.
async fn register(
    registrar: &Registrar,
    id: &DaId,
    req: &iot_proto::wire::RegisterRequest,
    opts: &Options,
) -> Result<Registration, Error> {
    let started = tokio::time::Instant::now();
    let mut failures = 0u32;
    loop {
        match registrar.register(id, req).await {
            Ok(r) => return Ok(Registration::from(r)),
            Err(e) if retryable(&e) => {
                let give_up = match opts.retry {
                    Retry::Never => true,
                    Retry::Forever => false,
                    Retry::For(budget) => started.elapsed() >= budget,
                };
                if give_up {
                    return Err(e);
                }
                failures = failures.saturating_add(1);
                tracing::info!(da.id = %id, error = %e, "registration failed; retrying");
                tokio::time::sleep(opts.backoff.delay(failures)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

impl DaBuilder {
    /// Registers the DA (`PUT {api_url}/{id}`), connects to the broker the server names with
    /// the credentials it issued, announces `online`, and returns once the broker has it.
    ///
    /// Fails with [`Error::InvalidUrl`], [`Error::Unreachable`] (after retrying when
    /// [`DaBuilder::retry`] says so), [`Error::Rejected`] carrying the server's `reason`, or
    /// [`Error::Broker`].
    pub async fn connect(self) -> Result<Da, Error> {
        let request = Arc::new(self.request()?);
        let opts = Arc::new(self.opts);
        let registrar = Registrar::new(&self.api_url, opts.http_timeout)?;
        let id = self.id.unwrap_or_else(DaId::new_v4);
        let outbox = Outbox::open(&opts.outbox, &id).await?;
        let reg = register(&registrar, &id, &request, &opts).await?;
        tracing::info!(da.id = %id, name = %reg.name, rev = %reg.rev, broker = %reg.broker_addr(), "registered");

        let features = Features::new(
            request.idf_list.iter().map(|f| f.name.to_string()),
            request.odf_list.iter().map(|f| f.name.to_string()),
        );
        let (status_tx, status_rx) =
            watch::channel(Status::new(id, reg.name.clone(), reg.rev.clone()));
        let (cmd_tx, cmd_rx) = mpsc::channel(256);
        let (net_tx, net_rx) = mpsc::channel(256);
        let stop = CancellationToken::new();
        let core = Core::new(
            id,
            opts.clone(),
            reg.clone(),
            self.on_signal,
            features,
            outbox,
            status_tx,
            stop.clone(),
        )?;
        let supervisor = Supervisor {
            id,
            client_id: format!("da-{}-{:08x}", id.as_uuid().simple(), rand::random::<u32>()),
            reg: reg.clone(),
            registrar: registrar.clone(),
            request,
            opts: opts.clone(),
            tx: net_tx,
            stop,
        };
        tokio::spawn(core.run(cmd_rx, net_rx));
        tokio::spawn(supervisor.run());

        let da = Da {
            inner: Arc::new(Inner {
                id,
                cmd: cmd_tx,
                status: status_rx,
                registrar,
                opts: opts.clone(),
            }),
        };
        let budget = match opts.retry {
            Retry::Never => Some(opts.connect_timeout),
            Retry::For(d) => Some(d.max(opts.connect_timeout)),
            Retry::Forever => None,
        };
        let fail_fast = opts.retry == Retry::Never;
        // In a block of its own: the status guard must not live across a later `.await`.
        let online = {
            let mut rx = da.inner.status.clone();
            let wait = rx.wait_for(|s| {
                s.state == ConnState::Online
                    || s.state == ConnState::Stopped
                    || (fail_fast && s.sessions == 0 && s.last_error.is_some())
            });
            let outcome = match budget {
                Some(b) => tokio::time::timeout(b, wait).await.ok(),
                None => Some(wait.await),
            };
            matches!(&outcome, Some(Ok(s)) if s.state == ConnState::Online)
        };
        if online {
            return Ok(da);
        }
        let last = da.status();
        let reason = last
            .last_error
            .clone()
            .unwrap_or_else(|| "no answer in time".to_owned());
        // Leave nothing behind: stop, and withdraw the registration (best effort).
        let _ = da.deregister().await;
        Err(Error::Broker {
            broker: reg.broker_addr(),
            reason,
        })
    }
}

impl Da {
    /// Starts describing a DA that registers at `api_url` (e.g. `http://127.0.0.1:9992`).
    pub fn builder(api_url: impl Into<String>) -> DaBuilder {
        DaBuilder::new(api_url)
    }

    pub fn id(&self) -> DaId {
        self.inner.id
    }

    /// A snapshot of the DA's state.
    pub fn status(&self) -> Status {
        self.inner.status.borrow().clone()
    }

    /// The status channel, to watch changes.
    pub fn watch(&self) -> watch::Receiver<Status> {
        self.inner.status.clone()
    }

    /// Waits until `f` holds for the status; [`Error::Closed`] if the DA stops first.
    pub async fn wait_for(&self, mut f: impl FnMut(&Status) -> bool) -> Result<Status, Error> {
        let mut rx = self.inner.status.clone();
        let r = rx
            .wait_for(|s| f(s) || s.state == ConnState::Stopped)
            .await
            .map(|s| s.clone());
        match r {
            Ok(s) if f(&s) => Ok(s),
            Ok(_) => Err(Error::Closed),
            Err(_) => {
                let s = rx.borrow().clone();
                if f(&s) {
                    Ok(s)
                } else {
                    Err(Error::Closed)
                }
            }
        }
    }

    /// The options the DA was built with.
    pub(crate) fn options(&self) -> &Options {
        &self.inner.opts
    }

    pub(crate) async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, Error>>) -> Cmd,
    ) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .cmd
            .send(make(tx))
            .await
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Pushes a value on an IDF. A list is sent as is; any other value is wrapped into a
    /// one-element list, as the other SDKs do (`42` goes out as `[42]`).
    ///
    /// Returns once the push is in the outbox; it is delivered in order, now or after a
    /// reconnect ([`Da::flush`] waits for delivery). Fails with [`Error::UnknownFeature`],
    /// [`Error::NotConnected`] (no graph links this IDF yet), or [`Error::OutboxFull`].
    pub async fn push(&self, idf: &str, value: impl Serialize) -> Result<(), Error> {
        let payload = encode_sample(value)?;
        let feature = idf.to_owned();
        self.ask(|reply| Cmd::Push {
            feature,
            payload: Bytes::from(payload),
            reply,
        })
        .await
    }

    /// Waits until the broker has acknowledged every push made so far.
    pub async fn flush(&self) -> Result<(), Error> {
        self.wait_for(|s| s.outbox_len == 0).await.map(|_| ())
    }

    /// The data of an ODF as a stream of values decoded into `T` (see [`OdfStream`]).
    /// Every call makes another consumer; each gets every sample.
    pub async fn odf<T: DeserializeOwned>(&self, odf: &str) -> Result<OdfStream<T>, Error> {
        let feature = odf.to_owned();
        let rx = self
            .ask(|reply| Cmd::Odf {
                feature: feature.clone(),
                reply,
            })
            .await?;
        Ok(OdfStream::new(feature, rx))
    }

    /// Calls `f` with each sample of an ODF, decoded into `T`, in a task of its own; a
    /// sample that does not decode is passed as the `Err`. Runs until the DA stops or the
    /// returned task is aborted.
    pub async fn on_odf<T, F>(
        &self,
        odf: &str,
        mut f: F,
    ) -> Result<tokio::task::JoinHandle<()>, Error>
    where
        T: DeserializeOwned + Send + 'static,
        F: FnMut(Result<T, DecodeError>) + Send + 'static,
    {
        let mut stream = self.odf::<T>(odf).await?;
        // The DA's span (see `Core::run`), so that `f`'s events carry `da.id`.
        let span = tracing::error_span!("da", da.id = %self.inner.id);
        let task = async move {
            while let Some(item) = stream.recv().await {
                f(item);
            }
        };
        Ok(tokio::spawn(task.instrument(span)))
    }

    /// Serves `method` to callers of [`Da::call`] (and any MQTT client speaking the format in
    /// `docs/sdk.md`). `args` decode into `A` (else the caller gets a `bad_request` error);
    /// an `Err` from the handler, a panic or a missed deadline becomes an error reply.
    pub async fn serve<A, R, E, F, Fut>(&self, method: &str, handler: F) -> Result<(), Error>
    where
        A: DeserializeOwned + Send + 'static,
        R: Serialize + 'static,
        E: Display + 'static,
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
    {
        iot_proto::topics::check_level(method).map_err(|e| Error::InvalidName(e.to_string()))?;
        let method = method.to_owned();
        let handler = rpc::Served::Once(rpc::handler(handler));
        self.ask(|reply| Cmd::Serve {
            method,
            handler,
            reply,
        })
        .await
    }

    /// Calls `method` on `target` (a DA id or an app's name) with the builder's default
    /// deadline (10 s unless set). See [`Da::call_within`].
    pub async fn call<A: Serialize, R: DeserializeOwned>(
        &self,
        target: &str,
        method: &str,
        args: A,
    ) -> Result<R, Error> {
        self.call_within(target, method, args, self.inner.opts.call_timeout)
            .await
    }

    /// Calls `method` on `target` and waits at most `timeout` for the reply. Fails with
    /// [`Error::Timeout`] (e.g. no such target), [`Error::Remote`] (the target's error
    /// reply) or [`Error::Decode`] (the result does not fit `R`). Dropping the future cancels
    /// the call: a late reply is ignored.
    pub async fn call_within<A: Serialize, R: DeserializeOwned>(
        &self,
        target: &str,
        method: &str,
        args: A,
        timeout: Duration,
    ) -> Result<R, Error> {
        let args = serde_json::to_value(args).map_err(|e| Error::Encode(e.to_string()))?;
        let (t, m) = (target.to_owned(), method.to_owned());
        let asked = self.ask(|reply| Cmd::Call {
            target: t,
            method: m,
            args,
            timeout,
            reply,
        });
        let v = tokio::time::timeout(timeout, asked)
            .await
            .map_err(|_| Error::Timeout {
                target: target.to_owned(),
                method: method.to_owned(),
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            })??;
        let what = format!("the result of `{method}` from `{target}`");
        let bytes = serde_json::to_vec(&v).map_err(|e| Error::Encode(e.to_string()))?;
        // Results decode exactly (no list unwrapping).
        serde_json::from_value(v).map_err(|e| {
            Error::Decode(DecodeError {
                what,
                expected: std::any::type_name::<R>(),
                reason: e.to_string(),
                payload: crate::error::brief(&bytes),
            })
        })
    }

    /// Runs a home target (a device or scene of the controller's home catalog, see
    /// `docs/home.md`) with `cmd` (`on`, `off`, `dim`, `med`, `full`, `dim:N`; empty means
    /// `on`) under the controller's default deadline (`home.deadline_ms`, 5 s unless
    /// configured), and returns its result tree. See [`Da::home_run_within`].
    ///
    /// Waits at most 62 s (the largest deadline the controller may be configured with, plus
    /// [`HOME_REPLY_MARGIN`]); give a deadline to fail sooner when no result comes.
    pub async fn home_run(&self, target: &str, cmd: &str) -> Result<HomeResult, Error> {
        self.home(target, cmd, None).await
    }

    /// Runs a home target with `cmd` under `deadline` (at most 60 s; the controller answers
    /// by then, with unfinished devices marked `deadline`) and returns its result tree.
    ///
    /// A run that failed is still `Ok`: read [`HomeResult::ok`] and
    /// [`HomeResult::failures`] (an unknown target is `ok: false` with `detail`
    /// `unknown target`). `Err` is for what kept a result from arriving:
    /// [`Error::HomeTimeout`] when none came within the deadline plus
    /// [`HOME_REPLY_MARGIN`] (no home handler, or, with authentication on, a controller
    /// whose `home.allow_das` is off: the broker drops the command), [`Error::HomeRefused`]
    /// when the broker refused this DA the results, [`Error::Decode`] for a result that does
    /// not parse, [`Error::InvalidName`] for a target that cannot be a topic level.
    ///
    /// The result comes back on `iottalk/home/res/<DA id>/<nonce>`, a fresh nonce per
    /// command. Dropping the future cancels the wait: a late result is ignored (the
    /// command itself may still run).
    ///
    /// ```no_run
    /// # async fn f(da: da_sdk::Da) -> Result<(), da_sdk::Error> {
    /// let r = da.home_run_within("evening", "dim:40", std::time::Duration::from_secs(3)).await?;
    /// if !r.ok {
    ///     eprintln!("evening failed in part: {}", r.failures().join(", "));
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn home_run_within(
        &self,
        target: &str,
        cmd: &str,
        deadline: Duration,
    ) -> Result<HomeResult, Error> {
        self.home(target, cmd, Some(deadline)).await
    }

    async fn home(
        &self,
        target: &str,
        cmd: &str,
        deadline: Option<Duration>,
    ) -> Result<HomeResult, Error> {
        let (deadline_ms, wait) = home_deadline(deadline);
        let (t, c) = (target.to_owned(), cmd.to_owned());
        let asked = self.ask(|reply| Cmd::Home {
            target: t,
            cmd: c,
            deadline_ms,
            wait,
            reply,
        });
        tokio::time::timeout(wait, asked)
            .await
            .map_err(|_| Error::HomeTimeout {
                target: target.to_owned(),
                timeout_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            })?
    }

    /// Stops the DA's tasks after announcing `offline`; returns the last rev.
    async fn stop(&self) -> Result<Rev, Error> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .cmd
            .send(Cmd::Stop { reply: tx })
            .await
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)
    }

    /// Deregisters: publishes `offline` (retained, and waits for the broker to confirm it),
    /// disconnects, then `DELETE`s the registration. Returns when both are done. Other
    /// handles then fail with [`Error::Closed`].
    pub async fn deregister(&self) -> Result<(), Error> {
        let rev = match self.stop().await {
            Ok(rev) => rev,
            Err(Error::Closed) => self.status().rev,
            Err(e) => return Err(e),
        };
        self.inner
            .registrar
            .deregister(&self.inner.id, &rev)
            .await?;
        tracing::info!(da.id = %self.inner.id, "deregistered");
        Ok(())
    }

    /// Goes offline and disconnects, keeping the registration (the server expires it unless
    /// the DA comes back with the same id). Undelivered pushes stay in an SQLite outbox.
    pub async fn shutdown(&self) -> Result<(), Error> {
        match self.stop().await {
            Ok(_) | Err(Error::Closed) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The payload of one pushed sample: the value as a JSON list (a scalar or object wrapped in
/// one, as the IoTtalk SDKs do), at most [`MAX_PAYLOAD_BYTES`]. [`crate::odf`] decodes it.
pub(crate) fn encode_sample(value: impl Serialize) -> Result<Vec<u8>, Error> {
    let v = serde_json::to_value(value).map_err(|e| Error::Encode(e.to_string()))?;
    let v = match v {
        Value::Array(_) => v,
        other => Value::Array(vec![other]),
    };
    let payload = serde_json::to_vec(&v).map_err(|e| Error::Encode(e.to_string()))?;
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(Error::Encode(format!(
            "the value is {} bytes as JSON; at most {MAX_PAYLOAD_BYTES} fit in one message",
            payload.len()
        )));
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_deadlines_are_capped_and_waited_for_with_a_margin() {
        let s = Duration::from_secs;
        assert_eq!(home_deadline(None), (None, s(62)));
        assert_eq!(
            home_deadline(Some(Duration::from_millis(1500))),
            (Some(1500), Duration::from_millis(3500))
        );
        assert_eq!(home_deadline(Some(s(600))), (Some(60_000), s(62)));
        assert_eq!(home_deadline(Some(Duration::MAX)), (Some(60_000), s(62)));
        // The controller refuses 0.
        assert_eq!(
            home_deadline(Some(Duration::ZERO)),
            (Some(1), Duration::from_millis(2001))
        );
    }
}
