//! The keymanager's cryptography, exactly as docs/keymanager.md writes it; the parts a client
//! shares (client secret, request MAC, reply encryption) are `iot_proto::km`'s:
//!
//! - the key-encryption key (KEK): Argon2id of the unseal password with a random 16-byte salt
//!   and stored parameters (at least 64 MiB and 3 passes);
//! - a stored value: XChaCha20-Poly1305 under the KEK, a random 24-byte nonce each time, with
//!   the record it belongs to as associated data (a ciphertext moved to another row fails);
//! - a client secret `S = HMAC-SHA256(password, "iotctl-km-v1|" + CLIENT + "|" + MID)`;
//! - a request's `mac = HMAC-SHA256(S, "v1\n" + CLIENT + "\n" + NAME + "\n" + ts + "\n" + nonce)`;
//! - a reply: ChaCha20-Poly1305 under `HMAC-SHA256(S, "reply")`, a random 12-byte iv, with
//!   associated data `"v1\n" + CLIENT + "\n" + NAME + "\n" + nonce`.
//!
//! Every key lives in a [`Zeroizing`] buffer. Pure functions, no I/O.

use argon2::{Algorithm, Argon2, Block, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::XChaCha20Poly1305;
use iot_proto::km::{self, OpenError};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub use iot_proto::km::{client_secret, decrypt_reply, request_mac, verify_mac, Key};

/// The smallest Argon2id memory cost accepted, in KiB (64 MiB).
pub const MIN_MEMORY_KIB: u32 = 64 * 1024;
/// The fewest Argon2id passes accepted.
pub const MIN_PASSES: u32 = 3;

/// Why a cryptographic step failed (never says more than that).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("the key derivation parameters are weaker than 64 MiB and 3 passes, or invalid")]
    Params,
    #[error("decryption failed: wrong key, or the data was altered")]
    Open,
    #[error("malformed {0}")]
    Malformed(&'static str),
}

impl From<OpenError> for CryptoError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Open => Self::Open,
            OpenError::Malformed(what) => Self::Malformed(what),
        }
    }
}

/// How the KEK is derived; stored beside the salt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory cost in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        Self {
            m_kib: MIN_MEMORY_KIB,
            t: MIN_PASSES,
            p: 1,
        }
    }
}

/// `n` random bytes from the operating system's generator.
pub fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rng().fill_bytes(&mut b);
    b
}

/// The key-encryption key of `password` and `salt`.
pub fn derive_kek(password: &[u8], salt: &[u8], p: KdfParams) -> Result<Key, CryptoError> {
    if p.m_kib < MIN_MEMORY_KIB || p.t < MIN_PASSES {
        return Err(CryptoError::Params);
    }
    let params = Params::new(p.m_kib, p.t, p.p, Some(32)).map_err(|_| CryptoError::Params)?;
    let mut out = Zeroizing::new([0u8; 32]);
    // Our own working memory, wiped afterwards: the KEK follows from its last block, and the
    // allocator would keep the freed megabytes as they are.
    let mut memory = Zeroizing::new(vec![Block::default(); params.block_count()]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into_with_memory(password, salt, out.as_mut(), memory.as_mut_slice())
        .map_err(|_| CryptoError::Params)?;
    Ok(out)
}

/// Encrypts a stored value under `kek`, bound to `record` (e.g. `secret:db-password`).
/// Returns the 24-byte nonce and the ciphertext.
pub fn seal(kek: &Key, record: &str, plain: &[u8]) -> Result<([u8; 24], Vec<u8>), CryptoError> {
    let nonce = random::<24>();
    let cipher = XChaCha20Poly1305::new(kek.as_ref().into());
    let ct = cipher
        .encrypt(
            (&nonce).into(),
            Payload {
                msg: plain,
                aad: record.as_bytes(),
            },
        )
        .map_err(|_| CryptoError::Open)?;
    Ok((nonce, ct))
}

/// Decrypts what [`seal`] made for the same `record`.
pub fn open(
    kek: &Key,
    record: &str,
    nonce: &[u8],
    ct: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let nonce: &[u8; 24] = nonce
        .try_into()
        .map_err(|_| CryptoError::Malformed("nonce"))?;
    let cipher = XChaCha20Poly1305::new(kek.as_ref().into());
    cipher
        .decrypt(
            nonce.into(),
            Payload {
                msg: ct,
                aad: record.as_bytes(),
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::Open)
}

/// A reply's `iv` and `value` for `secret`, with a fresh random iv.
pub fn encrypt_reply(
    s: &Key,
    client: &str,
    key: &str,
    nonce: &str,
    secret: &[u8],
) -> Result<(String, String), CryptoError> {
    Ok(km::encrypt_reply(
        s,
        client,
        key,
        nonce,
        secret,
        random::<12>(),
    )?)
}

#[cfg(test)]
#[path = "crypto_tests.rs"]
mod tests;
