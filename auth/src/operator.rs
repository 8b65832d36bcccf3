//! Who may use an operator endpoint (the CSM's `/status`, `/metrics`, the CCM's API): the
//! role of the user whose HTTP Basic credentials (or login form) a request carries, with every
//! refusal counted in [`Refusals`]. One check for every HTTP server of the controller; each
//! maps [`Denied`] to its own error body.

use iot_proto::auth::Role;

use crate::basic;
use crate::refusals::{Refusal, Refusals};
use crate::users::Users;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No (well-formed) credentials.
    NoCredentials,
    /// An unknown user or a wrong password.
    BadCredentials,
    /// A user who is not an admin.
    NotAdmin,
}

/// The role of `username` with `password` (one Argon2 run, off the async threads); a wrong
/// one is counted.
pub async fn role(
    users: &Users,
    refusals: &Refusals,
    username: &str,
    password: &[u8],
) -> Result<Role, Denied> {
    users
        .check_async(username, password.to_vec())
        .await
        .ok_or_else(|| {
            refusals.add(Refusal::HttpBadCredentials);
            Denied::BadCredentials
        })
}

/// The role of the user whose Basic credentials `authorization` (the header's value) carries;
/// missing or wrong ones are counted.
pub async fn role_of(
    users: &Users,
    refusals: &Refusals,
    authorization: Option<&[u8]>,
) -> Result<Role, Denied> {
    let Some(creds) = authorization.and_then(basic::parse) else {
        refusals.add(Refusal::HttpNoCredentials);
        return Err(Denied::NoCredentials);
    };
    role(users, refusals, &creds.username, &creds.password).await
}

/// Passes an admin; anyone else is refused and counted.
pub fn admin(role: Result<Role, Denied>, refusals: &Refusals) -> Result<(), Denied> {
    match role? {
        Role::Admin => Ok(()),
        Role::App => {
            refusals.add(Refusal::HttpNotAdmin);
            Err(Denied::NotAdmin)
        }
    }
}
