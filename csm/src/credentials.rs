//! Per-DA broker credentials, read by the embedded broker's authentication hook and written by
//! the CSM actor. A std `RwLock`: no `.await` happens while it is held, and reads dominate.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use sha2::{Digest, Sha256};

/// username -> sha256(password)
#[derive(Debug, Clone, Default)]
pub struct Credentials(Arc<RwLock<HashMap<String, [u8; 32]>>>);

impl Credentials {
    pub fn set(&self, username: String, password_sha256: Option<[u8; 32]>) {
        // A panic elsewhere cannot leave the map half-changed (one insert or remove).
        let mut map = self.0.write().unwrap_or_else(PoisonError::into_inner);
        match password_sha256 {
            Some(h) => map.insert(username, h),
            None => map.remove(&username),
        };
    }
}

#[async_trait::async_trait]
impl iot_broker::Authenticator for Credentials {
    async fn check(&self, username: &str, password: &[u8]) -> bool {
        let want = self
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(username)
            .copied();
        let Some(want) = want else { return false };
        let got: [u8; 32] = Sha256::digest(password).into();
        // Constant-time comparison: the time taken does not reveal how many bytes matched.
        bool::from(subtle::ConstantTimeEq::ct_eq(&want[..], &got[..]))
    }
}
