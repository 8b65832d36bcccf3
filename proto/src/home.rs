//! Home scenes over MQTT (docs/home.md): a request on `iottalk/home/cmd/<target>` (a plain
//! command such as `on` or `dim:40`, or a JSON [`HomeRequest`]), exactly one [`HomeResult`]
//! in reply on its `reply_to` (or the MQTT 5 response topic), else on
//! `iottalk/home/res/<target>`; device states retained on `iottalk/home/state/<device>` and
//! the catalog retained on `iottalk/home/catalog`.

use serde::{Deserialize, Serialize};

/// Filter the home handler subscribes to.
pub const CMD_FILTER: &str = "iottalk/home/cmd/+";
/// The retained catalog of devices and scenes.
pub const CATALOG: &str = "iottalk/home/catalog";
/// Every reply topic (default and custom) lies under this prefix.
pub const RES_PREFIX: &str = "iottalk/home/res/";
const CMD_PREFIX: &str = "iottalk/home/cmd/";
const STATE_PREFIX: &str = "iottalk/home/state/";

/// Largest request accepted, in bytes.
pub const MAX_REQUEST_BYTES: usize = 4096;
/// Largest `deadline_ms`.
pub const MAX_DEADLINE_MS: u64 = 60_000;

/// `iottalk/home/cmd/<target>`.
pub fn cmd(target: &str) -> String {
    format!("{CMD_PREFIX}{target}")
}

/// The target a command topic names (`None`: not a command topic, or an empty target).
pub fn parse_cmd(topic: &str) -> Option<&str> {
    topic
        .strip_prefix(CMD_PREFIX)
        .filter(|t| !t.is_empty() && !t.contains('/'))
}

/// `iottalk/home/res/<target>`: where a reply goes when the request names no reply topic.
pub fn res(target: &str) -> String {
    format!("{RES_PREFIX}{target}")
}

/// `iottalk/home/res/<owner>/<nonce>`: the reply topic of one request of a client that keeps
/// its replies under its own name (a DA: its id, the only part of `iottalk/home/res/` the
/// controller's ACL lets it read).
pub fn owned_res(owner: &str, nonce: &str) -> String {
    format!("{RES_PREFIX}{owner}/{nonce}")
}

/// `iottalk/home/res/<owner>/+`: every reply topic [`owned_res`] makes for `owner`.
pub fn owned_res_filter(owner: &str) -> String {
    format!("{RES_PREFIX}{owner}/+")
}

/// The nonce of a topic [`owned_res`] made for `owner` (`None`: another topic).
pub fn parse_owned_res<'a>(owner: &str, topic: &'a str) -> Option<&'a str> {
    topic
        .strip_prefix(RES_PREFIX)?
        .strip_prefix(owner)?
        .strip_prefix('/')
        .filter(|n| !n.is_empty() && !n.contains('/'))
}

/// `iottalk/home/state/<device>`.
pub fn state(device: &str) -> String {
    format!("{STATE_PREFIX}{device}")
}

/// Whether `topic` may receive replies: a topic name (no wildcard) under `iottalk/home/res/`.
/// The handler publishes with the controller's rights, so a request cannot point its reply
/// at a DA's control channel or anyone else's topic.
pub fn valid_reply_topic(topic: &str) -> bool {
    topic.len() > RES_PREFIX.len()
        && topic.len() <= 512
        && topic.starts_with(RES_PREFIX)
        && !topic.contains(['#', '+', '\0'])
        && topic.split('/').count() <= MAX_REPLY_LEVELS
}

/// The most levels a reply topic may have (well under any broker's limit).
pub const MAX_REPLY_LEVELS: usize = 16;

/// A JSON request. Every field is optional; a plain-text payload is the same as `{"cmd": text}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeRequest {
    /// `on`, `off`, `dim`, `med`, `full`, `dim:N`; empty or absent means `on`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    /// Echoed in the reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Where the reply goes (under `iottalk/home/res/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// The whole run's deadline, at most [`MAX_DEADLINE_MS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
}

impl HomeRequest {
    /// Reads a payload: a JSON object is a request, anything else a plain command. `Err` is
    /// the reason for the `ok: false` reply, with whatever request could still be read
    /// (its `id` and `reply_to` are honoured when they parse).
    pub fn parse(payload: &[u8]) -> Result<HomeRequest, (HomeRequest, String)> {
        if payload.len() > MAX_REQUEST_BYTES {
            return Err((
                HomeRequest::default(),
                format!(
                    "request too large ({} bytes, at most {MAX_REQUEST_BYTES})",
                    payload.len()
                ),
            ));
        }
        let Ok(text) = std::str::from_utf8(payload) else {
            return Err((HomeRequest::default(), "request is not UTF-8".into()));
        };
        let trimmed = text.trim();
        if !trimmed.starts_with('{') {
            return Ok(HomeRequest {
                cmd: Some(trimmed.to_owned()),
                ..HomeRequest::default()
            });
        }
        match serde_json::from_str::<HomeRequest>(trimmed) {
            Ok(r) => match r.deadline_ms {
                Some(d) if d == 0 || d > MAX_DEADLINE_MS => Err((
                    HomeRequest {
                        deadline_ms: None,
                        ..r
                    },
                    format!("`deadline_ms` must be 1 to {MAX_DEADLINE_MS}"),
                )),
                _ => Ok(r),
            },
            Err(e) => {
                // Salvage `id` and `reply_to` so the refusal reaches the asker.
                let partial = serde_json::from_str::<serde_json::Value>(trimmed)
                    .ok()
                    .map(|v| HomeRequest {
                        id: v.get("id").and_then(|x| x.as_str()).map(str::to_owned),
                        reply_to: v
                            .get("reply_to")
                            .and_then(|x| x.as_str())
                            .map(str::to_owned),
                        ..HomeRequest::default()
                    })
                    .unwrap_or_default();
                Err((partial, format!("malformed request: {e}")))
            }
        }
    }
}

/// The result of running a target: for a scene, one child per item, down to the devices.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HomeResult {
    /// The request's `id` (or MQTT 5 correlation data as UTF-8); empty when none.
    #[serde(default)]
    pub id: String,
    pub target: String,
    /// The command run, in canonical form (`on`, `off`, `dim:N`).
    pub cmd: String,
    /// True only when every leaf succeeded.
    pub ok: bool,
    /// Milliseconds from the start of the run until this target finished.
    pub ms: u64,
    /// Why it failed (`connection refused`, `err_code 1`, `HTTP 500`, `deadline`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// With `detail: "rate limited"`: when to try again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<HomeResult>,
}

impl HomeResult {
    /// The leaves that failed, as `target: detail` (depth first).
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect_failures(&mut out);
        out
    }

    fn collect_failures(&self, out: &mut Vec<String>) {
        if self.children.is_empty() {
            if !self.ok {
                out.push(format!(
                    "{}: {}",
                    self.target,
                    self.detail.as_deref().unwrap_or("failed")
                ));
            }
        } else {
            self.children.iter().for_each(|c| c.collect_failures(out));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics() {
        assert_eq!(cmd("evening"), "iottalk/home/cmd/evening");
        assert_eq!(parse_cmd("iottalk/home/cmd/evening"), Some("evening"));
        assert_eq!(parse_cmd("iottalk/home/cmd/"), None);
        assert_eq!(parse_cmd("iottalk/home/res/x"), None);
        assert!(valid_reply_topic("iottalk/home/res/me/1"));
        assert!(!valid_reply_topic("iottalk/home/res/"));
        assert!(!valid_reply_topic("iottalk/home/res/#"));
        assert!(!valid_reply_topic("0f7ee2b4/ctrl/o"));
        assert!(!valid_reply_topic(&format!(
            "iottalk/home/res/{}",
            "a/".repeat(20)
        )));
        let mine = owned_res("da1", "n1");
        assert_eq!(mine, "iottalk/home/res/da1/n1");
        assert!(valid_reply_topic(&mine));
        assert!(crate::topics::matches(&owned_res_filter("da1"), &mine));
        assert_eq!(parse_owned_res("da1", &mine), Some("n1"));
        assert_eq!(parse_owned_res("da2", &mine), None);
        assert_eq!(parse_owned_res("da", &mine), None);
        assert_eq!(parse_owned_res("da1", "iottalk/home/res/da1/"), None);
        assert_eq!(parse_owned_res("da1", "iottalk/home/res/da1/n/x"), None);
    }

    #[test]
    fn requests_plain_and_json() {
        assert_eq!(
            HomeRequest::parse(b" dim:40 ").unwrap().cmd.as_deref(),
            Some("dim:40")
        );
        assert_eq!(HomeRequest::parse(b"").unwrap().cmd.as_deref(), Some(""));
        let r = HomeRequest::parse(
            br#"{"cmd":"off","id":"7","reply_to":"iottalk/home/res/me","deadline_ms":900}"#,
        )
        .unwrap();
        assert_eq!(r.id.as_deref(), Some("7"));
        assert_eq!(r.deadline_ms, Some(900));
        let (partial, why) = HomeRequest::parse(br#"{"id":"8","bogus":1}"#).unwrap_err();
        assert_eq!(partial.id.as_deref(), Some("8"));
        assert!(
            why.starts_with("malformed request: unknown field `bogus`"),
            "{why}"
        );
        let (partial, why) = HomeRequest::parse(br#"{"id":"9","deadline_ms":0}"#).unwrap_err();
        assert_eq!(partial.id.as_deref(), Some("9"));
        assert!(why.contains("deadline_ms"), "{why}");
        assert!(HomeRequest::parse(b"{").is_err());
        assert!(HomeRequest::parse(&[0xff]).is_err());
        assert!(HomeRequest::parse(&vec![b'a'; 5000]).is_err());
    }

    #[test]
    fn results_serialize_without_empty_parts() {
        let r = HomeResult {
            id: "1".into(),
            target: "evening".into(),
            cmd: "on".into(),
            ok: false,
            ms: 12,
            children: vec![HomeResult {
                target: "lamp".into(),
                cmd: "dim:30".into(),
                detail: Some("connection refused".into()),
                ..HomeResult::default()
            }],
            ..HomeResult::default()
        };
        let v = serde_json::to_value(&r).unwrap();
        assert!(v.get("detail").is_none());
        assert_eq!(v["children"][0]["detail"], "connection refused");
        assert!(v["children"][0].get("children").is_none());
        assert_eq!(r.failures(), ["lamp: connection refused"]);
        let back: HomeResult = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }
}
