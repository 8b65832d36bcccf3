//! The links of the registry: one data topic per DA feature in use, shared by every graph
//! that uses it (a reference count), with CONNECT/DISCONNECT sent to the DA and its answer
//! recorded; for an ODF, whether its topic is open (the DA is subscribed).

use std::collections::BTreeMap;

use iot_proto::topics;
use iot_proto::wire::graph_api::LinkRef;
use iot_proto::wire::{Command, Direction, Feature, Signal};
use iot_proto::{DaId, FeatureName, MsgId};

use super::{Link, LinkKey, LinkStatus, PresenceState, Registry};
use crate::effect::{clear_retained, publish, Effect};

impl Registry {
    /// The registered width of `link`'s feature, or why it cannot be linked.
    pub fn feature_width(&self, link: &LinkRef) -> Result<usize, LinkError> {
        let da = self
            .das
            .get(&link.da_id)
            .ok_or(LinkError::NoDa(link.da_id))?;
        da.record
            .feature(link.direction == Direction::Idf, &link.feature)
            .map(Feature::width)
            .ok_or_else(|| LinkError::NoFeature(link.clone()))
    }

    pub fn links(&self, id: &DaId) -> Option<&BTreeMap<LinkKey, Link>> {
        self.das.get(id).map(|d| &d.links)
    }

    /// Whether outputs to `id`'s ODF `feature` go out now (see [`Link::open`]).
    pub(crate) fn odf_open(&self, id: &DaId, feature: &FeatureName) -> bool {
        self.das
            .get(id)
            .and_then(|d| d.links.get(&(Direction::Odf, feature.clone())))
            .is_some_and(|l| l.open)
    }

    /// No reply to CONNECT `msg_id` of an ODF link came in time: IoTtalk v2 ignored replies
    /// and some DAs never send one, so its topic opens anyway (the link stays unacked).
    pub fn ack_wait_over(
        &mut self,
        id: &DaId,
        key: &LinkKey,
        msg_id: &MsgId,
        fx: &mut Vec<Effect>,
    ) {
        let Some(link) = self.das.get_mut(id).and_then(|d| d.links.get_mut(key)) else {
            return;
        };
        if matches!(&link.status, LinkStatus::Pending(m) if m == msg_id) && !link.open {
            tracing::info!(da.id = %id, link.feature = %key.1, "no reply to CONNECT: delivering to the ODF without one");
            fx.extend(odf_gate(key, link, true));
        }
    }

    /// Links not acknowledged yet (CONNECT pending, or waiting for their DA to come online).
    pub fn unacked_links(&self) -> usize {
        self.das
            .values()
            .flat_map(|d| d.links.values())
            .filter(|l| matches!(l.status, LinkStatus::Pending(_) | LinkStatus::Waiting))
            .count()
    }

    /// Every link whose DA answered CONNECT with an error.
    pub fn failed_links(&self) -> Vec<(DaId, LinkKey, String)> {
        let mut out = Vec::new();
        for (id, da) in &self.das {
            for (key, link) in &da.links {
                if let LinkStatus::Error(reason) = &link.status {
                    out.push((*id, key.clone(), reason.clone()));
                }
            }
        }
        out
    }

    /// Takes a reference on the link of `id`'s feature, creating it (and sending CONNECT if
    /// the DA is online) on first use; `topic` is reused when the link is created (a link
    /// restored after a restart keeps its data topic, so DAs still pushing to it are heard).
    /// Returns the link's data topic.
    pub fn link_acquire(
        &mut self,
        id: &DaId,
        key: LinkKey,
        topic: Option<&str>,
        fx: &mut Vec<Effect>,
    ) -> Result<String, LinkError> {
        let da = self.das.get_mut(id).ok_or(LinkError::NoDa(*id))?;
        if da.record.feature(key.0 == Direction::Idf, &key.1).is_none() {
            return Err(LinkError::NoFeature(link_ref(id, &key)));
        }
        let online = da.presence == PresenceState::Online;
        let link = da.links.entry(key.clone()).or_insert_with(|| Link {
            topic: topic.map_or_else(topics::new_data_topic, str::to_owned),
            refs: 0,
            status: LinkStatus::Waiting,
            open: false,
        });
        link.refs += 1;
        if link.refs == 1 && online {
            let msg_id = MsgId::generate();
            fx.push(signal(
                id,
                &key,
                Command::Connect,
                &link.topic,
                msg_id.clone(),
            ));
            link.status = LinkStatus::Pending(msg_id.clone());
            fx.extend(await_ack(id, &key, msg_id));
        }
        Ok(link.topic.clone())
    }

    /// Drops a reference on a link; the last one removes it, sends DISCONNECT (if online) and
    /// clears anything retained on its data topic.
    pub fn link_release(
        &mut self,
        id: &DaId,
        key: &LinkKey,
        fx: &mut Vec<Effect>,
    ) -> Result<(), LinkError> {
        let da = self.das.get_mut(id).ok_or(LinkError::NoDa(*id))?;
        let link = da.links.get_mut(key).ok_or(LinkError::Unknown)?;
        link.refs = link.refs.saturating_sub(1);
        if link.refs == 0 {
            let topic = link.topic.clone();
            da.links.remove(key);
            if da.presence == PresenceState::Online {
                fx.push(signal(
                    id,
                    key,
                    Command::Disconnect,
                    &topic,
                    MsgId::generate(),
                ));
            }
            fx.push(clear_retained(topic));
        }
        Ok(())
    }
}

/// Opens or closes an ODF link's topic (nothing for an IDF link).
pub(super) fn odf_gate(key: &LinkKey, link: &mut Link, open: bool) -> Option<Effect> {
    link.open = open;
    (key.0 == Direction::Odf).then(|| Effect::OdfGate {
        topic: link.topic.clone(),
        open,
    })
}

/// For an ODF link whose CONNECT `msg_id` just went out: wait for its reply.
pub(super) fn await_ack(id: &DaId, key: &LinkKey, msg_id: MsgId) -> Option<Effect> {
    (key.0 == Direction::Odf).then(|| Effect::AwaitAck {
        link: link_ref(id, key),
        msg_id,
    })
}

/// The link `key` of DA `id` as the graph API names it.
pub fn link_ref(id: &DaId, key: &LinkKey) -> LinkRef {
    LinkRef {
        da_id: *id,
        direction: key.0,
        feature: key.1.clone(),
    }
}

/// Why a link cannot be taken or released.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("DA {0} not found")]
    NoDa(DaId),
    #[error("DA {} has no {} `{}`", .0.da_id, .0.direction.as_str(), .0.feature)]
    NoFeature(LinkRef),
    #[error("link unknown")]
    Unknown,
}

pub(super) fn signal(
    id: &DaId,
    key: &LinkKey,
    command: Command,
    topic: &str,
    msg_id: MsgId,
) -> Effect {
    let s = Signal {
        msg_id,
        direction: key.0,
        feature: key.1.clone(),
        command,
        topic: topic.to_owned(),
    };
    publish(topics::ctrl_o(id), &s.to_json(), false)
}
