//! Receiving ODF data: [`OdfStream`] (an async stream) and the decoding rule shared with the
//! callback form ([`crate::Da::on_odf`]).
//!
//! Payloads are JSON lists (`[42]`, `[1.5, "tag"]`). A sample decodes into the caller's type
//! `T` from the whole list first (`Vec<f64>`, `(f64, String)`, `serde_json::Value`), else,
//! for a one-element list, from its element (`i64`, `String`, a struct), mirroring how pushes
//! wrap a scalar into a list. Anything else is a [`DecodeError`] item, never a crash.

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::error::{brief, DecodeError};

/// Decodes one sample of `what` (e.g. "data of ODF `X`") into `T`.
pub(crate) fn decode<T: DeserializeOwned>(what: &str, payload: &[u8]) -> Result<T, DecodeError> {
    let err = |reason: String| DecodeError {
        what: what.to_owned(),
        expected: std::any::type_name::<T>(),
        reason,
        payload: brief(payload),
    };
    let v: Value = serde_json::from_slice(payload).map_err(|e| err(format!("not JSON ({e})")))?;
    match serde_json::from_value::<T>(v.clone()) {
        Ok(t) => Ok(t),
        Err(whole) => match v {
            Value::Array(mut a) if a.len() == 1 => {
                serde_json::from_value::<T>(a.remove(0)).map_err(|e| err(e.to_string()))
            }
            _ => Err(err(whole.to_string())),
        },
    }
}

/// The samples of one ODF, decoded into `T`, in arrival order. Ends when the DA stops.
///
/// Implements [`futures::Stream`]; [`OdfStream::recv`] is the same without the trait.
/// A consumer that falls more than the builder's `odf_buffer` samples behind loses the
/// newest ones (counted in [`crate::Status::odf_dropped`]).
#[derive(Debug)]
pub struct OdfStream<T> {
    feature: String,
    what: String,
    rx: mpsc::Receiver<Bytes>,
    _t: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> OdfStream<T> {
    pub(crate) fn new(feature: String, rx: mpsc::Receiver<Bytes>) -> Self {
        Self {
            what: format!("data of ODF `{feature}`"),
            feature,
            rx,
            _t: PhantomData,
        }
    }

    /// The ODF's name.
    pub fn feature(&self) -> &str {
        &self.feature
    }

    /// The next sample; `None` once the DA has stopped.
    pub async fn recv(&mut self) -> Option<Result<T, DecodeError>> {
        let payload = self.rx.recv().await?;
        Some(decode(&self.what, &payload))
    }
}

impl<T: DeserializeOwned> futures::Stream for OdfStream<T> {
    type Item = Result<T, DecodeError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(p)) => Poll::Ready(Some(decode(&self.what, &p))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Reading {
        level: u8,
    }

    #[test]
    fn decodes_lists_and_unwraps_single_values() {
        let w = "data of ODF `X`";
        assert_eq!(decode::<i64>(w, b"[42]").unwrap(), 42);
        assert_eq!(decode::<Vec<i64>>(w, b"[42]").unwrap(), vec![42]);
        assert_eq!(decode::<Value>(w, b"[42]").unwrap(), json!([42]));
        assert_eq!(
            decode::<(f64, String)>(w, br#"[1.5,"t"]"#).unwrap(),
            (1.5, "t".into())
        );
        assert_eq!(
            decode::<Reading>(w, br#"[{"level":3}]"#).unwrap(),
            Reading { level: 3 }
        );
        assert_eq!(decode::<String>(w, br#""bare""#).unwrap(), "bare");
    }

    #[test]
    fn mismatches_are_clear_errors() {
        let e = decode::<i64>("data of ODF `X`", br#"["abc"]"#).unwrap_err();
        assert_eq!(e.expected, "i64");
        assert!(e.to_string().contains("data of ODF `X`"), "{e}");
        assert!(e.to_string().contains(r#"["abc"]"#), "{e}");
        let e = decode::<i64>("w", b"{{{").unwrap_err();
        assert!(e.reason.starts_with("not JSON"), "{e}");
        let e = decode::<i64>("w", b"[1,2]").unwrap_err();
        assert!(e.reason.contains("invalid type"), "{e}");
    }
}
