//! Every MQTT topic of the protocol, built and parsed here and nowhere else.
//!
//! - control channels: `<id>/ctrl/i` (DA -> CSM) and `<id>/ctrl/o` (CSM -> DA);
//! - APIs (`graph/<gid>`, `device`, `odf`): `iottalk/api/req/<client>/<api>` answered on
//!   `iottalk/api/res/<client>/<api>`;
//! - data: one opaque topic per link, `iottalk/esm/<uuid>`;
//! - monitor: `iottalk/monitor/<uuid>`;
//! - request/response between DAs and apps: `iottalk/rpc/<target>/req`, answered on the
//!   caller's own `iottalk/rpc/<caller>/res/<nonce>`.

use uuid::Uuid;

use crate::ids::DaId;

/// Filter the CSM subscribes to for every DA's uplink control channel.
pub const CTRL_I_FILTER: &str = "+/ctrl/i";
/// Filter for graph API requests of every client and graph.
pub const GRAPH_REQ_FILTER: &str = "iottalk/api/req/+/graph/+";
/// Filter for device API requests of every client.
pub const DEVICE_REQ_FILTER: &str = "iottalk/api/req/+/device";
/// Filter for ODF-write API requests of every client.
pub const ODF_REQ_FILTER: &str = "iottalk/api/req/+/odf";

const API_REQ_PREFIX: &str = "iottalk/api/req/";
const API_RES_PREFIX: &str = "iottalk/api/res/";

/// `<id>/ctrl/i`: the DA's uplink (online/offline states, replies to signals).
pub fn ctrl_i(id: &DaId) -> String {
    format!("{id}/ctrl/i")
}

/// `<id>/ctrl/o`: the DA's downlink (CONNECT/DISCONNECT signals).
pub fn ctrl_o(id: &DaId) -> String {
    format!("{id}/ctrl/o")
}

/// The two control channels in the order the registration reply lists them.
pub fn ctrl_chans(id: &DaId) -> [String; 2] {
    [ctrl_i(id), ctrl_o(id)]
}

/// Which DA an uplink topic belongs to. `Err` carries the id part when it is not a valid id;
/// `None` means the topic is not an uplink control channel at all.
pub fn parse_ctrl_i(topic: &str) -> Option<Result<DaId, &str>> {
    let id = topic.strip_suffix("/ctrl/i")?;
    if id.contains('/') {
        return None;
    }
    Some(id.parse().map_err(|_| id))
}

/// A request topic of the MQTT API, split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiRequest<'a> {
    /// `iottalk/api/req/<client>/graph/<gid>`
    Graph { client: &'a str, gid: &'a str },
    /// `iottalk/api/req/<client>/device`
    Device { client: &'a str },
    /// `iottalk/api/req/<client>/odf`
    Odf { client: &'a str },
}

impl<'a> ApiRequest<'a> {
    pub fn parse(topic: &'a str) -> Option<Self> {
        let rest = topic.strip_prefix(API_REQ_PREFIX)?;
        let mut parts = rest.split('/');
        let client = parts.next().filter(|c| !c.is_empty())?;
        match (parts.next(), parts.next(), parts.next()) {
            (Some("device"), None, None) => Some(Self::Device { client }),
            (Some("odf"), None, None) => Some(Self::Odf { client }),
            (Some("graph"), Some(gid), None) if !gid.is_empty() => {
                Some(Self::Graph { client, gid })
            }
            _ => None,
        }
    }

    /// The topic the reply goes to.
    pub fn response_topic(&self) -> String {
        match self {
            Self::Graph { client, gid } => format!("{API_RES_PREFIX}{client}/graph/{gid}"),
            Self::Device { client } => device_res(client),
            Self::Odf { client } => odf_res(client),
        }
    }
}

/// Request topic of the device API for `client`.
pub fn device_req(client: &str) -> String {
    format!("{API_REQ_PREFIX}{client}/device")
}

/// Response topic of the device API for `client`.
pub fn device_res(client: &str) -> String {
    format!("{API_RES_PREFIX}{client}/device")
}

/// Request topic of the ODF-write API for `client`.
pub fn odf_req(client: &str) -> String {
    format!("{API_REQ_PREFIX}{client}/odf")
}

/// Response topic of the ODF-write API for `client`.
pub fn odf_res(client: &str) -> String {
    format!("{API_RES_PREFIX}{client}/odf")
}

/// Request topic of the graph API for `client` and graph `gid`.
pub fn graph_req(client: &str, gid: &str) -> String {
    format!("{API_REQ_PREFIX}{client}/graph/{gid}")
}

/// Response topic of the graph API for `client` and graph `gid`.
pub fn graph_res(client: &str, gid: &str) -> String {
    format!("{API_RES_PREFIX}{client}/graph/{gid}")
}

/// Whether `topic` is a reply topic of an API (`iottalk/api/res/...`).
pub fn is_api_res(topic: &str) -> bool {
    topic.starts_with(API_RES_PREFIX)
}

/// Filter of every graph-API response topic of `client`.
pub fn graph_res_filter(client: &str) -> String {
    format!("{API_RES_PREFIX}{client}/graph/+")
}

/// A fresh opaque data topic for one link.
pub fn new_data_topic() -> String {
    format!("iottalk/esm/{}", Uuid::new_v4())
}

/// A fresh monitor topic for one graph.
pub fn new_monitor_topic() -> String {
    format!("iottalk/monitor/{}", Uuid::new_v4())
}

const RPC_PREFIX: &str = "iottalk/rpc/";

/// Longest name accepted as one topic level of an RPC topic (a target or caller), in bytes.
pub const MAX_RPC_NAME_BYTES: usize = 256;

/// Why a name cannot be used as one level of an RPC topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("invalid name `{name}`: {why}")]
    InvalidLevel { name: String, why: &'static str },
}

/// Checks that `name` can be one topic level: non-empty, at most 256 bytes, without `/`,
/// the wildcards `+` and `#`, a leading `$`, or control characters.
pub fn check_level(name: &str) -> Result<(), TopicError> {
    let why = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_RPC_NAME_BYTES {
        Some("it is longer than 256 bytes")
    } else if name.contains(['/', '+', '#']) {
        Some("it contains `/`, `+` or `#`")
    } else if name.starts_with('$') {
        Some("it starts with `$`")
    } else if name.chars().any(char::is_control) {
        Some("it contains a control character")
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => Err(TopicError::InvalidLevel {
            name: name.chars().take(64).collect(),
            why,
        }),
    }
}

/// `iottalk/rpc/<target>/req`: where requests for `target` (a DA id or an app name) go.
pub fn rpc_req(target: &str) -> Result<String, TopicError> {
    check_level(target)?;
    Ok(format!("{RPC_PREFIX}{target}/req"))
}

/// `iottalk/rpc/<caller>/res/<nonce>`: where the replies to one caller instance go. The
/// nonce is fresh per process, so two instances of one caller never see each other's replies.
pub fn rpc_res(caller: &str, nonce: &str) -> Result<String, TopicError> {
    check_level(caller)?;
    check_level(nonce)?;
    Ok(format!("{RPC_PREFIX}{caller}/res/{nonce}"))
}

/// Whether `topic` matches the MQTT filter `filter` (`+` one level, `#` the rest).
/// Topics starting with `$` match only filters that name that first level explicitly.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && !filter.starts_with('$') {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether `filter` is a valid MQTT topic filter.
pub fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    let last = levels.len() - 1;
    levels.iter().enumerate().all(|(i, l)| match *l {
        "#" => i == last,
        "+" => true,
        l => !l.contains(['#', '+']),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctrl_topics_round_trip() {
        let id: DaId = "df682f01-7c3a-49fd-8f5f-72ce0b6e68c0"
            .parse()
            .unwrap_or_else(|_| DaId::new_v4());
        assert_eq!(parse_ctrl_i(&ctrl_i(&id)), Some(Ok(id)));
        assert_eq!(parse_ctrl_i("garbage/ctrl/i"), Some(Err("garbage")));
        assert_eq!(parse_ctrl_i(&ctrl_o(&id)), None);
        assert_eq!(parse_ctrl_i("a/b/ctrl/i"), None);
    }

    #[test]
    fn api_topics_parse() {
        assert_eq!(
            ApiRequest::parse("iottalk/api/req/gui/graph/1"),
            Some(ApiRequest::Graph {
                client: "gui",
                gid: "1"
            })
        );
        assert_eq!(
            ApiRequest::parse("iottalk/api/req/ccm/device"),
            Some(ApiRequest::Device { client: "ccm" })
        );
        assert_eq!(ApiRequest::parse("iottalk/api/req//device"), None);
        let odf = ApiRequest::parse("iottalk/api/req/ccm/odf");
        assert_eq!(odf, Some(ApiRequest::Odf { client: "ccm" }));
        assert_eq!(odf.unwrap().response_topic(), odf_res("ccm"));
        assert_eq!(odf_req("ccm"), "iottalk/api/req/ccm/odf");
        assert!(matches(ODF_REQ_FILTER, &odf_req("ccm")));
        assert_eq!(ApiRequest::parse("iottalk/api/req/ccm/odf/x"), None);
        assert_eq!(ApiRequest::parse("iottalk/api/req/gui/graph/1/x"), None);
        assert_eq!(
            ApiRequest::Graph {
                client: "gui",
                gid: "1"
            }
            .response_topic(),
            "iottalk/api/res/gui/graph/1"
        );
    }

    #[test]
    fn rpc_topics_refuse_bad_levels() {
        assert_eq!(rpc_req("lamp-1").unwrap(), "iottalk/rpc/lamp-1/req");
        assert_eq!(rpc_res("app", "n1").unwrap(), "iottalk/rpc/app/res/n1");
        for bad in ["", "a/b", "a+", "#", "$SYS", "a\nb"] {
            assert!(rpc_req(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(rpc_req(&"x".repeat(257)).is_err());
        assert!(rpc_res("ok", "").is_err());
    }

    #[test]
    fn filters_match_like_mqtt() {
        assert!(matches("+/ctrl/i", "abc/ctrl/i"));
        assert!(!matches("+/ctrl/i", "abc/ctrl/o"));
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("a/#", "a"));
        assert!(matches("#", "a/b"));
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("a/+", "a/b/c"));
        assert!(valid_filter("a/+/#"));
        assert!(!valid_filter("a/#/b"));
        assert!(!valid_filter("a/b+"));
    }
}
