#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]
#![doc = include_str!("../README.md")]
//!
//! Layout:
//! - [`password`]: Argon2id hashing and verification, generated passwords, user-name rules.
//! - [`users`]: [`Users`], the users in memory, reloaded from the database.
//! - [`gate`]: [`Gate`], the broker's CONNECT check (users, then DAs).
//! - [`basic`]: HTTP Basic credentials.
//! - [`operator`]: the admin check of operator HTTP endpoints, refusals counted.
//! - [`refusals`]: [`Refusals`], counters by reason.
//! - [`logz`]: the recent log lines operators read at `/logz`.
//! - [`same_site`]: requests from another site's web page (refused with authentication off).
//! - [`rate`]: `COUNT/PERIOD` rate limits and the token-bucket [`rate::Limiter`] every limit uses.

pub mod basic;
pub mod gate;
pub mod logz;
pub mod operator;
pub mod password;
pub mod rate;
pub mod refusals;
pub mod same_site;
pub mod users;

pub use gate::Gate;
pub use refusals::{Refusal, Refusals};
pub use users::Users;
