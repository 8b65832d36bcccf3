//! [`Gateway`]: a program that fronts many devices, each one a DA of its own (its own
//! registration, connection, will and outbox), kept in a [`DeviceManager`] so that after a
//! restart the gateway brings the same devices back and finishes what was left undone.
//!
//! Operations (named after the SEPL connector-client's): [`Gateway::add`] stores and
//! registers a device; [`Gateway::update`] re-registers it when its hash changed;
//! [`Gateway::disconnect`] takes it offline and forgets it locally while the server keeps its
//! registration (until it expires); [`Gateway::delete`] deregisters it. A delete the server
//! could not confirm is remembered (`Deleting`) and retried by [`Gateway::start`].

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::join_all;
use iot_proto::DaId;
use serde_json::Value;

use crate::config::DaBuilder;
use crate::da::Da;
use crate::device::Device;
use crate::error::Error;
use crate::http::Registrar;
use crate::manager::{DeviceManager, DeviceState, StoredDevice};

/// What [`Gateway::start`] did.
#[derive(Debug, Default)]
pub struct Reconciled {
    /// Devices registered and online again.
    pub online: Vec<DaId>,
    /// Deletions left over from before, now confirmed by the server.
    pub deleted: Vec<DaId>,
    /// Devices that could not be brought online (they stay stored; call
    /// [`Gateway::start`] again) or deleted (still `Deleting`).
    pub failed: Vec<(DaId, Error)>,
}

/// Keeps a set of devices registered; see the module docs.
pub struct Gateway {
    template: DaBuilder,
    registrar: Registrar,
    manager: Arc<dyn DeviceManager>,
    das: BTreeMap<DaId, Da>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("api_url", &self.template.api_url)
            .field("das", &self.das.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway registering its devices at `api_url`, storing them in `manager`.
    pub fn new(api_url: &str, manager: Arc<dyn DeviceManager>) -> Result<Self, Error> {
        let template = Da::builder(api_url);
        let registrar = Registrar::new(api_url, template.opts.http_timeout)?;
        Ok(Self {
            template,
            registrar,
            manager,
            das: BTreeMap::new(),
        })
    }

    /// Settings for every device's DA (outbox, retry, QoS...); the id, name, model, features
    /// and profile come from each [`Device`].
    pub fn configure(mut self, f: impl FnOnce(DaBuilder) -> DaBuilder) -> Self {
        self.template = f(self.template);
        self
    }

    /// Runs a manager call off the async threads.
    async fn store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn DeviceManager) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let m = self.manager.clone();
        tokio::task::spawn_blocking(move || f(m.as_ref()))
            .await
            .map_err(|e| Error::Storage(e.to_string()))?
    }

    fn builder(&self, d: &Device) -> DaBuilder {
        let mut b = self.template.clone();
        b.id = Some(d.id());
        b.name = Some(d.name().to_owned());
        b.profile
            .insert("model".into(), Value::String(d.model().to_owned()));
        b.profile.insert("tags".into(), d.tags().to_json());
        b.idfs = d.idfs().map(|(n, u)| (n.to_owned(), u.clone())).collect();
        b.odfs = d.odfs().map(|(n, u)| (n.to_owned(), u.clone())).collect();
        b
    }

    /// Brings back every stored device: registers and connects the active ones (at the same
    /// time), and finishes deletions left over from before.
    pub async fn start(&mut self) -> Result<Reconciled, Error> {
        let stored = self.store(|m| m.list()).await?;
        let mut report = Reconciled::default();
        let mut to_connect = Vec::new();
        for s in stored {
            let id = s.device.id();
            match s.state {
                DeviceState::Active if !self.das.contains_key(&id) => to_connect.push(s),
                DeviceState::Active => {}
                DeviceState::Deleting => match self.delete_remote(&id).await {
                    Ok(()) => {
                        self.store(move |m| m.remove(&id)).await?;
                        report.deleted.push(id);
                    }
                    Err(e) => report.failed.push((id, e)),
                },
            }
        }
        let attempts = to_connect.iter().map(|s: &StoredDevice| {
            let b = self.builder(&s.device);
            async move { (s.device.id(), b.connect().await) }
        });
        for (id, r) in join_all(attempts).await {
            match r {
                Ok(da) => {
                    self.das.insert(id, da);
                    report.online.push(id);
                }
                Err(e) => report.failed.push((id, e)),
            }
        }
        Ok(report)
    }

    /// Stores a new device and brings it online.
    pub async fn add(&mut self, device: Device) -> Result<Da, Error> {
        let d = device.clone();
        self.store(move |m| m.add(&d)).await?;
        let da = self.builder(&device).connect().await?;
        self.das.insert(device.id(), da.clone());
        Ok(da)
    }

    /// Stores a changed description; when its hash changed and the device is online, it is
    /// registered again (the server keeps its links). Returns whether anything changed.
    pub async fn update(&mut self, device: Device) -> Result<bool, Error> {
        let id = device.id();
        let old = self
            .store(move |m| m.get(&id))
            .await?
            .ok_or(Error::UnknownDevice(id))?;
        if old.hash == device.hash() {
            return Ok(false);
        }
        let d = device.clone();
        self.store(move |m| m.update(&d)).await?;
        if let Some(da) = self.das.remove(&id) {
            da.shutdown().await?;
            let da = self.builder(&device).connect().await?;
            self.das.insert(id, da);
        }
        Ok(true)
    }

    /// Takes a device offline and forgets it here; the server keeps its registration (and
    /// expires it unless the device comes back).
    pub async fn disconnect(&mut self, id: &DaId) -> Result<(), Error> {
        let key = *id;
        if !self.store(move |m| m.remove(&key)).await? {
            return Err(Error::UnknownDevice(*id));
        }
        if let Some(da) = self.das.remove(id) {
            da.shutdown().await?;
        }
        Ok(())
    }

    /// Deregisters a device and forgets it. When the server cannot be reached the device
    /// stays stored as `Deleting` (and offline), and [`Gateway::start`] finishes the job.
    pub async fn delete(&mut self, id: &DaId) -> Result<(), Error> {
        let key = *id;
        self.store(move |m| m.set_state(&key, DeviceState::Deleting))
            .await?;
        let r = match self.das.remove(id) {
            Some(da) => da.deregister().await,
            None => self.delete_remote(id).await,
        };
        r?;
        self.store(move |m| m.remove(&key)).await?;
        Ok(())
    }

    /// Deletes a registration without a running DA: reads its rev, then `DELETE`s.
    async fn delete_remote(&self, id: &DaId) -> Result<(), Error> {
        match self.registrar.current_rev(id).await? {
            Some(rev) => self.registrar.deregister(id, &rev).await,
            None => Ok(()),
        }
    }

    /// The DA of a device that is online here.
    pub fn da(&self, id: &DaId) -> Option<&Da> {
        self.das.get(id)
    }

    /// Every stored device.
    pub async fn devices(&self) -> Result<Vec<StoredDevice>, Error> {
        self.store(|m| m.list()).await
    }

    /// Deregisters every device from the server but keeps the store, so that the next
    /// [`Gateway::start`] registers the same devices again (what a gateway does on SIGTERM).
    pub async fn deregister_all(mut self) -> Result<(), Error> {
        let das = std::mem::take(&mut self.das);
        let results = join_all(das.values().map(Da::deregister)).await;
        results.into_iter().collect()
    }

    /// Takes every device offline, keeping registrations and the store (for a restart).
    pub async fn shutdown(mut self) -> Result<(), Error> {
        let das = std::mem::take(&mut self.das);
        let results = join_all(das.values().map(Da::shutdown)).await;
        results.into_iter().collect()
    }
}
