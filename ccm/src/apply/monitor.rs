//! The joins' live monitor: one subscription to `iottalk/monitor/#`; each graph's monitor
//! topic is mapped to its network application ([`MonitorTarget`], kept current by the
//! reconciler through a `watch`), and its `esm_data`/`esm_error` messages become
//! [`MonitorRow`]s ([`rows`]) whose `src` names the device object (`3:Dummy_Sensor`).
//! An `esm_error` also shows on the link or join it concerns.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use iot_broker::BrokerHandle;
use iot_proto::wire::Direction;
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::live::{Live, MonitorRow};

/// Filter of every graph's monitor topic.
pub const MONITOR_FILTER: &str = "iottalk/monitor/#";

/// The network application a monitor topic belongs to, and its links' ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MonitorTarget {
    pub project: u32,
    pub netapp: u32,
    /// `(direction, DA id, feature)` -> `(device object id, link id)`.
    pub ends: HashMap<(Direction, String, String), (u32, u32)>,
}

/// Monitor topic -> its network application.
pub type MonitorMap = Arc<HashMap<String, MonitorTarget>>;

/// Where an `esm_error` belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorAt {
    Link(u32),
    Join,
}

/// `idf <da>/<feature>` -> the device object's `src` and the link.
fn end(t: &MonitorTarget, src: &str) -> Option<(String, u32)> {
    let (dir, rest) = match src.split_once(' ')? {
        ("idf", rest) => (Direction::Idf, rest),
        ("odf", rest) => (Direction::Odf, rest),
        _ => return None,
    };
    let (da, feature) = rest.split_once('/')?;
    let (oid, lid) = t
        .ends
        .get(&(dir, da.to_owned(), feature.to_owned()))
        .copied()?;
    Some((format!("{oid}:{feature}"), lid))
}

/// The rows of one monitor message, and the error it reports (if any).
pub fn rows(
    t: &MonitorTarget,
    payload: &[u8],
    ts: f64,
) -> (Vec<MonitorRow>, Option<(ErrorAt, String)>) {
    let Ok(v) = serde_json::from_slice::<Value>(payload) else {
        return (Vec::new(), None);
    };
    let data = &v["data"];
    let src = data["src"].as_str().unwrap_or_default();
    let row = |kind: &str, src: String, value: Value| MonitorRow {
        ts,
        kind: kind.to_owned(),
        src,
        value,
    };
    match v["op"].as_str() {
        Some("esm_data") => {
            let mut out = Vec::new();
            let idf = end(t, src).map_or_else(|| src.to_owned(), |(s, _)| s);
            out.push(row("idf", idf, data["input"].clone()));
            for o in data["outputs"].as_array().into_iter().flatten() {
                let odf = o["odf"].as_str().unwrap_or_default();
                let shown =
                    end(t, &format!("odf {odf}")).map_or_else(|| odf.to_owned(), |(s, _)| s);
                out.push(row("odf", shown, o["value"].clone()));
            }
            (out, None)
        }
        Some("esm_error") => {
            let msg = data["msg"].as_str().unwrap_or_default().to_owned();
            let (shown, at) = if src == "join" {
                ("join".to_owned(), Some(ErrorAt::Join))
            } else {
                match end(t, src) {
                    Some((s, lid)) => (s, Some(ErrorAt::Link(lid))),
                    None => (src.to_owned(), None),
                }
            };
            let out = vec![row("error", shown, data.clone())];
            (out, at.map(|a| (a, msg)))
        }
        _ => (Vec::new(), None),
    }
}

/// Turns monitor messages into rows until `shutdown`.
pub async fn run(
    broker: BrokerHandle,
    live: Arc<Live>,
    mut targets: watch::Receiver<MonitorMap>,
    shutdown: CancellationToken,
) {
    let mut sub = loop {
        match broker.subscribe(MONITOR_FILTER, 1024).await {
            Ok(s) => break s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe to the monitor topics; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        }
    };
    loop {
        let msg = tokio::select! {
            () = shutdown.cancelled() => return,
            m = sub.recv() => match m { Some(m) => m, None => return },
        };
        let Some(t) = targets.borrow_and_update().get(&msg.topic).cloned() else {
            continue;
        };
        let (out, error) = rows(&t, &msg.payload, crate::now());
        for r in out {
            live.monitor_row(t.project, t.netapp, r);
        }
        if let Some((at, msg)) = error {
            live.update_status(t.project, |s| {
                let n = s.netapps.entry(t.netapp).or_default();
                match at {
                    ErrorAt::Link(l) => {
                        n.link_errors.insert(l, msg);
                    }
                    ErrorAt::Join => n.join_error = Some(msg),
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DA: &str = "df682f01-7c3a-49fd-8f5f-72ce0b6e68c0";
    const OUT: &str = "0a1b2c3d-0000-4000-8000-000000000001";

    fn target() -> MonitorTarget {
        let mut ends = HashMap::new();
        ends.insert((Direction::Idf, DA.to_owned(), "Temp".to_owned()), (3, 7));
        ends.insert((Direction::Odf, OUT.to_owned(), "Show".to_owned()), (4, 8));
        MonitorTarget {
            project: 1,
            netapp: 2,
            ends,
        }
    }

    #[test]
    fn data_becomes_idf_and_odf_rows_named_by_object() {
        let body = json!({"op": "esm_data", "data": {"src": format!("idf {DA}/Temp"),
            "input": [5], "outputs": [{"odf": format!("{OUT}/Show"), "value": [25]}]}});
        let (r, e) = rows(&target(), body.to_string().as_bytes(), 1.5);
        assert_eq!(e, None);
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].kind.as_str(), r[0].src.as_str()), ("idf", "3:Temp"));
        assert_eq!(r[0].value, json!([5]));
        assert_eq!((r[1].kind.as_str(), r[1].src.as_str()), ("odf", "4:Show"));
        assert_eq!(r[1].value, json!([25]));
        assert_eq!(r[1].ts, 1.5);
    }

    #[test]
    fn errors_name_their_link_or_the_join() {
        let body = json!({"op": "esm_error", "data": {"msg": "Rhai error: x", "src": format!("odf {OUT}/Show")}});
        let (r, e) = rows(&target(), body.to_string().as_bytes(), 0.0);
        assert_eq!(r[0].kind, "error");
        assert_eq!(r[0].src, "4:Show");
        assert_eq!(e, Some((ErrorAt::Link(8), "Rhai error: x".to_owned())));
        let body = json!({"op": "esm_error", "data": {"msg": "boom", "src": "join"}});
        let (r, e) = rows(&target(), body.to_string().as_bytes(), 0.0);
        assert_eq!(r[0].src, "join");
        assert_eq!(e, Some((ErrorAt::Join, "boom".to_owned())));
        assert_eq!(rows(&target(), b"nonsense", 0.0).0, vec![]);
    }
}
