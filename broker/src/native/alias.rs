//! MQTT 5 topic aliases (3.3.2.3.4), per connection and direction, up to
//! `broker.max_topic_aliases`:
//! - [`Inbound`]: the aliases a client sets. An alias above the maximum the broker announced
//!   is answered with DISCONNECT 0x94; an empty topic with an alias never set, with 0x82.
//! - [`Outbound`]: the aliases the broker uses towards a client that allows them (its own
//!   Topic Alias Maximum, capped by ours): the first topics sent get one, each later message
//!   on such a topic is sent with its alias and an empty topic.
//!
//! Aliases belong to a connection, not a session: a resumed session starts with none.

use std::collections::HashMap;
use std::num::NonZeroU16;

use bytestring::ByteString;
use rmqtt_codec::types::Publish;
use rmqtt_codec::v5::{DisconnectReasonCode, PublishProperties};

/// The topics a client named by alias (index: alias - 1; empty: not set).
#[derive(Debug, Default)]
pub(crate) struct Inbound {
    topics: Vec<ByteString>,
}

impl Inbound {
    /// Replaces `p`'s alias by its topic (recording a new one); `max` is the Topic Alias
    /// Maximum the broker announced.
    pub(crate) fn resolve(
        &mut self,
        max: u16,
        p: &mut Publish,
    ) -> Result<(), DisconnectReasonCode> {
        let Some(alias) = p.properties.as_mut().and_then(|pr| pr.topic_alias.take()) else {
            return Ok(());
        };
        if alias.get() > max {
            return Err(DisconnectReasonCode::TopicAliasInvalid); // MQTT-3.3.2-9
        }
        let i = usize::from(alias.get() - 1);
        if p.topic.is_empty() {
            match self.topics.get(i).filter(|t| !t.is_empty()) {
                Some(t) => p.topic = t.clone(),
                None => return Err(DisconnectReasonCode::ProtocolError), // never set
            }
        } else {
            if self.topics.len() <= i {
                self.topics.resize(i + 1, ByteString::new());
            }
            // A copy: the packet's topic is a slice of its whole buffer.
            self.topics[i] = ByteString::from(&*p.topic);
        }
        Ok(())
    }
}

/// The aliases the broker gave topics towards one client.
#[derive(Debug, Default)]
pub(crate) struct Outbound {
    max: u16,
    given: HashMap<ByteString, NonZeroU16>,
}

/// An alias to remember once its PUBLISH is encoded.
pub(crate) type NewAlias = Option<(ByteString, NonZeroU16)>;

impl Outbound {
    /// Aliases for a client whose Topic Alias Maximum is `theirs`, ours being `ours`.
    pub(crate) fn new(theirs: u16, ours: u16) -> Self {
        Self {
            max: theirs.min(ours),
            given: HashMap::new(),
        }
    }

    /// Puts an alias on `p`: a known one (the topic is left out), or a new one (sent with
    /// the topic, returned to be [`kept`](Self::keep) once the packet is encoded).
    pub(crate) fn apply(&self, p: &mut Publish) -> NewAlias {
        if self.max == 0 || p.topic.is_empty() {
            return None;
        }
        let (alias, new) = match self.given.get(&p.topic) {
            Some(a) => (*a, None),
            None => {
                let next = u16::try_from(self.given.len() + 1)
                    .ok()
                    .filter(|n| *n <= self.max);
                let a = NonZeroU16::new(next?)?;
                (a, Some((ByteString::from(&*p.topic), a)))
            }
        };
        if new.is_none() {
            p.topic = ByteString::new();
        }
        p.properties
            .get_or_insert_with(PublishProperties::default)
            .topic_alias = Some(alias);
        new
    }

    pub(crate) fn keep(&mut self, new: NewAlias) {
        if let Some((topic, alias)) = new {
            self.given.insert(topic, alias);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmqtt_codec::types::QoS;

    fn publish(topic: &str, alias: Option<u16>) -> Publish {
        Publish {
            dup: false,
            retain: false,
            qos: QoS::AtMostOnce,
            topic: ByteString::from(topic),
            packet_id: None,
            payload: bytes::Bytes::new(),
            properties: alias.map(|a| PublishProperties {
                topic_alias: NonZeroU16::new(a),
                ..PublishProperties::default()
            }),
        }
    }

    #[test]
    fn a_clients_aliases() {
        let mut inbound = Inbound::default();
        let mut p = publish("", Some(2));
        assert_eq!(
            inbound.resolve(3, &mut p),
            Err(DisconnectReasonCode::ProtocolError)
        );
        let mut p = publish("a/b", Some(2));
        assert_eq!(inbound.resolve(3, &mut p), Ok(()));
        let mut p = publish("", Some(2));
        assert_eq!(inbound.resolve(3, &mut p), Ok(()));
        assert_eq!(&*p.topic, "a/b");
        assert!(p.properties.unwrap().topic_alias.is_none());
        let mut p = publish("c", Some(4));
        assert_eq!(
            inbound.resolve(3, &mut p),
            Err(DisconnectReasonCode::TopicAliasInvalid)
        );
    }

    #[test]
    fn aliases_towards_a_client() {
        let mut out = Outbound::new(2, 10);
        let topics = ["a", "b", "c", "a", "b", "c"];
        let sent: Vec<(String, Option<u16>)> = topics
            .iter()
            .map(|t| {
                let mut p = publish(t, None);
                let new = out.apply(&mut p);
                out.keep(new);
                let alias = p
                    .properties
                    .and_then(|pr| pr.topic_alias)
                    .map(NonZeroU16::get);
                (p.topic.to_string(), alias)
            })
            .collect();
        let want = [
            ("a", Some(1)),
            ("b", Some(2)),
            ("c", None),
            ("", Some(1)),
            ("", Some(2)),
            ("c", None),
        ];
        let want: Vec<(String, Option<u16>)> =
            want.iter().map(|(t, a)| (t.to_string(), *a)).collect();
        assert_eq!(sent, want);
        assert!(Outbound::new(0, 10)
            .apply(&mut publish("a", None))
            .is_none());
    }
}
