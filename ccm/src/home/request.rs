//! From a command message to a plan (which target, which command, where the reply goes, by
//! when), and from a result to the messages that go out (the reply, retained device states,
//! the retained catalog). Pure functions: the loop that receives and runs is in
//! [`super::service`].

use std::time::Duration;

use bytes::Bytes;
use iot_broker::{Message, QoS};
use iot_proto::home::{self, HomeRequest, HomeResult, MAX_DEADLINE_MS};
use serde_json::{json, Map, Value};

use super::catalog::{Catalog, Driver};
use super::command::Command;
use super::run::lookup;
use super::HomeConfig;

/// What a request asks, read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The target as the topic names it.
    pub asked: String,
    /// Echoed in the reply: the request's `id`, else the MQTT 5 correlation data as UTF-8.
    pub id: String,
    pub reply_topic: String,
    /// MQTT 5 correlation data, echoed as a property of the reply.
    pub correlation: Option<Bytes>,
    pub deadline: Duration,
    /// The command as given (for a refusal's reply when it does not parse).
    pub cmd_text: String,
    /// The target's full name and the command, or why the request is refused.
    pub what: Result<(String, Command), String>,
}

impl Plan {
    /// The reply of a request that is not run.
    pub fn refusal(&self, detail: &str) -> HomeResult {
        let (target, cmd) = match &self.what {
            Ok((t, c)) => (t.clone(), c.to_string()),
            Err(_) => (self.asked.clone(), self.cmd_text.clone()),
        };
        HomeResult {
            id: self.id.clone(),
            target,
            cmd,
            ok: false,
            detail: Some(detail.to_owned()),
            ..HomeResult::default()
        }
    }
}

/// Reads a message on `iottalk/home/cmd/<target>`; `None` when the topic is not one.
pub fn plan(msg: &Message, catalog: &Catalog, cfg: &HomeConfig) -> Option<Plan> {
    let asked = match home::parse_cmd(&msg.topic) {
        Some(t) => t.to_owned(),
        // `iottalk/home/cmd/` (an empty level) matches the subscription too: answered.
        None if msg.topic == home::cmd("") => String::new(),
        None => return None,
    };
    let correlation = msg.correlation.clone();
    let (req, mut refused) = match HomeRequest::parse(&msg.payload) {
        Ok(r) => (r, None),
        Err((partial, why)) => (partial, Some(why)),
    };
    let id = req.id.clone().unwrap_or_else(|| {
        correlation
            .as_ref()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .unwrap_or_default()
    });
    let asked_reply = req.reply_to.as_deref().or(msg.response_topic.as_deref());
    let reply_topic = match asked_reply {
        Some(t) if home::valid_reply_topic(t) => t.to_owned(),
        Some(_) => {
            refused.get_or_insert_with(|| {
                format!("`reply_to` must be a topic name under {}", home::RES_PREFIX)
            });
            home::res(&asked)
        }
        None => home::res(&asked),
    };
    let cmd_text = crate::model::shorten(req.cmd.as_deref().unwrap_or(""));
    let deadline_ms = req
        .deadline_ms
        .unwrap_or(cfg.deadline_ms)
        .clamp(1, MAX_DEADLINE_MS);
    let what = match refused {
        Some(why) => Err(why),
        None if asked.is_empty() => Err("no target: publish on iottalk/home/cmd/<target>".into()),
        None => resolve(catalog, &asked, &cmd_text),
    };
    Some(Plan {
        asked,
        id,
        reply_topic,
        correlation,
        deadline: Duration::from_millis(deadline_ms),
        cmd_text,
        what,
    })
}

/// The command `cmd_text` and the target `asked` names (see [`lookup`]), or the `detail` of
/// why not.
pub fn resolve(
    catalog: &Catalog,
    asked: &str,
    cmd_text: &str,
) -> Result<(String, Command), String> {
    let cmd = Command::parse(cmd_text).map_err(|e| e.to_string())?;
    lookup(catalog, asked).map(|t| (t, cmd))
}

/// The reply message (QoS 1, not retained, with the correlation data when there was some).
pub fn reply(plan: &Plan, result: &HomeResult) -> Message {
    let body = serde_json::to_vec(result).unwrap_or_default();
    let msg = Message::new(plan.reply_topic.clone(), body, QoS::AtLeastOnce, false);
    match &plan.correlation {
        Some(c) => msg.with_correlation(c.clone()),
        None => msg,
    }
}

/// The retained state of every device that succeeded in `result` (not pauses).
pub fn states(result: &HomeResult, catalog: &Catalog, now: f64) -> Vec<Message> {
    let mut out = Vec::new();
    collect_states(result, catalog, now, &mut out);
    out
}

fn collect_states(r: &HomeResult, catalog: &Catalog, now: f64, out: &mut Vec<Message>) {
    if !r.children.is_empty() {
        r.children
            .iter()
            .for_each(|c| collect_states(c, catalog, now, out));
        return;
    }
    let is_device = catalog
        .devices
        .get(&r.target)
        .is_some_and(|d| !matches!(d, Driver::Delay { .. }));
    if r.ok && is_device {
        let body = json!({"cmd": r.cmd, "ts": now}).to_string();
        out.push(Message::new(
            home::state(&r.target),
            body,
            QoS::AtLeastOnce,
            true,
        ));
    }
}

/// The retained catalog: every device with its driver's name (not its address: an URL may
/// carry a token) and every scene with its items.
pub fn catalog_message(catalog: &Catalog) -> Message {
    let devices: Map<String, Value> = catalog
        .devices
        .iter()
        .map(|(n, d)| (n.clone(), Value::from(d.name())))
        .collect();
    let body = json!({"devices": devices, "scenes": catalog.scenes});
    Message::new(home::CATALOG, body.to_string(), QoS::AtLeastOnce, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog::from_toml(
            "[devices.lamp]\ndriver = \"http\"\nurl = \"http://127.0.0.1:1/x?token=s3cret\"\n\
             [devices.pause]\ndriver = \"delay\"\nms = 1\n\
             [scenes]\nevening = [\"lamp\", \"pause\"]\n",
        )
        .unwrap()
    }

    fn msg(topic: &str, payload: &str) -> Message {
        Message::new(topic, payload.to_owned(), QoS::AtLeastOnce, false)
    }

    #[test]
    fn plain_and_json_requests_become_plans() {
        let cfg = HomeConfig::default();
        let p = plan(&msg("iottalk/home/cmd/even", "dim:40"), &catalog(), &cfg).unwrap();
        assert_eq!(p.what, Ok(("evening".into(), Command { brightness: 40 })));
        assert_eq!(p.reply_topic, "iottalk/home/res/even");
        assert_eq!(p.deadline, Duration::from_millis(5000));
        let p = plan(
            &msg(
                "iottalk/home/cmd/lamp",
                r#"{"cmd":"off","id":"a1","reply_to":"iottalk/home/res/me","deadline_ms":700}"#,
            ),
            &catalog(),
            &cfg,
        )
        .unwrap();
        assert_eq!(p.what, Ok(("lamp".into(), Command::OFF)));
        assert_eq!(
            (p.id.as_str(), p.reply_topic.as_str()),
            ("a1", "iottalk/home/res/me")
        );
        assert_eq!(p.deadline, Duration::from_millis(700));
        assert!(plan(&msg("iottalk/home/res/lamp", "on"), &catalog(), &cfg).is_none());
        let p = plan(&msg("iottalk/home/cmd/", "on"), &catalog(), &cfg).unwrap();
        assert_eq!(p.reply_topic, "iottalk/home/res/");
        assert!(p.what.unwrap_err().starts_with("no target"));
    }

    #[test]
    fn refusals_say_why_and_still_reach_the_asker() {
        let cfg = HomeConfig::default();
        let c = catalog();
        let why =
            |topic: &str, body: &str| plan(&msg(topic, body), &c, &cfg).unwrap().what.unwrap_err();
        assert_eq!(
            why("iottalk/home/cmd/lamp", "explode").split(':').next(),
            Some("unknown command `explode`")
        );
        assert_eq!(why("iottalk/home/cmd/garage", "on"), "unknown target");
        assert!(why("iottalk/home/cmd/lamp", "{\"cmd\":1}").starts_with("malformed request"));
        let p = plan(
            &msg(
                "iottalk/home/cmd/lamp",
                r#"{"id":"x","reply_to":"abc/ctrl/o"}"#,
            ),
            &c,
            &cfg,
        )
        .unwrap();
        assert_eq!(
            p.reply_topic, "iottalk/home/res/lamp",
            "never a topic outside home/res"
        );
        assert!(p.what.unwrap_err().contains("reply_to"));
        let p = plan(
            &msg("iottalk/home/cmd/lamp", r#"{"id":"y","oops":1}"#),
            &c,
            &cfg,
        )
        .unwrap();
        let r = p.refusal("malformed");
        assert_eq!(
            (r.id.as_str(), r.target.as_str(), r.ok),
            ("y", "lamp", false)
        );
    }

    #[test]
    fn outgoing_messages() {
        let c = catalog();
        let p = plan(
            &msg("iottalk/home/cmd/evening", "on"),
            &c,
            &HomeConfig::default(),
        )
        .unwrap();
        let result = HomeResult {
            target: "evening".into(),
            cmd: "on".into(),
            ok: true,
            children: vec![
                HomeResult {
                    target: "lamp".into(),
                    cmd: "on".into(),
                    ok: true,
                    ..Default::default()
                },
                HomeResult {
                    target: "pause".into(),
                    cmd: "on".into(),
                    ok: true,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let r = reply(&p, &result);
        assert_eq!(
            (r.topic.as_str(), r.retain),
            ("iottalk/home/res/evening", false)
        );
        let s = states(&result, &c, 12.5);
        assert_eq!(s.len(), 1, "no state for a pause");
        assert_eq!(s[0].topic, "iottalk/home/state/lamp");
        assert!(s[0].retain);
        assert_eq!(
            serde_json::from_slice::<Value>(&s[0].payload).unwrap(),
            json!({"cmd": "on", "ts": 12.5})
        );
        let cat = catalog_message(&c);
        let text = String::from_utf8(cat.payload.to_vec()).unwrap();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("\"lamp\":\"http\""), "{text}");
        assert!(cat.retain);
    }
}
