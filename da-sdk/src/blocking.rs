//! The SDK for programs without an async runtime: [`Da`] wraps the async [`crate::Da`] and
//! a small tokio runtime of its own (one worker thread) that runs the DA's tasks; [`KeyClient`]
//! does the same for [`crate::KeyClient`].
//! Do not use it from inside an async context (it blocks the calling thread).
//!
//! ```no_run
//! fn main() -> Result<(), da_sdk::Error> {
//!     let da = da_sdk::Da::builder("http://127.0.0.1:9992")
//!         .model("Dummy_Device")
//!         .odf("Dummy_Control", ())
//!         .connect_blocking()?;
//!     for sample in da.odf::<serde_json::Value>("Dummy_Control")? {
//!         println!("{}", sample?);
//!     }
//!     Ok(())
//! }
//! ```

use std::fmt::Display;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use iot_proto::home::HomeResult;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::runtime::Runtime;
use zeroize::Zeroizing;

use crate::config::DaBuilder;
use crate::error::{DecodeError, Error};
use crate::files::{FileOptions, ServeFiles};
use crate::keys::{KeyClientBuilder, KeyError};
use crate::odf::OdfStream;
use crate::status::Status;
use crate::streams::{CallStream, StreamOptions};

fn runtime() -> Result<Arc<Runtime>, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("da-sdk")
        .enable_all()
        .build()
        .map(Arc::new)
        .map_err(|e| format!("cannot start the SDK's runtime: {e}"))
}

impl DaBuilder {
    /// [`DaBuilder::connect`] for programs without an async runtime.
    pub fn connect_blocking(self) -> Result<Da, Error> {
        let rt = runtime().map_err(Error::Config)?;
        let inner = rt.block_on(self.connect())?;
        Ok(Da { rt, inner })
    }
}

impl KeyClientBuilder {
    /// [`KeyClientBuilder::build`] for programs without an async runtime.
    pub fn build_blocking(self) -> Result<KeyClient, KeyError> {
        let inner = self.build()?;
        let rt = runtime().map_err(KeyError::Config)?;
        Ok(KeyClient { rt, inner })
    }
}

/// A keymanager client driven from blocking code. Clone it freely.
///
/// ```no_run
/// let keys = da_sdk::KeyClient::builder(
///     "mqtt://127.0.0.1:1883",
///     "backup",
///     da_sdk::Zeroizing::new("the client's password".to_owned()),
/// )
/// .build_blocking()?;
/// let db_password = keys.get("db")?;
/// # Ok::<(), da_sdk::KeyError>(())
/// ```
#[derive(Debug, Clone)]
pub struct KeyClient {
    rt: Arc<Runtime>,
    inner: crate::KeyClient,
}

impl KeyClient {
    /// The async client (e.g. to hand to code that has a runtime).
    pub fn as_async(&self) -> &crate::KeyClient {
        &self.inner
    }

    /// See [`crate::KeyClient::get`].
    pub fn get(&self, name: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        self.rt.block_on(self.inner.get(name))
    }
}

/// A running DA driven from blocking code. Clone it freely.
#[derive(Debug, Clone)]
pub struct Da {
    rt: Arc<Runtime>,
    inner: crate::Da,
}

impl Da {
    /// The async handle (e.g. to hand to code that has a runtime).
    pub fn as_async(&self) -> &crate::Da {
        &self.inner
    }

    pub fn id(&self) -> crate::DaId {
        self.inner.id()
    }

    pub fn status(&self) -> Status {
        self.inner.status()
    }

    /// Waits until `f` holds for the status, at most `timeout`; `Ok(None)` on timeout.
    pub fn wait_for(
        &self,
        f: impl FnMut(&Status) -> bool,
        timeout: Duration,
    ) -> Result<Option<Status>, Error> {
        self.rt
            .block_on(async { tokio::time::timeout(timeout, self.inner.wait_for(f)).await })
            .map_or(Ok(None), |r| r.map(Some))
    }

    /// See [`crate::Da::push`].
    pub fn push(&self, idf: &str, value: impl Serialize) -> Result<(), Error> {
        self.rt.block_on(self.inner.push(idf, value))
    }

    /// See [`crate::Da::flush`].
    pub fn flush(&self) -> Result<(), Error> {
        self.rt.block_on(self.inner.flush())
    }

    /// The samples of an ODF, as a blocking iterator.
    pub fn odf<T: DeserializeOwned>(&self, odf: &str) -> Result<OdfReceiver<T>, Error> {
        let stream = self.rt.block_on(self.inner.odf(odf))?;
        Ok(OdfReceiver {
            rt: self.rt.clone(),
            stream,
        })
    }

    /// Serves `method` with a blocking handler (run on the runtime's blocking threads).
    pub fn serve<A, R, E, F>(&self, method: &str, handler: F) -> Result<(), Error>
    where
        A: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        E: Display + Send + 'static,
        F: Fn(A) -> Result<R, E> + Send + Sync + 'static,
    {
        let handler = Arc::new(handler);
        self.rt.block_on(self.inner.serve(method, move |a: A| {
            let h = handler.clone();
            async move {
                // The request's span (the DA's) on the blocking thread too.
                let span = tracing::Span::current();
                match tokio::task::spawn_blocking(move || span.in_scope(|| h(a))).await {
                    Ok(Ok(r)) => Ok(r),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("the handler panicked".to_owned()),
                }
            }
        }))
    }

    /// See [`crate::Da::call`].
    pub fn call<A: Serialize, R: DeserializeOwned>(
        &self,
        target: &str,
        method: &str,
        args: A,
    ) -> Result<R, Error> {
        self.rt.block_on(self.inner.call(target, method, args))
    }

    /// See [`crate::Da::call_within`].
    pub fn call_within<A: Serialize, R: DeserializeOwned>(
        &self,
        target: &str,
        method: &str,
        args: A,
        timeout: Duration,
    ) -> Result<R, Error> {
        self.rt
            .block_on(self.inner.call_within(target, method, args, timeout))
    }

    /// Serves `method` as a stream from a blocking iterator, pulled on one of the runtime's
    /// blocking threads as the caller's window allows (at most two items ahead of it; see
    /// [`crate::Da::serve_stream`]). A cancelled call stops pulling once the iterator's
    /// `next` returns; a panic in it ends the stream with a `handler` error.
    pub fn serve_stream<A, T, E, F, I>(&self, method: &str, producer: F) -> Result<(), Error>
    where
        A: DeserializeOwned + Send + 'static,
        T: Serialize + Send + 'static,
        E: Display + Send + 'static,
        F: Fn(A) -> I + Send + Sync + 'static,
        I: IntoIterator<Item = Result<T, E>> + 'static,
        I::IntoIter: Send + 'static,
    {
        let producer = Arc::new(producer);
        self.rt
            .block_on(self.inner.serve_stream(method, move |a: A| {
                let (tx, rx) = tokio::sync::mpsc::channel(1);
                let p = producer.clone();
                let span = tracing::Span::current();
                tokio::task::spawn_blocking(move || {
                    let pull = std::panic::AssertUnwindSafe(|| {
                        span.in_scope(|| {
                            for item in p(a) {
                                // The reader went away: stop pulling.
                                if tx.blocking_send(item.map_err(|e| e.to_string())).is_err() {
                                    return;
                                }
                            }
                        })
                    });
                    if std::panic::catch_unwind(pull).is_err() {
                        let _ = tx.blocking_send(Err("the producer panicked".to_owned()));
                    }
                });
                tokio_stream_from(rx)
            }))
    }

    /// See [`crate::Da::call_stream`]; the items as a blocking iterator.
    pub fn call_stream<A: Serialize, T: DeserializeOwned>(
        &self,
        target: &str,
        method: &str,
        args: A,
    ) -> Result<StreamIter<T>, Error> {
        self.call_stream_with(target, method, args, StreamOptions::default())
    }

    /// See [`crate::Da::call_stream_with`].
    pub fn call_stream_with<A: Serialize, T: DeserializeOwned>(
        &self,
        target: &str,
        method: &str,
        args: A,
        options: StreamOptions,
    ) -> Result<StreamIter<T>, Error> {
        let stream = self
            .rt
            .block_on(self.inner.call_stream_with(target, method, args, options))?;
        Ok(StreamIter {
            rt: self.rt.clone(),
            stream,
        })
    }

    /// See [`crate::Da::serve_files_with`].
    pub fn serve_files_with(
        &self,
        dir: impl AsRef<Path>,
        options: ServeFiles,
    ) -> Result<(), Error> {
        self.rt.block_on(self.inner.serve_files_with(dir, options))
    }

    /// See [`crate::Da::send_file_with`].
    pub fn send_file_with(
        &self,
        target: &str,
        local: impl AsRef<Path>,
        remote_name: &str,
        options: FileOptions,
    ) -> Result<u64, Error> {
        self.rt.block_on(
            self.inner
                .send_file_with(target, local, remote_name, options),
        )
    }

    /// See [`crate::Da::fetch_file_with`].
    pub fn fetch_file_with(
        &self,
        target: &str,
        remote_name: &str,
        local: impl AsRef<Path>,
        options: FileOptions,
    ) -> Result<u64, Error> {
        self.rt.block_on(
            self.inner
                .fetch_file_with(target, remote_name, local, options),
        )
    }

    /// See [`crate::Da::home_run`].
    pub fn home_run(&self, target: &str, cmd: &str) -> Result<HomeResult, Error> {
        self.rt.block_on(self.inner.home_run(target, cmd))
    }

    /// See [`crate::Da::home_run_within`].
    pub fn home_run_within(
        &self,
        target: &str,
        cmd: &str,
        deadline: Duration,
    ) -> Result<HomeResult, Error> {
        self.rt
            .block_on(self.inner.home_run_within(target, cmd, deadline))
    }

    /// See [`crate::Da::deregister`].
    pub fn deregister(&self) -> Result<(), Error> {
        self.rt.block_on(self.inner.deregister())
    }

    /// See [`crate::Da::shutdown`].
    pub fn shutdown(&self) -> Result<(), Error> {
        self.rt.block_on(self.inner.shutdown())
    }
}

/// A receiver as a stream (what `tokio-stream`'s wrapper does, without the crate).
fn tokio_stream_from<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}

/// The items of a streamed call for blocking code (see [`CallStream`]); dropping it cancels
/// the call.
#[derive(Debug)]
pub struct StreamIter<T> {
    rt: Arc<Runtime>,
    stream: CallStream<T>,
}

impl<T: DeserializeOwned> Iterator for StreamIter<T> {
    type Item = Result<T, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        self.rt.block_on(futures::StreamExt::next(&mut self.stream))
    }
}

/// The samples of one ODF for blocking code; also an [`Iterator`] that ends when the DA stops.
#[derive(Debug)]
pub struct OdfReceiver<T> {
    rt: Arc<Runtime>,
    stream: OdfStream<T>,
}

impl<T: DeserializeOwned> OdfReceiver<T> {
    /// The next sample; `None` once the DA has stopped.
    pub fn recv(&mut self) -> Option<Result<T, DecodeError>> {
        self.rt.block_on(self.stream.recv())
    }

    /// The next sample, waiting at most `timeout`.
    pub fn recv_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<Result<T, DecodeError>>, tokio::time::error::Elapsed> {
        self.rt
            .block_on(async { tokio::time::timeout(timeout, self.stream.recv()).await })
    }
}

impl<T: DeserializeOwned> Iterator for OdfReceiver<T> {
    type Item = Result<T, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.recv()
    }
}
