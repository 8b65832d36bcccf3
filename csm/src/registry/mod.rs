//! The registry: registered DAs, their presence, their links (one data topic per DA feature in
//! use, shared by every graph that uses it), the device API clients, and the ODF-write API. Every input (an HTTP
//! request, an uplink message, a timer) is a method that changes the registry and returns
//! [`Effect`]s for the actor to carry out. It knows nothing of graphs: the coordinator takes
//! and releases links on their behalf. Nothing here does I/O.

mod device_api;
mod links;
mod odf_api;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use iot_migrations::das::{DaRow, DaWrite, Write};
use iot_proto::topics;
use iot_proto::wire::{
    Ack, Command, DaRecord, Direction, Feature, Presence, RegisterRequest, Uplink,
};
use iot_proto::{DaId, FeatureName, MsgId, Rev};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::effect::{clear_retained, Effect};
use crate::error::CsmError;

pub use device_api::AnnoKind;
use iot_proto::log::Escaped;
use links::{await_ack, odf_gate, signal};
pub use links::{link_ref, LinkError};

/// A DA's presence as the device API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceState {
    /// Registered, never online with this rev.
    Nothing,
    Online,
    Offline,
}

impl PresenceState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nothing => "nothing",
            Self::Online => "online",
            Self::Offline => "offline",
        }
    }
}

/// Where one link of a DA stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkStatus {
    /// The DA is not online; CONNECT goes out when it comes online.
    Waiting,
    /// CONNECT sent with this msg_id, no reply yet.
    Pending(MsgId),
    /// The DA acknowledged CONNECT.
    Ok,
    /// The DA answered CONNECT with an error.
    Error(String),
}

/// One data link of a DA feature, shared by every graph that uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub topic: String,
    /// How many users (graphs) hold the link.
    pub refs: u32,
    pub status: LinkStatus,
    /// For an ODF: outputs go out (the DA acked CONNECT, or did not answer in time);
    /// otherwise the engine holds them.
    pub open: bool,
}

/// Identifies a link: a DA's feature on one side.
pub type LinkKey = (Direction, FeatureName);

#[derive(Debug, Clone)]
struct Da {
    record: DaRecord,
    presence: PresenceState,
    links: BTreeMap<LinkKey, Link>,
    password_sha256: Option<[u8; 32]>,
}

/// Settings the registry needs.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Issue a username/password per DA in the registration reply.
    pub credentials: bool,
    /// Leave DAs' `rev` out of the device API (authentication on).
    pub hide_rev: bool,
    /// Largest reply the broker carries (`broker.max_payload_bytes`): a longer `attach`
    /// reply is sent in pages.
    pub max_reply_bytes: usize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            credentials: false,
            hide_rev: false,
            max_reply_bytes: crate::DEFAULT_MAX_REPLY_BYTES,
        }
    }
}

/// Successful registration.
#[derive(Debug, Clone, PartialEq)]
pub struct Registered {
    pub record: DaRecord,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// What an uplink message turned out to be (for counters and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UplinkKind {
    Online,
    Offline,
    Reply,
    /// A rev that is not the DA's current one (e.g. an old retained will).
    Stale,
    /// A message for a DA that is not registered.
    Unknown,
    /// An empty payload (a cleared retained message).
    Empty,
    /// Not a valid uplink message, or not a valid id.
    Garbage,
}

/// The registry of DAs and their links.
#[derive(Debug, Default)]
pub struct Registry {
    das: HashMap<DaId, Da>,
    /// How many DAs use each name, to pick free default names quickly.
    names: HashMap<String, u32>,
    /// Device API clients that attached and receive announcements.
    device_clients: BTreeSet<String>,
    cfg: RegistryConfig,
}

/// Seconds since the Unix epoch.
pub fn now_epoch() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

impl Registry {
    pub fn new(cfg: RegistryConfig) -> Self {
        Self {
            cfg,
            ..Self::default()
        }
    }

    /// The largest reply the broker carries (`broker.max_payload_bytes`).
    pub fn max_reply_bytes(&self) -> usize {
        self.cfg.max_reply_bytes
    }

    /// Restores DAs loaded from the database; each starts as never-online with its expiry armed.
    pub fn restore(&mut self, rows: Vec<DaRow>) -> Result<Vec<Effect>, RestoreError> {
        let mut fx = Vec::new();
        for row in rows {
            let id: DaId = row
                .id
                .parse()
                .map_err(|e: iot_proto::IdError| RestoreError {
                    what: format!("row {}", row.id),
                    why: e.to_string(),
                })?;
            let bad = |what: &str, e: &dyn std::fmt::Display| RestoreError {
                what: format!("DA {id} {what}"),
                why: e.to_string(),
            };
            let parse = |what: &str, s: &str| -> Result<Value, RestoreError> {
                serde_json::from_str(s).map_err(|e| bad(what, &e))
            };
            let feats = |what: &str, s: &str| -> Result<Vec<Feature>, RestoreError> {
                serde_json::from_value(parse(what, s)?).map_err(|e| bad(what, &e))
            };
            let record = DaRecord {
                id,
                rev: Rev::from(row.rev),
                register_time: row.register_time,
                name: row.name,
                accept_protos: serde_json::from_value(parse("accept_protos", &row.accept_protos)?)
                    .map_err(|e| bad("accept_protos", &e))?,
                idf_list: feats("idf_list", &row.idf_list)?,
                odf_list: feats("odf_list", &row.odf_list)?,
                profile: match parse("profile", &row.profile)? {
                    Value::Object(m) => m,
                    _ => return Err(bad("profile", &"not an object")),
                },
            };
            let password_sha256 = match row.password_hash.as_deref().map(hex::decode) {
                Some(Ok(h)) => <[u8; 32]>::try_from(h.as_slice()).ok(),
                _ => None,
            };
            if let Some(h) = password_sha256 {
                fx.push(Effect::Credential {
                    username: id.to_string(),
                    password_sha256: Some(h),
                });
            }
            fx.push(Effect::ArmExpiry {
                id,
                rev: record.rev.clone(),
            });
            *self.names.entry(record.name.clone()).or_default() += 1;
            self.das.insert(
                id,
                Da {
                    record,
                    presence: PresenceState::Nothing,
                    links: BTreeMap::new(),
                    password_sha256,
                },
            );
        }
        Ok(fx)
    }

    pub fn len(&self) -> usize {
        self.das.len()
    }

    pub fn is_empty(&self) -> bool {
        self.das.is_empty()
    }

    pub fn online_count(&self) -> usize {
        self.das
            .values()
            .filter(|d| d.presence == PresenceState::Online)
            .count()
    }

    /// The ids of every registered DA.
    pub fn ids(&self) -> Vec<DaId> {
        self.das.keys().copied().collect()
    }

    pub fn contains(&self, id: &DaId) -> bool {
        self.das.contains_key(id)
    }

    pub fn record(&self, id: &DaId) -> Option<(&DaRecord, PresenceState)> {
        self.das.get(id).map(|d| (&d.record, d.presence))
    }

    fn pick_name(&self, model: &str) -> Option<String> {
        (0..100)
            .map(|i| format!("{i:02}.{model}"))
            .find(|n| !self.names.contains_key(n))
    }

    fn release_name(&mut self, name: &str) {
        if let Some(n) = self.names.get_mut(name) {
            *n -= 1;
            if *n == 0 {
                self.names.remove(name);
            }
        }
    }

    /// `PUT /{id}`: registers a DA or re-registers it with a new rev.
    pub fn register(
        &mut self,
        id: DaId,
        req: RegisterRequest,
        now: f64,
        fx: &mut Vec<Effect>,
    ) -> Result<Registered, CsmError> {
        let previous = self.das.get(&id);
        let name = match (&req.name, previous) {
            (Some(n), _) => n.clone(),
            (None, Some(p)) => p.record.name.clone(),
            (None, None) => self
                .pick_name(req.model())
                .ok_or_else(|| CsmError::NoFreeName(req.model().to_owned()))?,
        };
        let (username, password, password_sha256) = if self.cfg.credentials {
            let password = hex::encode(rand::random::<[u8; 16]>());
            let hash: [u8; 32] = Sha256::digest(password.as_bytes()).into();
            (Some(id.to_string()), Some(password), Some(hash))
        } else {
            (None, None, None)
        };
        let record = DaRecord {
            id,
            rev: Rev::generate(),
            register_time: now,
            name,
            accept_protos: req.accept_protos,
            idf_list: req.idf_list,
            odf_list: req.odf_list,
            profile: req.profile,
        };
        // Links survive a re-registration unless their feature is gone.
        let mut links = BTreeMap::new();
        if let Some(prev) = self.das.remove(&id) {
            self.release_name(&prev.record.name);
            for (key, link) in prev.links {
                if record.feature(key.0 == Direction::Idf, &key.1).is_some() {
                    let mut link = Link {
                        status: LinkStatus::Waiting,
                        ..link
                    };
                    fx.extend(odf_gate(&key, &mut link, false));
                    links.insert(key, link);
                } else {
                    fx.push(clear_retained(link.topic));
                }
            }
        }
        *self.names.entry(record.name.clone()).or_default() += 1;
        fx.push(Effect::Persist(Write::Da(DaWrite::Upsert(to_row(
            &record,
            password_sha256,
        )))));
        fx.push(Effect::ArmExpiry {
            id,
            rev: record.rev.clone(),
        });
        if let Some(h) = password_sha256 {
            fx.push(Effect::Credential {
                username: id.to_string(),
                password_sha256: Some(h),
            });
        }
        self.announce(
            AnnoKind::Register,
            device_api::da_json(&record, PresenceState::Nothing),
            now,
            fx,
        );
        self.das.insert(
            id,
            Da {
                record: record.clone(),
                presence: PresenceState::Nothing,
                links,
                password_sha256,
            },
        );
        Ok(Registered {
            record,
            username,
            password,
        })
    }

    /// `DELETE /{id}` with the DA's rev.
    /// A re-registration of a DA that is online must come from that DA: it proves it with
    /// `password`, the broker password of its current registration. Registering a new id, or
    /// an offline one (a device restarting), needs nothing.
    pub fn check_takeover(&self, id: &DaId, password: Option<&[u8]>) -> Result<(), CsmError> {
        let Some(da) = self.das.get(id) else {
            return Ok(());
        };
        if da.presence != PresenceState::Online {
            return Ok(());
        }
        match (password, da.password_sha256) {
            (Some(p), Some(want)) => {
                let got: [u8; 32] = Sha256::digest(p).into();
                if bool::from(subtle::ConstantTimeEq::ct_eq(&got[..], &want[..])) {
                    Ok(())
                } else {
                    Err(CsmError::Online)
                }
            }
            _ => Err(CsmError::Online),
        }
    }

    pub fn deregister(
        &mut self,
        id: &DaId,
        rev: &Rev,
        now: f64,
        fx: &mut Vec<Effect>,
    ) -> Result<(), CsmError> {
        match self.das.get(id) {
            None => Err(CsmError::NotFound),
            // Constant time: the rev is what lets a client deregister the DA.
            Some(da)
                if !bool::from(subtle::ConstantTimeEq::ct_eq(
                    da.record.rev.as_str().as_bytes(),
                    rev.as_str().as_bytes(),
                )) =>
            {
                Err(CsmError::StaleRev)
            }
            Some(_) => {
                self.remove(id, now, fx);
                Ok(())
            }
        }
    }

    /// The expiry timer of `id` fired for `rev`.
    pub fn expire(&mut self, id: &DaId, rev: &Rev, now: f64, fx: &mut Vec<Effect>) -> bool {
        match self.das.get(id) {
            Some(da) if &da.record.rev == rev && da.presence != PresenceState::Online => {
                tracing::info!(da.id = %id, "registration expired");
                self.remove(id, now, fx);
                true
            }
            _ => false,
        }
    }

    fn remove(&mut self, id: &DaId, now: f64, fx: &mut Vec<Effect>) {
        let Some(da) = self.das.remove(id) else {
            return;
        };
        self.release_name(&da.record.name);
        fx.push(Effect::Persist(Write::Da(DaWrite::Delete(id.to_string()))));
        fx.push(Effect::DisarmExpiry(*id));
        if da.password_sha256.is_some() {
            fx.push(Effect::Credential {
                username: id.to_string(),
                password_sha256: None,
            });
        }
        // No retained state may outlive the DA: its uplink, and data topics (Java retains data).
        fx.push(clear_retained(topics::ctrl_i(id)));
        for link in da.links.into_values() {
            fx.push(clear_retained(link.topic));
        }
        self.announce(AnnoKind::Deregister, Value::String(id.to_string()), now, fx);
    }

    /// A message on `<id>/ctrl/i`.
    pub fn uplink(
        &mut self,
        topic: &str,
        payload: &[u8],
        retained: bool,
        now: f64,
        fx: &mut Vec<Effect>,
    ) -> UplinkKind {
        let id = match topics::parse_ctrl_i(topic) {
            Some(Ok(id)) => id,
            Some(Err(_)) | None => return UplinkKind::Garbage,
        };
        if payload.is_empty() {
            return UplinkKind::Empty;
        }
        let Some(da) = self.das.get_mut(&id) else {
            // A DA that is gone (e.g. its offline arrived after DELETE): leave nothing retained.
            if retained {
                fx.push(clear_retained(topic));
                fx.push(Effect::ClearAgainLater(id));
            }
            return UplinkKind::Unknown;
        };
        let msg = match Uplink::from_json(payload) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(da.id = %id, error = %Escaped(&e), "garbage on uplink");
                return UplinkKind::Garbage;
            }
        };
        match msg {
            Uplink::Presence { rev, .. } if rev != da.record.rev => UplinkKind::Stale,
            Uplink::Presence {
                state: Presence::Online,
                ..
            } => {
                da.presence = PresenceState::Online;
                fx.push(Effect::DisarmExpiry(id));
                // Re-send CONNECT for every link: SDKs (JS) forget their topics on reconnect.
                for (key, link) in da.links.iter_mut() {
                    let msg_id = MsgId::generate();
                    fx.push(signal(
                        &id,
                        key,
                        Command::Connect,
                        &link.topic,
                        msg_id.clone(),
                    ));
                    link.status = LinkStatus::Pending(msg_id.clone());
                    fx.extend(odf_gate(key, link, false));
                    fx.extend(await_ack(&id, key, msg_id));
                }
                let record = da.record.clone();
                self.announce(
                    AnnoKind::Online,
                    device_api::da_json(&record, PresenceState::Online),
                    now,
                    fx,
                );
                UplinkKind::Online
            }
            Uplink::Presence {
                state: Presence::Offline,
                rev,
            } => {
                da.presence = PresenceState::Offline;
                for (key, link) in da.links.iter_mut() {
                    link.status = LinkStatus::Waiting;
                    fx.extend(odf_gate(key, link, false));
                }
                fx.push(Effect::ArmExpiry { id, rev });
                let record = da.record.clone();
                self.announce(
                    AnnoKind::Offline,
                    device_api::da_json(&record, PresenceState::Offline),
                    now,
                    fx,
                );
                UplinkKind::Offline
            }
            Uplink::Reply { msg_id, ack } => {
                let link = da
                    .links
                    .iter_mut()
                    .find(|(_, l)| matches!(&l.status, LinkStatus::Pending(m) if *m == msg_id));
                if let Some((key, link)) = link {
                    link.status = match ack {
                        Ack::Ok => LinkStatus::Ok,
                        Ack::Error { reason } => {
                            tracing::warn!(da.id = %id, link.feature = %key.1, reason = ?reason, "DA refused CONNECT");
                            LinkStatus::Error(reason)
                        }
                    };
                    if link.status == LinkStatus::Ok && !link.open {
                        fx.extend(odf_gate(key, link, true));
                    }
                }
                UplinkKind::Reply
            }
        }
    }
}

/// A stored DA that cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {why}")]
pub struct RestoreError {
    pub what: String,
    pub why: String,
}

/// The database row of a DA.
pub fn to_row(record: &DaRecord, password_sha256: Option<[u8; 32]>) -> DaRow {
    DaRow {
        id: record.id.to_string(),
        rev: record.rev.to_string(),
        name: record.name.clone(),
        register_time: record.register_time,
        accept_protos: text(&record.accept_protos),
        idf_list: text(&record.idf_list),
        odf_list: text(&record.odf_list),
        profile: text(&record.profile),
        username: password_sha256.map(|_| record.id.to_string()),
        password_hash: password_sha256.map(hex::encode),
    }
}

fn text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

#[cfg(test)]
mod tests;
