//! The DA's features and what the server has connected them to, changed only by signals
//! (CONNECT/DISCONNECT on `<id>/ctrl/o`). [`Features::apply`] turns one signal into the
//! subscription changes to make, or the reason to refuse it; it does no I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use iot_proto::wire::{Command, Direction, Signal};

use crate::config::{SignalHook, SignalInfo};

/// A subscription change a signal asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Effect {
    Subscribe(String),
    Unsubscribe(String),
}

/// Longest data topic accepted from the server.
const MAX_TOPIC_BYTES: usize = 65_535;

/// Whether `t` can be published to and subscribed to as one exact topic.
pub(crate) fn valid_topic(t: &str) -> bool {
    !t.is_empty() && t.len() <= MAX_TOPIC_BYTES && !t.contains(['+', '#', '\0'])
}

#[derive(Debug, Default)]
pub(crate) struct Features {
    /// IDF -> data topic, when connected.
    idfs: BTreeMap<String, Option<String>>,
    /// ODF -> data topic, when connected.
    odfs: BTreeMap<String, Option<String>>,
    odf_by_topic: HashMap<String, String>,
    /// After a reconnect: IDFs whose CONNECT the server has not re-sent yet.
    awaiting: BTreeSet<String>,
}

impl Features {
    pub fn new(
        idfs: impl IntoIterator<Item = String>,
        odfs: impl IntoIterator<Item = String>,
    ) -> Self {
        Self {
            idfs: idfs.into_iter().map(|f| (f, None)).collect(),
            odfs: odfs.into_iter().map(|f| (f, None)).collect(),
            ..Self::default()
        }
    }

    pub fn has_idf(&self, f: &str) -> bool {
        self.idfs.contains_key(f)
    }

    pub fn has_odf(&self, f: &str) -> bool {
        self.odfs.contains_key(f)
    }

    /// The data topic of a connected IDF.
    pub fn idf_topic(&self, f: &str) -> Option<&str> {
        self.idfs.get(f).and_then(|t| t.as_deref())
    }

    pub fn odf_for_topic(&self, topic: &str) -> Option<&str> {
        self.odf_by_topic.get(topic).map(String::as_str)
    }

    /// Topics of the connected ODFs (to subscribe again after a reconnect).
    pub fn odf_topics(&self) -> impl Iterator<Item = &str> {
        self.odfs.values().filter_map(|t| t.as_deref())
    }

    pub fn connected_idfs(&self) -> BTreeSet<String> {
        self.idfs
            .iter()
            .filter(|(_, t)| t.is_some())
            .map(|(f, _)| f.clone())
            .collect()
    }

    pub fn connected_odfs(&self) -> BTreeSet<String> {
        self.odfs
            .iter()
            .filter(|(_, t)| t.is_some())
            .map(|(f, _)| f.clone())
            .collect()
    }

    /// After a reconnect: waits for the server to re-send CONNECT for every connected IDF
    /// and for every IDF in `pending` (IDFs with undelivered pushes, e.g. from a previous
    /// run). Returns whether anything is awaited.
    pub fn begin_resume(&mut self, pending: impl IntoIterator<Item = String>) -> bool {
        self.awaiting = self.connected_idfs();
        self.awaiting
            .extend(pending.into_iter().filter(|f| self.idfs.contains_key(f)));
        !self.awaiting.is_empty()
    }

    /// Stops waiting (the resume timeout passed): IDFs keep the topics known before.
    pub fn end_resume(&mut self) {
        self.awaiting.clear();
    }

    /// Whether pushes may flow: no IDF is awaiting its CONNECT.
    pub fn resumed(&self) -> bool {
        self.awaiting.is_empty()
    }

    /// Applies one signal; `Err(reason)` is sent back to the server as the refusal.
    pub fn apply(
        &mut self,
        sig: &Signal,
        hook: Option<&SignalHook>,
    ) -> Result<Vec<Effect>, String> {
        let feature = sig.feature.as_str();
        let (list, kind) = match sig.direction {
            Direction::Idf => (&self.idfs, "IDF"),
            Direction::Odf => (&self.odfs, "ODF"),
        };
        if !list.contains_key(feature) {
            let known: Vec<&str> = list.keys().map(String::as_str).collect();
            return Err(if known.is_empty() {
                format!("unknown {kind} `{feature}`: this DA has no {kind}s")
            } else {
                format!(
                    "unknown {kind} `{feature}`: this DA has {kind}s {}",
                    known.join(", ")
                )
            });
        }
        if sig.command == Command::Connect && !valid_topic(&sig.topic) {
            return Err(format!(
                "invalid data topic `{}`: it must be non-empty and contain no wildcards",
                sig.topic.chars().take(64).collect::<String>()
            ));
        }
        if let Some(hook) = hook {
            hook(&SignalInfo {
                command: sig.command,
                direction: sig.direction,
                feature,
                topic: &sig.topic,
            })?;
        }
        let mut fx = Vec::new();
        match (sig.direction, sig.command) {
            (Direction::Idf, Command::Connect) => {
                self.idfs
                    .insert(feature.to_owned(), Some(sig.topic.clone()));
                self.awaiting.remove(feature);
            }
            (Direction::Idf, Command::Disconnect) => {
                self.idfs.insert(feature.to_owned(), None);
                self.awaiting.remove(feature);
            }
            (Direction::Odf, Command::Connect) => {
                let old = self
                    .odfs
                    .insert(feature.to_owned(), Some(sig.topic.clone()));
                if let Some(Some(old)) = old {
                    if old != sig.topic {
                        self.odf_by_topic.remove(&old);
                        fx.push(Effect::Unsubscribe(old));
                    }
                }
                self.odf_by_topic
                    .insert(sig.topic.clone(), feature.to_owned());
                // Subscribing again to the same topic is harmless and covers a broker that
                // lost the subscription.
                fx.push(Effect::Subscribe(sig.topic.clone()));
            }
            (Direction::Odf, Command::Disconnect) => {
                if let Some(Some(old)) = self.odfs.insert(feature.to_owned(), None) {
                    self.odf_by_topic.remove(&old);
                    fx.push(Effect::Unsubscribe(old));
                }
            }
        }
        Ok(fx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use iot_proto::MsgId;

    fn sig(direction: Direction, feature: &str, command: Command, topic: &str) -> Signal {
        Signal {
            msg_id: MsgId::generate(),
            direction,
            feature: feature.parse().unwrap(),
            command,
            topic: topic.into(),
        }
    }

    fn features() -> Features {
        Features::new(["Sensor".to_owned()], ["Display".to_owned()])
    }

    #[test]
    fn connect_and_disconnect_idf() {
        let mut f = features();
        assert_eq!(f.idf_topic("Sensor"), None);
        let fx = f
            .apply(
                &sig(Direction::Idf, "Sensor", Command::Connect, "t/1"),
                None,
            )
            .unwrap();
        assert!(fx.is_empty());
        assert_eq!(f.idf_topic("Sensor"), Some("t/1"));
        f.apply(
            &sig(Direction::Idf, "Sensor", Command::Disconnect, "unused"),
            None,
        )
        .unwrap();
        assert_eq!(f.idf_topic("Sensor"), None);
    }

    #[test]
    fn odf_topics_are_subscribed_and_moved() {
        let mut f = features();
        let fx = f
            .apply(&sig(Direction::Odf, "Display", Command::Connect, "a"), None)
            .unwrap();
        assert_eq!(fx, vec![Effect::Subscribe("a".into())]);
        assert_eq!(f.odf_for_topic("a"), Some("Display"));
        let fx = f
            .apply(&sig(Direction::Odf, "Display", Command::Connect, "b"), None)
            .unwrap();
        assert_eq!(
            fx,
            vec![
                Effect::Unsubscribe("a".into()),
                Effect::Subscribe("b".into())
            ]
        );
        assert_eq!(f.odf_for_topic("a"), None);
        let fx = f
            .apply(
                &sig(Direction::Odf, "Display", Command::Disconnect, "unused"),
                None,
            )
            .unwrap();
        assert_eq!(fx, vec![Effect::Unsubscribe("b".into())]);
        assert!(f.connected_odfs().is_empty());
    }

    #[test]
    fn unknown_features_bad_topics_and_hook_refusals_are_errors() {
        let mut f = features();
        let e = f
            .apply(&sig(Direction::Idf, "Nope", Command::Connect, "t"), None)
            .unwrap_err();
        assert_eq!(e, "unknown IDF `Nope`: this DA has IDFs Sensor");
        let e = f
            .apply(&sig(Direction::Odf, "Sensor", Command::Connect, "t"), None)
            .unwrap_err();
        assert!(e.starts_with("unknown ODF `Sensor`"), "{e}");
        let e = f
            .apply(
                &sig(Direction::Idf, "Sensor", Command::Connect, "a/#"),
                None,
            )
            .unwrap_err();
        assert!(e.contains("wildcards"), "{e}");
        let hook: SignalHook = Arc::new(|s: &SignalInfo<'_>| {
            if s.command == Command::Connect {
                Err("busy".to_owned())
            } else {
                Ok(())
            }
        });
        let e = f
            .apply(
                &sig(Direction::Idf, "Sensor", Command::Connect, "t"),
                Some(&hook),
            )
            .unwrap_err();
        assert_eq!(e, "busy");
        assert_eq!(
            f.idf_topic("Sensor"),
            None,
            "a refused signal changes nothing"
        );
    }

    #[test]
    fn resume_waits_for_every_connected_idf() {
        let mut f = Features::new(["A".to_owned(), "B".to_owned(), "C".to_owned()], []);
        f.apply(&sig(Direction::Idf, "A", Command::Connect, "ta"), None)
            .unwrap();
        assert!(f.begin_resume(["B".to_owned(), "Gone".to_owned()]));
        assert!(!f.resumed());
        f.apply(&sig(Direction::Idf, "A", Command::Connect, "ta2"), None)
            .unwrap();
        assert!(!f.resumed(), "B has pushes waiting");
        f.apply(
            &sig(Direction::Idf, "B", Command::Disconnect, "unused"),
            None,
        )
        .unwrap();
        assert!(f.resumed());
        assert_eq!(f.idf_topic("A"), Some("ta2"));
        assert!(!Features::new(["A".to_owned()], []).begin_resume([]));
    }
}
