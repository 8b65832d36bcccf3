//! Who a broker or HTTP client is, once authenticated: the roles of controller users.
//! Users are managed with `iotctl user`; DAs authenticate with the credentials of their
//! registration reply and have no role (what they may do follows from their links).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The role of a controller user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything: the graph and device APIs, every topic, the operator HTTP endpoints.
    Admin,
    /// Request/response services and read-only device announcements; no DA topic, no graph API.
    App,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::Admin, Role::App];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::App => "app",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown role name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role `{0}`: use admin or app")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "app" => Ok(Role::App),
            other => Err(UnknownRole(other.to_owned())),
        }
    }
}

/// Who is asking for a role, by MQTT username: implemented by the controller's user store.
/// Called on broker connection tasks: keep it fast (no blocking I/O).
pub trait Roles: Send + Sync + fmt::Debug {
    /// The role of the user `username`, or `None` when no such user exists.
    fn role(&self, username: &str) -> Option<Role>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_by_name_and_refuse_others() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
            assert_eq!(serde_json::to_string(&r).unwrap(), format!("\"{r}\""));
        }
        assert_eq!("root".parse::<Role>(), Err(UnknownRole("root".into())));
    }
}
