//! Passwords: Argon2id hashes in PHC strings (what the `users` table stores), verification,
//! generated passwords, and the rules for user names. Nothing here logs a password.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::distr::{Alphanumeric, SampleString};
use zeroize::Zeroizing;

/// Length of a generated password: 24 alphanumeric characters, about 142 bits.
const GENERATED_LEN: usize = 24;
/// Longest accepted password (Argon2 takes any length; this bounds the work per attempt).
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Longest user name.
pub const MAX_NAME_CHARS: usize = 64;

/// Why a name or password was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("the password is empty")]
    Empty,
    #[error("the password is longer than {MAX_PASSWORD_BYTES} bytes")]
    TooLong,
    #[error("cannot hash the password: {0}")]
    Hash(String),
    #[error("invalid user name `{0}`: use 1 to 64 letters, digits, `_`, `.` or `-`, starting with a letter")]
    Name(String),
    #[error("invalid user name `{0}`: it has the form of a DA id (a UUID), which DAs use as their broker username")]
    NameIsDaId(String),
}

/// The Argon2id PHC string of `password`, with a fresh random salt (OWASP parameters: 19 MiB,
/// 2 passes, 1 lane).
pub fn hash(password: &[u8]) -> Result<String, PasswordError> {
    check_password(password)?;
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `phc`. A malformed `phc` matches nothing.
/// Argon2's own comparison is constant-time.
pub fn verify(phc: &str, password: &[u8]) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default().verify_password(password, &parsed).is_ok(),
        Err(_) => false,
    }
}

/// A new random password, wiped from memory when dropped.
pub fn generate() -> Zeroizing<String> {
    Zeroizing::new(Alphanumeric.sample_string(&mut rand::rng(), GENERATED_LEN))
}

/// Refuses empty and oversized passwords.
pub fn check_password(password: &[u8]) -> Result<(), PasswordError> {
    if password.is_empty() {
        return Err(PasswordError::Empty);
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::TooLong);
    }
    Ok(())
}

/// A user name: 1 to 64 ASCII letters, digits, `_`, `.`, `-`, starting with a letter, and not
/// of the form of a DA id (DAs authenticate with their id as username).
pub fn check_name(name: &str) -> Result<(), PasswordError> {
    let shown = || name.chars().take(MAX_NAME_CHARS).collect::<String>();
    if name.parse::<iot_proto::DaId>().is_ok() {
        return Err(PasswordError::NameIsDaId(shown()));
    }
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    let starts = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    if !ok_chars || !starts || name.chars().count() > MAX_NAME_CHARS {
        return Err(PasswordError::Name(shown()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let h = hash(b"correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify(&h, b"correct horse"));
        assert!(!verify(&h, b"correct horsf"));
        assert!(!verify(&h, b""));
        assert!(!verify("not a phc string", b"correct horse"));
        assert_ne!(hash(b"correct horse").unwrap(), h, "salted");
    }

    #[test]
    fn passwords_and_names_are_checked() {
        assert_eq!(hash(b""), Err(PasswordError::Empty));
        assert_eq!(hash(&[b'x'; 1025]), Err(PasswordError::TooLong));
        let p = generate();
        assert_eq!(p.len(), 24);
        assert_ne!(*p, *generate());
        for ok in ["admin", "ops.team-1", "A_b"] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "1abc", "a b", "a/b", "a+", "é", &"a".repeat(65)] {
            assert!(
                matches!(check_name(bad), Err(PasswordError::Name(_))),
                "{bad}"
            );
        }
        for id in [
            "a1b2c3d4-0000-4000-8000-000000000000",
            "11b2c3d4-0000-4000-8000-000000000000",
        ] {
            assert!(
                matches!(check_name(id), Err(PasswordError::NameIsDaId(_))),
                "{id}"
            );
        }
    }
}
