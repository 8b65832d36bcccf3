//! The key store as it lives in memory: what the database holds (salt, parameters, nonces,
//! ciphertexts, never a value) and, while unsealed, the key-encryption key. Sealed at start;
//! unsealing derives the KEK from the password and proves it on a sealed check record (a
//! wrong password is refused, nothing else is tried); sealing wipes the KEK. Pure: the
//! caller persists [`Stored`] and runs the slow derivation off the async threads.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::crypto::{self, CryptoError, KdfParams, Key};

/// What the check record holds once opened.
const CHECK: &[u8] = b"iotctl-km-v1 unsealed";

/// A ciphertext with its nonce, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sealed {
    #[serde(with = "hex")]
    pub nonce: Vec<u8>,
    #[serde(with = "hex")]
    pub ct: Vec<u8>,
    /// Unix seconds of the last change.
    pub updated: f64,
}

/// A client: its secret `S` sealed, and the keys it may read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientRec {
    pub secret: Sealed,
    pub keys: BTreeSet<String>,
}

/// Everything stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    #[serde(with = "hex")]
    pub salt: Vec<u8>,
    pub params: KdfParams,
    /// [`CHECK`] sealed under the KEK: proves a password right.
    pub check: Sealed,
    pub secrets: BTreeMap<String, Sealed>,
    pub clients: BTreeMap<String, ClientRec>,
}

/// Why a store operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("the key store is not initialised: run `iotctl key init`")]
    NotInitialised,
    #[error("the key store is already initialised")]
    AlreadyInitialised,
    #[error("the key store is sealed: run `iotctl key unseal`")]
    Sealed,
    #[error("wrong unseal password")]
    WrongPassword,
    #[error("no key `{0}`")]
    NoKey(String),
    #[error("no client `{0}`")]
    NoClient(String),
    #[error("`{0}` is not a valid name: 1 to 64 letters, digits, `-`, `_` or `.`")]
    Name(String),
    #[error("{0}")]
    Crypto(#[from] CryptoError),
}

fn check_name(n: &str) -> Result<(), StoreError> {
    if super::valid_name(n) {
        Ok(())
    } else {
        Err(StoreError::Name(crate::model::shorten(n)))
    }
}

fn seal_record(kek: &Key, record: &str, plain: &[u8], now: f64) -> Result<Sealed, StoreError> {
    let (nonce, ct) = crypto::seal(kek, record, plain)?;
    Ok(Sealed {
        nonce: nonce.to_vec(),
        ct,
        updated: now,
    })
}

/// The store: what is stored, and the KEK while unsealed.
#[derive(Default, Clone)]
pub struct KeyStore {
    stored: Option<Stored>,
    kek: Option<Key>,
    /// How many times it was sealed: an unseal or a restore that began before a seal must
    /// not undo it.
    seals: u64,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("initialised", &self.stored.is_some())
            .field("sealed", &self.is_sealed())
            .finish()
    }
}

impl KeyStore {
    /// A store loaded from the database (sealed).
    pub fn loaded(stored: Option<Stored>) -> KeyStore {
        KeyStore {
            stored,
            kek: None,
            seals: 0,
        }
    }

    /// Changes with every seal.
    pub fn seals(&self) -> u64 {
        self.seals
    }

    pub fn stored(&self) -> Option<&Stored> {
        self.stored.as_ref()
    }

    pub fn is_sealed(&self) -> bool {
        self.kek.is_none()
    }

    /// Creates the store with a fresh salt; it is unsealed afterwards.
    pub fn init(&mut self, password: &[u8], params: KdfParams, now: f64) -> Result<(), StoreError> {
        if self.stored.is_some() {
            return Err(StoreError::AlreadyInitialised);
        }
        self.install(KeyStore::fresh(password, params, now)?)
    }

    /// A new, empty, unsealed store (the slow part of [`init`](Self::init): Argon2id, to run
    /// without holding the store).
    pub fn fresh(password: &[u8], params: KdfParams, now: f64) -> Result<KeyStore, StoreError> {
        let salt = crypto::random::<16>().to_vec();
        let kek = crypto::derive_kek(password, &salt, params)?;
        let check = seal_record(&kek, "check", CHECK, now)?;
        Ok(KeyStore {
            stored: Some(Stored {
                salt,
                params,
                check,
                secrets: BTreeMap::new(),
                clients: BTreeMap::new(),
            }),
            kek: Some(kek),
            seals: 0,
        })
    }

    /// Takes over a [`fresh`](Self::fresh) store, unless one exists already.
    pub fn install(&mut self, fresh: KeyStore) -> Result<(), StoreError> {
        if self.stored.is_some() {
            return Err(StoreError::AlreadyInitialised);
        }
        let seals = self.seals;
        *self = fresh;
        self.seals = seals;
        Ok(())
    }

    /// Unseals with `password` (the slow part: Argon2id).
    pub fn unseal(&mut self, password: &[u8]) -> Result<(), StoreError> {
        let (salt, params) = self.kdf_input()?;
        let kek = crypto::derive_kek(password, &salt, params)?;
        self.unseal_with(kek)
    }

    /// What deriving the KEK needs: the salt and the parameters.
    pub fn kdf_input(&self) -> Result<(Vec<u8>, KdfParams), StoreError> {
        let s = self.stored.as_ref().ok_or(StoreError::NotInitialised)?;
        Ok((s.salt.clone(), s.params))
    }

    /// Unseals with a derived KEK, if it opens the check record.
    pub fn unseal_with(&mut self, kek: Key) -> Result<(), StoreError> {
        let s = self.stored.as_ref().ok_or(StoreError::NotInitialised)?;
        match crypto::open(&kek, "check", &s.check.nonce, &s.check.ct) {
            Ok(v) if v.as_slice() == CHECK => {
                self.kek = Some(kek);
                Ok(())
            }
            _ => Err(StoreError::WrongPassword),
        }
    }

    /// Seals every record again under `new` (derived from a new password with `salt` and
    /// `params`), once `old` proves the current password; sealed or not as before.
    pub fn rekey(
        &mut self,
        old: &Key,
        new: Key,
        salt: Vec<u8>,
        params: KdfParams,
        now: f64,
    ) -> Result<(), StoreError> {
        let s = self.stored.as_ref().ok_or(StoreError::NotInitialised)?;
        let reseal = |record: &str, v: &Sealed| -> Result<Sealed, StoreError> {
            let plain = crypto::open(old, record, &v.nonce, &v.ct)
                .map_err(|_| StoreError::WrongPassword)?;
            let mut out = seal_record(&new, record, &plain, now)?;
            out.updated = v.updated;
            Ok(out)
        };
        let check = reseal("check", &s.check)?;
        let mut secrets = BTreeMap::new();
        for (n, v) in &s.secrets {
            secrets.insert(n.clone(), reseal(&format!("secret:{n}"), v)?);
        }
        let mut clients = BTreeMap::new();
        for (n, c) in &s.clients {
            let secret = reseal(&format!("client:{n}"), &c.secret)?;
            clients.insert(
                n.clone(),
                ClientRec {
                    secret,
                    keys: c.keys.clone(),
                },
            );
        }
        let unsealed = self.kek.is_some();
        self.stored = Some(Stored {
            salt,
            params,
            check,
            secrets,
            clients,
        });
        self.kek = unsealed.then_some(new);
        Ok(())
    }

    /// Puts back the store as it was before a change whose write failed (`backup`, a clone
    /// taken then), records and KEK together; sealed if it was sealed since.
    pub fn restore(&mut self, backup: KeyStore) {
        let sealed_since = self.seals != backup.seals;
        let seals = self.seals;
        *self = backup;
        self.seals = seals;
        if sealed_since {
            self.kek = None;
        }
    }

    /// The keys' names and when each last changed.
    pub fn names(&self) -> Vec<(String, f64)> {
        self.stored.as_ref().map_or_else(Vec::new, |s| {
            s.secrets
                .iter()
                .map(|(n, v)| (n.clone(), v.updated))
                .collect()
        })
    }

    /// The clients: name, the keys each may read, when it last changed.
    pub fn clients(&self) -> Vec<(String, BTreeSet<String>, f64)> {
        self.stored.as_ref().map_or_else(Vec::new, |s| {
            s.clients
                .iter()
                .map(|(n, c)| (n.clone(), c.keys.clone(), c.secret.updated))
                .collect()
        })
    }

    /// Wipes the KEK (zeroized as it drops).
    pub fn seal(&mut self) {
        self.kek = None;
        self.seals += 1;
    }

    fn unsealed(&mut self) -> Result<(&Key, &mut Stored), StoreError> {
        let s = self.stored.as_mut().ok_or(StoreError::NotInitialised)?;
        let kek = self.kek.as_ref().ok_or(StoreError::Sealed)?;
        Ok((kek, s))
    }

    pub fn put(&mut self, name: &str, value: &[u8], now: f64) -> Result<(), StoreError> {
        check_name(name)?;
        let (kek, s) = self.unsealed()?;
        let sealed = seal_record(kek, &format!("secret:{name}"), value, now)?;
        s.secrets.insert(name.to_owned(), sealed);
        Ok(())
    }

    pub fn remove(&mut self, name: &str) -> Result<(), StoreError> {
        let (_, s) = self.unsealed()?;
        s.secrets
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| StoreError::NoKey(crate::model::shorten(name)))
    }

    /// Adds (or replaces) a client with its secret `S` from its password and machine id.
    pub fn add_client(
        &mut self,
        name: &str,
        machine_id: &str,
        keys: BTreeSet<String>,
        password: &str,
        now: f64,
    ) -> Result<(), StoreError> {
        check_name(name)?;
        for k in &keys {
            check_name(k)?;
        }
        let (kek, s) = self.unsealed()?;
        let secret = crypto::client_secret(password, name, machine_id);
        let sealed = seal_record(kek, &format!("client:{name}"), secret.as_ref(), now)?;
        s.clients.insert(
            name.to_owned(),
            ClientRec {
                secret: sealed,
                keys,
            },
        );
        Ok(())
    }

    pub fn remove_client(&mut self, name: &str) -> Result<(), StoreError> {
        let (_, s) = self.unsealed()?;
        s.clients
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| StoreError::NoClient(crate::model::shorten(name)))
    }

    /// A client's secret `S` (`None`: no such client, or sealed). For an unknown client a
    /// record of about the same size is opened anyway: the work, and so the time to answer,
    /// does not say whether a client exists.
    pub fn client_secret(&self, name: &str) -> Option<Key> {
        let (kek, s) = (self.kek.as_ref()?, self.stored.as_ref()?);
        let Some(c) = s.clients.get(name) else {
            let _ = crypto::open(kek, "check", &s.check.nonce, &s.check.ct);
            return None;
        };
        let plain = crypto::open(
            kek,
            &format!("client:{name}"),
            &c.secret.nonce,
            &c.secret.ct,
        )
        .ok()?;
        let arr: [u8; 32] = plain.as_slice().try_into().ok()?;
        Some(Zeroizing::new(arr))
    }

    /// Whether `client` may read `key` and the key exists.
    pub fn may_read(&self, client: &str, key: &str) -> bool {
        self.stored.as_ref().is_some_and(|s| {
            s.secrets.contains_key(key)
                && s.clients.get(client).is_some_and(|c| c.keys.contains(key))
        })
    }

    /// A stored value, decrypted (unsealed only).
    pub fn value(&self, key: &str) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let s = self.stored.as_ref().ok_or(StoreError::NotInitialised)?;
        let kek = self.kek.as_ref().ok_or(StoreError::Sealed)?;
        let v = s
            .secrets
            .get(key)
            .ok_or_else(|| StoreError::NoKey(crate::model::shorten(key)))?;
        Ok(crypto::open(
            kek,
            &format!("secret:{key}"),
            &v.nonce,
            &v.ct,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_at_load_unsealed_by_the_right_password_only() {
        let mut ks = KeyStore::default();
        assert_eq!(ks.unseal(b"x"), Err(StoreError::NotInitialised));
        ks.init(b"unseal me", KdfParams::default(), 1.0).unwrap();
        ks.put("db-password", b"hunter2", 2.0).unwrap();
        let mut keys = BTreeSet::new();
        keys.insert("db-password".to_owned());
        ks.add_client("backup", "mid-1", keys, "client pw", 3.0)
            .unwrap();
        let stored = ks.stored().unwrap().clone();
        let text = serde_json::to_string(&stored).unwrap();
        assert!(
            !text.contains("hunter2") && !text.contains(&hex::encode("hunter2")),
            "{text}"
        );

        let mut again = KeyStore::loaded(Some(stored));
        assert!(again.is_sealed());
        assert_eq!(again.value("db-password"), Err(StoreError::Sealed));
        assert_eq!(again.put("x", b"y", 4.0), Err(StoreError::Sealed));
        assert!(again.client_secret("backup").is_none());
        assert_eq!(again.unseal(b"wrong"), Err(StoreError::WrongPassword));
        assert!(again.is_sealed());
        again.unseal(b"unseal me").unwrap();
        assert_eq!(again.value("db-password").unwrap().as_slice(), b"hunter2");
        let s = again.client_secret("backup").unwrap();
        assert_eq!(s, crypto::client_secret("client pw", "backup", "mid-1"));
        assert!(again.may_read("backup", "db-password"));
        assert!(!again.may_read("backup", "other"));
        assert!(!again.may_read("nobody", "db-password"));
        again.seal();
        assert!(again.is_sealed() && again.client_secret("backup").is_none());
    }

    #[test]
    fn a_new_password_opens_everything_and_the_old_one_nothing() {
        let mut ks = KeyStore::default();
        ks.init(b"old", KdfParams::default(), 1.0).unwrap();
        ks.put("k", b"v", 1.0).unwrap();
        ks.add_client("c", "m", BTreeSet::from(["k".to_owned()]), "p", 1.0)
            .unwrap();
        let (salt, params) = ks.kdf_input().unwrap();
        let old = crypto::derive_kek(b"old", &salt, params).unwrap();
        let wrong = crypto::derive_kek(b"nope", &salt, params).unwrap();
        let salt2 = crypto::random::<16>().to_vec();
        let new = crypto::derive_kek(b"new", &salt2, params).unwrap();
        assert_eq!(
            ks.rekey(&wrong, new.clone(), salt2.clone(), params, 2.0),
            Err(StoreError::WrongPassword)
        );
        ks.rekey(&old, new, salt2, params, 2.0).unwrap();
        assert_eq!(ks.value("k").unwrap().as_slice(), b"v");
        let mut again = KeyStore::loaded(ks.stored().cloned());
        assert_eq!(again.unseal(b"old"), Err(StoreError::WrongPassword));
        again.unseal(b"new").unwrap();
        assert_eq!(again.value("k").unwrap().as_slice(), b"v");
        assert_eq!(
            again.client_secret("c").unwrap(),
            crypto::client_secret("p", "c", "m")
        );
    }

    #[test]
    fn a_restore_puts_back_records_and_key_together_but_never_undoes_a_seal() {
        let mut ks = KeyStore::default();
        ks.init(b"old", KdfParams::default(), 1.0).unwrap();
        ks.put("k", b"v", 1.0).unwrap();
        let backup = ks.clone();
        let (salt, params) = ks.kdf_input().unwrap();
        let old = crypto::derive_kek(b"old", &salt, params).unwrap();
        let salt2 = crypto::random::<16>().to_vec();
        let new = crypto::derive_kek(b"new", &salt2, params).unwrap();
        ks.rekey(&old, new, salt2, params, 2.0).unwrap();
        // The write of the rotation failed: the old records with the old key.
        ks.restore(backup.clone());
        assert_eq!(ks.value("k").unwrap().as_slice(), b"v");
        ks.put("k2", b"v2", 3.0).unwrap();
        let mut reloaded = KeyStore::loaded(ks.stored().cloned());
        reloaded.unseal(b"old").unwrap();
        assert_eq!(reloaded.value("k2").unwrap().as_slice(), b"v2");
        // Sealed while a change was being written: the restore keeps it sealed.
        ks.seal();
        ks.restore(backup);
        assert!(ks.is_sealed());
        assert_eq!(ks.value("k"), Err(StoreError::Sealed));
    }

    #[test]
    fn names_and_missing_things_are_refused() {
        let mut ks = KeyStore::default();
        ks.init(b"pw", KdfParams::default(), 1.0).unwrap();
        assert_eq!(
            ks.init(b"pw", KdfParams::default(), 1.0),
            Err(StoreError::AlreadyInitialised)
        );
        assert!(matches!(ks.put("a/b", b"v", 1.0), Err(StoreError::Name(_))));
        assert_eq!(ks.remove("none"), Err(StoreError::NoKey("none".into())));
        assert_eq!(
            ks.remove_client("none"),
            Err(StoreError::NoClient("none".into()))
        );
        let mut keys = BTreeSet::new();
        keys.insert("bad key".to_owned());
        assert!(matches!(
            ks.add_client("c", "m", keys, "p", 1.0),
            Err(StoreError::Name(_))
        ));
    }
}
