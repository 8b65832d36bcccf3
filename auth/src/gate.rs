//! [`Gate`]: the embedded broker's CONNECT check when authentication is on. A username is
//! either a controller user (checked against its Argon2id hash) or a DA id (checked against
//! the credentials of its registration reply); user names can never have the form of a DA id.

use std::sync::Arc;

use iot_broker::Authenticator;

use crate::refusals::{Refusal, Refusals};
use crate::users::Users;

/// Users first, then DAs; every refusal counted.
#[derive(Debug, Clone)]
pub struct Gate {
    pub users: Users,
    pub das: Arc<dyn Authenticator>,
    pub refusals: Refusals,
}

#[async_trait::async_trait]
impl Authenticator for Gate {
    async fn check(&self, username: &str, password: &[u8]) -> bool {
        let ok = if self.users.contains(username) {
            self.users
                .check_async(username, password.to_vec())
                .await
                .is_some()
        } else {
            self.das.check(username, password).await
        };
        if !ok {
            self.refusals.add(Refusal::MqttBadCredentials);
            tracing::debug!(mqtt.username = ?username, "MQTT CONNECT refused: bad credentials");
        }
        ok
    }

    fn refused_anonymous(&self) {
        self.refusals.add(Refusal::MqttAnonymous);
    }

    fn refused_client_id(&self) {
        self.refusals.add(Refusal::MqttClientIdTaken);
    }
}
