//! Where a gateway keeps its devices: the [`DeviceManager`] trait and two implementations,
//! [`MemoryDeviceManager`] and [`SqliteDeviceManager`] (survives a restart; every statement
//! binds its values as parameters). The trait is synchronous so that any store is easy to
//! plug in; [`crate::Gateway`] calls it off the async threads.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use diesel::prelude::*;
use iot_proto::DaId;
use serde_json::Value;

use crate::device::Device;
use crate::error::Error;
use crate::sqlite::{self, devices, Shared};

/// Where a stored device stands with the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceState {
    /// Registered (or to be registered) and kept online by the gateway.
    Active,
    /// Deletion was asked but the server has not confirmed it yet; the gateway finishes it
    /// when it starts again.
    Deleting,
}

impl DeviceState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Deleting => "deleting",
        }
    }

    fn parse(s: &str) -> Result<Self, Error> {
        match s {
            "active" => Ok(Self::Active),
            "deleting" => Ok(Self::Deleting),
            other => Err(Error::Storage(format!("unknown device state `{other}`"))),
        }
    }
}

/// A device as the manager keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDevice {
    pub device: Device,
    pub state: DeviceState,
    /// The device's canonical hash when it was stored.
    pub hash: String,
}

/// A store of devices. Implementations must be safe to call from several threads.
pub trait DeviceManager: Send + Sync {
    /// Adds a new device ([`Error::DeviceExists`] if its id is taken), as `Active`.
    fn add(&self, device: &Device) -> Result<(), Error>;
    /// Replaces a device's description, keeping its state ([`Error::UnknownDevice`]).
    fn update(&self, device: &Device) -> Result<(), Error>;
    /// Changes a device's state ([`Error::UnknownDevice`]).
    fn set_state(&self, id: &DaId, state: DeviceState) -> Result<(), Error>;
    /// Removes a device; `false` when there was none.
    fn remove(&self, id: &DaId) -> Result<bool, Error>;
    fn get(&self, id: &DaId) -> Result<Option<StoredDevice>, Error>;
    /// Every device, ordered by id.
    fn list(&self) -> Result<Vec<StoredDevice>, Error>;
}

/// Devices in memory (lost when the program stops).
#[derive(Debug, Default)]
pub struct MemoryDeviceManager {
    // A std mutex: held only for map operations, never across an `.await`.
    devices: Mutex<BTreeMap<DaId, StoredDevice>>,
}

impl MemoryDeviceManager {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<DaId, StoredDevice>) -> T) -> Result<T, Error> {
        let mut g = self
            .devices
            .lock()
            .map_err(|_| Error::Storage("the device map lock is poisoned".into()))?;
        Ok(f(&mut g))
    }
}

impl DeviceManager for MemoryDeviceManager {
    fn add(&self, device: &Device) -> Result<(), Error> {
        self.with(|m| {
            if m.contains_key(&device.id()) {
                return Err(Error::DeviceExists(device.id()));
            }
            m.insert(
                device.id(),
                StoredDevice {
                    device: device.clone(),
                    state: DeviceState::Active,
                    hash: device.hash(),
                },
            );
            Ok(())
        })?
    }

    fn update(&self, device: &Device) -> Result<(), Error> {
        self.with(|m| match m.get_mut(&device.id()) {
            Some(s) => {
                s.device = device.clone();
                s.hash = device.hash();
                Ok(())
            }
            None => Err(Error::UnknownDevice(device.id())),
        })?
    }

    fn set_state(&self, id: &DaId, state: DeviceState) -> Result<(), Error> {
        self.with(|m| match m.get_mut(id) {
            Some(s) => {
                s.state = state;
                Ok(())
            }
            None => Err(Error::UnknownDevice(*id)),
        })?
    }

    fn remove(&self, id: &DaId) -> Result<bool, Error> {
        self.with(|m| m.remove(id).is_some())
    }

    fn get(&self, id: &DaId) -> Result<Option<StoredDevice>, Error> {
        self.with(|m| m.get(id).cloned())
    }

    fn list(&self) -> Result<Vec<StoredDevice>, Error> {
        self.with(|m| m.values().cloned().collect())
    }
}

/// Devices in an SQLite file (the same file can hold a durable outbox).
#[derive(Debug, Clone)]
pub struct SqliteDeviceManager {
    conn: Shared,
}

pub(crate) type Row = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
);

pub(crate) fn row_to_stored(r: Row) -> Result<StoredDevice, Error> {
    let (id, model, name, idf_list, odf_list, tags, hash, state) = r;
    let bad =
        |what: &str, e: &dyn std::fmt::Display| Error::Storage(format!("device {id}: {what}: {e}"));
    let da: DaId = id.parse().map_err(|e| bad("id", &e))?;
    let json = |what: &str, s: &str| -> Result<Value, Error> {
        serde_json::from_str(s).map_err(|e| bad(what, &e))
    };
    let device = Device::from_parts(
        da,
        &model,
        &name,
        &json("idf_list", &idf_list)?,
        &json("odf_list", &odf_list)?,
        &json("tags", &tags)?,
    )
    .map_err(|e| bad("stored description", &e))?;
    if device.hash() != hash {
        return Err(bad(
            "hash",
            &"the stored hash does not match the stored description",
        ));
    }
    Ok(StoredDevice {
        device,
        state: DeviceState::parse(&state)?,
        hash,
    })
}

impl SqliteDeviceManager {
    /// Opens (creating if needed) the database at `path`. Blocks; from async code use
    /// `tokio::task::spawn_blocking`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        Ok(Self {
            conn: sqlite::open_blocking(path.as_ref())?,
        })
    }

    fn write(
        &self,
        device: &Device,
        state: Option<DeviceState>,
        insert: bool,
    ) -> Result<(), Error> {
        let id = device.id().to_string();
        let model = device.model().to_owned();
        let name = device.name().to_owned();
        let idfs = device.idf_json().to_string();
        let odfs = device.odf_json().to_string();
        let tags = device.tags().to_json().to_string();
        let hash = device.hash();
        let n = sqlite::run_blocking(&self.conn, |c| {
            if insert {
                diesel::insert_or_ignore_into(devices::table)
                    .values((
                        devices::id.eq(&id),
                        devices::model.eq(&model),
                        devices::name.eq(&name),
                        devices::idf_list.eq(&idfs),
                        devices::odf_list.eq(&odfs),
                        devices::tags.eq(&tags),
                        devices::hash.eq(&hash),
                        devices::state.eq(state.unwrap_or(DeviceState::Active).as_str()),
                    ))
                    .execute(c)
            } else {
                diesel::update(devices::table.filter(devices::id.eq(&id)))
                    .set((
                        devices::model.eq(&model),
                        devices::name.eq(&name),
                        devices::idf_list.eq(&idfs),
                        devices::odf_list.eq(&odfs),
                        devices::tags.eq(&tags),
                        devices::hash.eq(&hash),
                    ))
                    .execute(c)
            }
        })?;
        match (n, insert) {
            (0, true) => Err(Error::DeviceExists(device.id())),
            (0, false) => Err(Error::UnknownDevice(device.id())),
            _ => Ok(()),
        }
    }
}

impl DeviceManager for SqliteDeviceManager {
    fn add(&self, device: &Device) -> Result<(), Error> {
        self.write(device, Some(DeviceState::Active), true)
    }

    fn update(&self, device: &Device) -> Result<(), Error> {
        self.write(device, None, false)
    }

    fn set_state(&self, id: &DaId, state: DeviceState) -> Result<(), Error> {
        let key = id.to_string();
        let n = sqlite::run_blocking(&self.conn, |c| {
            diesel::update(devices::table.filter(devices::id.eq(&key)))
                .set(devices::state.eq(state.as_str()))
                .execute(c)
        })?;
        if n == 0 {
            return Err(Error::UnknownDevice(*id));
        }
        Ok(())
    }

    fn remove(&self, id: &DaId) -> Result<bool, Error> {
        let key = id.to_string();
        let n = sqlite::run_blocking(&self.conn, |c| {
            diesel::delete(devices::table.filter(devices::id.eq(&key))).execute(c)
        })?;
        Ok(n > 0)
    }

    fn get(&self, id: &DaId) -> Result<Option<StoredDevice>, Error> {
        let key = id.to_string();
        let row = sqlite::run_blocking(&self.conn, |c| {
            devices::table
                .filter(devices::id.eq(&key))
                .first::<Row>(c)
                .optional()
        })?;
        row.map(row_to_stored).transpose()
    }

    fn list(&self) -> Result<Vec<StoredDevice>, Error> {
        let rows = sqlite::run_blocking(&self.conn, |c| {
            devices::table.order(devices::id.asc()).load::<Row>(c)
        })?;
        rows.into_iter().map(row_to_stored).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(name: &str) -> Device {
        Device::new(DaId::new_v4(), "Lamp", name)
            .unwrap()
            .with_idf("Level", ["%"])
            .unwrap()
            .with_tag("room", "kitchen")
            .unwrap()
    }

    fn exercise(m: &dyn DeviceManager) {
        let a = device("a");
        let b = device("b; DROP TABLE devices; --");
        m.add(&a).unwrap();
        m.add(&b).unwrap();
        assert_eq!(m.add(&a).unwrap_err(), Error::DeviceExists(a.id()));
        let got = m.get(&a.id()).unwrap().unwrap();
        assert_eq!(got.device, a);
        assert_eq!(got.state, DeviceState::Active);
        assert_eq!(got.hash, a.hash());

        let mut a2 = a.clone();
        a2.set_name("renamed").unwrap();
        a2.tags_mut().change("room", "hall").unwrap();
        m.update(&a2).unwrap();
        let got = m.get(&a.id()).unwrap().unwrap();
        assert_eq!(got.device.name(), "renamed");
        assert_eq!(got.hash, a2.hash());
        assert_ne!(got.hash, a.hash());

        m.set_state(&b.id(), DeviceState::Deleting).unwrap();
        let all = m.list().unwrap();
        assert_eq!(all.len(), 2);
        assert!(all.windows(2).all(|w| w[0].device.id() < w[1].device.id()));
        assert_eq!(m.get(&b.id()).unwrap().unwrap().device.name(), b.name());

        let ghost = device("ghost");
        assert_eq!(
            m.update(&ghost).unwrap_err(),
            Error::UnknownDevice(ghost.id())
        );
        assert!(m.set_state(&ghost.id(), DeviceState::Active).is_err());
        assert!(m.remove(&a.id()).unwrap());
        assert!(!m.remove(&a.id()).unwrap());
        assert_eq!(m.get(&a.id()).unwrap(), None);
    }

    #[test]
    fn memory_manager() {
        exercise(&MemoryDeviceManager::new());
    }

    #[test]
    fn sqlite_manager_persists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("devices.db");
        exercise(&SqliteDeviceManager::open(&path).unwrap());
        let kept = device("kept");
        {
            let m = SqliteDeviceManager::open(&path).unwrap();
            m.add(&kept).unwrap();
        }
        let m = SqliteDeviceManager::open(&path).unwrap();
        let all = m.list().unwrap();
        assert_eq!(all.len(), 2, "b (deleting) and kept survive a reopen");
        let got = m.get(&kept.id()).unwrap().unwrap();
        assert_eq!(got.device, kept);
        assert!(all.iter().any(|s| s.state == DeviceState::Deleting));
    }
}
