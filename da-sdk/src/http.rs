//! Client of the server's HTTP registration API (spec section 1): `PUT`, `GET` and `DELETE`
//! `{api_url}/{id}`. Every failure becomes a distinct [`Error`]: unreachable, rejected (with
//! the server's `reason`), or not speaking the protocol. It knows nothing about MQTT.

use std::time::Duration;

use iot_proto::wire::{ErrorBody, RegisterRequest, RegisterResponse};
use iot_proto::{DaId, Rev};
use reqwest::{StatusCode, Url};
use serde_json::Value;

use crate::error::{brief, Error};

/// The registration API of one server.
#[derive(Debug, Clone)]
pub(crate) struct Registrar {
    http: reqwest::Client,
    /// The API URL without a trailing slash.
    base: String,
}

impl Registrar {
    pub fn new(api_url: &str, timeout: Duration) -> Result<Self, Error> {
        let bad = |why: &str| Error::InvalidUrl {
            url: api_url.to_owned(),
            why: why.to_owned(),
        };
        let url = Url::parse(api_url)
            .map_err(|e| bad(&format!("{e} (expected e.g. http://127.0.0.1:9992)")))?;
        match url.scheme() {
            "http" => {}
            "https" if cfg!(feature = "tls") => {}
            "https" => return Err(bad("https needs the `tls` feature of da-sdk")),
            other => {
                return Err(bad(&format!(
                    "scheme `{other}` is not supported: use http:// or https://"
                )))
            }
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("it has no host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("it must not have a query or fragment"));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            .build()
            .map_err(|e| bad(&e.to_string()))?;
        Ok(Self {
            http,
            base: api_url.trim_end_matches('/').to_owned(),
        })
    }

    pub fn url(&self, id: &DaId) -> String {
        format!("{}/{id}", self.base)
    }

    fn unreachable(&self, url: &str, e: &reqwest::Error) -> Error {
        // The innermost cause says what happened ("Connection refused", "dns error").
        let mut reason = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            reason = s.to_string();
            src = s.source();
        }
        if e.is_timeout() {
            reason = format!("no answer in time ({reason})");
        }
        Error::Unreachable {
            url: url.to_owned(),
            reason,
        }
    }

    /// Turns a non-success reply into [`Error::Rejected`] with the server's `reason`.
    async fn rejected(&self, url: &str, resp: reqwest::Response) -> Error {
        let status = resp.status();
        let body = resp.bytes().await.unwrap_or_default();
        rejection(status, url, &body)
    }

    /// `PUT /{id}`: registers or re-registers.
    pub async fn register(
        &self,
        id: &DaId,
        req: &RegisterRequest,
    ) -> Result<RegisterResponse, Error> {
        let url = self.url(id);
        let resp = self
            .http
            .put(&url)
            .json(&req.to_json())
            .send()
            .await
            .map_err(|e| self.unreachable(&url, &e))?;
        if resp.status() != StatusCode::OK {
            return Err(self.rejected(&url, resp).await);
        }
        let body = resp.bytes().await.map_err(|e| self.unreachable(&url, &e))?;
        registration_reply(&url, id, &body)
    }

    /// `GET /{id}`: the current rev, or `None` when the server does not know the id.
    pub async fn current_rev(&self, id: &DaId) -> Result<Option<Rev>, Error> {
        let url = self.url(id);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| self.unreachable(&url, &e))?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::OK => {
                let body = resp.bytes().await.map_err(|e| self.unreachable(&url, &e))?;
                record_rev(&url, &body).map(Some)
            }
            _ => Err(self.rejected(&url, resp).await),
        }
    }

    /// `DELETE /{id}` with `rev`. An id the server no longer knows counts as deleted.
    pub async fn deregister(&self, id: &DaId, rev: &Rev) -> Result<(), Error> {
        let url = self.url(id);
        let resp = self
            .http
            .delete(&url)
            .json(&serde_json::json!({ "rev": rev }))
            .send()
            .await
            .map_err(|e| self.unreachable(&url, &e))?;
        match resp.status() {
            StatusCode::OK => Ok(()),
            StatusCode::NOT_FOUND => {
                tracing::debug!(da.id = %id, "deregister: the server no longer knows this DA");
                Ok(())
            }
            _ => Err(self.rejected(&url, resp).await),
        }
    }
}

/// The body of a `PUT /{id}` answered 200: a registration reply about `id`.
pub(crate) fn registration_reply(
    url: &str,
    id: &DaId,
    body: &[u8],
) -> Result<RegisterResponse, Error> {
    let reg: RegisterResponse = serde_json::from_slice(body).map_err(|e| Error::Protocol {
        url: url.to_owned(),
        why: format!("not a registration reply ({e}): {}", brief(body)),
    })?;
    if reg.id != *id {
        return Err(Error::Protocol {
            url: url.to_owned(),
            why: format!("the reply is about another id ({})", reg.id),
        });
    }
    Ok(reg)
}

/// The `rev` of the record a `GET /{id}` answered 200 with.
pub(crate) fn record_rev(url: &str, body: &[u8]) -> Result<Rev, Error> {
    let v: Value = serde_json::from_slice(body).map_err(|e| Error::Protocol {
        url: url.to_owned(),
        why: format!("not a registration record ({e}): {}", brief(body)),
    })?;
    match v.get("rev").and_then(Value::as_str) {
        Some(r) => Ok(Rev::from(r.to_owned())),
        None => Err(Error::Protocol {
            url: url.to_owned(),
            why: "the record has no `rev`".into(),
        }),
    }
}

/// [`Error::Rejected`] for a failed request: the server's `reason` from an IoTtalk error
/// body, else the start of whatever it sent.
pub(crate) fn rejection(status: StatusCode, url: &str, body: &[u8]) -> Error {
    let reason = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => e.reason,
        Err(_) => format!(
            "HTTP {status} from {url}, not an IoTtalk error body (is the API URL right?): {}",
            brief(body)
        ),
    };
    Error::Rejected {
        status: status.as_u16(),
        reason,
    }
}

/// Whether a failed registration is worth retrying (the server may come back).
pub(crate) fn retryable(e: &Error) -> bool {
    match e {
        Error::Unreachable { .. } => true,
        Error::Rejected { status, .. } => *status >= 500,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_at_the_edge() {
        let t = Duration::from_secs(1);
        let ok = Registrar::new("http://127.0.0.1:9992/", t).unwrap();
        let id: DaId = "df682f01-7c3a-49fd-8f5f-72ce0b6e68c0".parse().unwrap();
        assert_eq!(
            ok.url(&id),
            "http://127.0.0.1:9992/df682f01-7c3a-49fd-8f5f-72ce0b6e68c0"
        );
        let prefixed = Registrar::new("http://h/csm", t).unwrap();
        assert_eq!(prefixed.url(&id), format!("http://h/csm/{id}"));
        for (bad, want) in [
            ("127.0.0.1:9992", "relative URL"),
            ("localhost:9992", "not supported"),
            ("not a url", "relative URL"),
            ("ftp://h/", "not supported"),
            ("http://h/?x=1", "query"),
            ("", "relative URL"),
        ] {
            let e = Registrar::new(bad, t).unwrap_err().to_string();
            assert!(e.contains(want), "{bad:?}: {e} should mention {want}");
        }
    }
}
