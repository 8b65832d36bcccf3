//! The controller's topic ACL (docs/security.md, "Topic ACL"), enforced by the embedded broker
//! when authentication is on:
//!
//! - an `admin` user may do everything;
//! - an `app` user: request/response services (publish requests `iottalk/rpc/+/req` and
//!   replies `iottalk/rpc/+/res/+`, never retained; read `iottalk/rpc/<name>/#`) and the
//!   read-only device API under its own name (`iottalk/api/req|res/<name>/device`); home
//!   scenes (publish commands `iottalk/home/cmd/+`, never retained; read replies
//!   `iottalk/home/res/#`, states `iottalk/home/state/#` and `iottalk/home/catalog`); the
//!   keymanager as the client of its own name (publish `iottalk/km/req/<name>`, never
//!   retained; read `iottalk/km/res/<name>`);
//! - a DA (its id as username): its control channels (publish `<id>/ctrl/i`, read
//!   `<id>/ctrl/o`), the data topics of its links (publish on IDF topics, read ODF topics;
//!   [`DaGrants`], kept by the actor as CONNECT and DISCONNECT go out), and request/response
//!   (publish requests and replies, read `iottalk/rpc/<id>/#`); nothing on home topics unless
//!   [`ControllerAcl::home_das`]: then home commands (publish `iottalk/home/cmd/+`, never
//!   retained) and its own replies (read `iottalk/home/res/<id>/#`);
//! - anyone else: nothing.
//!
//! Retained home topics (states, the catalog) are written by the controller as host, which
//! the ACL does not check; among clients only admins may publish retained there.
//!
//! [`DaGrants`] is shared between the actor (writer) and broker connection tasks (readers):
//! a std `RwLock`, never held across an `.await`.

pub mod filter;
pub mod mosquitto;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, PoisonError, RwLock};

use iot_broker::{ClientRef, TopicAcl};
use iot_proto::auth::{Role, Roles};
use iot_proto::topics::matches;
use iot_proto::wire::control::Direction;
use iot_proto::DaId;
use iot_proto::{home, km};

use crate::registry::Registry;
use filter::covers;

/// The data topics one DA may use, from its links.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// IDF link topics: the DA publishes there.
    pub publish: BTreeSet<String>,
    /// ODF link topics: the DA subscribes there.
    pub subscribe: BTreeSet<String>,
}

/// The data-topic grants of every DA. Cheap to clone: clones share one table.
#[derive(Debug, Clone, Default)]
pub struct DaGrants(Arc<RwLock<HashMap<DaId, Grants>>>);

impl DaGrants {
    /// Sets the grants of `id` from its links in `registry` (none when it is gone).
    pub fn refresh(&self, registry: &Registry, id: &DaId) {
        let grants = registry.links(id).map(|links| {
            let mut g = Grants::default();
            for ((dir, _), link) in links {
                match dir {
                    Direction::Idf => g.publish.insert(link.topic.clone()),
                    Direction::Odf => g.subscribe.insert(link.topic.clone()),
                };
            }
            g
        });
        let mut map = self.0.write().unwrap_or_else(PoisonError::into_inner);
        match grants {
            Some(g) => map.insert(*id, g),
            None => map.remove(id),
        };
    }

    /// Rebuilds every DA's grants from `registry` (at start, after the state is restored).
    pub fn rebuild(&self, registry: &Registry) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        for id in registry.ids() {
            self.refresh(registry, &id);
        }
    }

    #[cfg(test)]
    fn set(&self, id: DaId, grants: Grants) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, grants);
    }

    fn get(&self, id: &DaId) -> Option<Grants> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    fn with<T>(&self, id: &DaId, f: impl FnOnce(Option<&Grants>) -> T) -> T {
        f(self
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id))
    }
}

/// Who may do what: users by role, DAs by their links.
#[derive(Debug, Clone)]
pub struct ControllerAcl {
    pub roles: Arc<dyn Roles>,
    pub grants: DaGrants,
    /// Whether DAs may send home commands (`iottalk/home/cmd/+`) and read their replies
    /// (`iottalk/home/res/<id>/#`); apps and admins may anyway.
    pub home_das: bool,
}

/// Topics every DA and app may publish on: requests to anyone, replies to anyone.
const RPC_PUBLISH: [&str; 2] = ["iottalk/rpc/+/req", "iottalk/rpc/+/res/+"];

/// Whether `topic` is a home command an app (or DA) may send: `iottalk/home/cmd/<target>`,
/// never retained (a retained command would be run again for every new subscriber).
fn home_command(topic: &str, retain: bool) -> bool {
    !retain && home::parse_cmd(topic).is_some()
}

/// Whether an app may subscribe to `filter` on home topics: replies, states, the catalog.
fn home_app_reads(filter: &str) -> bool {
    covers(&home::res("#"), filter) || covers(&home::state("#"), filter) || filter == home::CATALOG
}

/// Whether `topic` is a keymanager request app `name` may send: as the keymanager client of
/// its own name (it reads no other client's replies), never retained.
fn key_request(name: &str, topic: &str, retain: bool) -> bool {
    !retain && km::client_of_req(topic) == Some(name)
}

/// Who a username is.
enum Who {
    Admin,
    App(String),
    Da(DaId),
    Nobody,
}

impl ControllerAcl {
    fn who(&self, client: &ClientRef<'_>) -> Who {
        let Some(user) = client.username else {
            return Who::Nobody;
        };
        match self.roles.role(user) {
            Some(Role::Admin) => Who::Admin,
            Some(Role::App) => Who::App(user.to_owned()),
            None => match user.parse::<DaId>() {
                Ok(id) => Who::Da(id),
                Err(_) => Who::Nobody,
            },
        }
    }
}

impl TopicAcl for ControllerAcl {
    fn may_publish(&self, client: &ClientRef<'_>, topic: &str, retain: bool) -> bool {
        // Request/response is never retained: open to every DA and app, a retained message
        // there would be stored by the broker for ever (and replayed to every subscriber).
        let rpc = || !retain && RPC_PUBLISH.iter().any(|p| matches(p, topic));
        match self.who(client) {
            Who::Admin => true,
            Who::App(name) => {
                rpc()
                    || home_command(topic, retain)
                    || key_request(&name, topic, retain)
                    || (!retain && topic == format!("iottalk/api/req/{name}/device"))
            }
            Who::Da(id) => {
                topic == iot_proto::topics::ctrl_i(&id)
                    || rpc()
                    || (self.home_das && home_command(topic, retain))
                    || self
                        .grants
                        .with(&id, |g| g.is_some_and(|g| g.publish.contains(topic)))
            }
            Who::Nobody => false,
        }
    }

    fn may_subscribe(&self, client: &ClientRef<'_>, filter: &str) -> bool {
        match self.who(client) {
            Who::Admin => true,
            Who::App(name) => {
                covers(&format!("iottalk/rpc/{name}/#"), filter)
                    || filter == format!("iottalk/api/res/{name}/device")
                    || home_app_reads(filter)
                    || filter == km::res(&name)
            }
            Who::Da(id) => {
                filter == iot_proto::topics::ctrl_o(&id)
                    || covers(&format!("iottalk/rpc/{id}/#"), filter)
                    || (self.home_das && covers(&home::res(&format!("{id}/#")), filter))
                    || self
                        .grants
                        .get(&id)
                        .is_some_and(|g| g.subscribe.contains(filter))
            }
            Who::Nobody => false,
        }
    }
}

#[cfg(test)]
mod tests;
