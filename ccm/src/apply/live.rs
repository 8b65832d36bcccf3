//! [`Live`]: what the CCM knows at run time and does not store: the registered DAs (from the
//! CSM's device API), how each project's network applications stand on the CSM, and each
//! join's recent monitor rows. The applier writes it; the API reads it and streams its events.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};

use iot_proto::DaId;
use serde::Serialize;
use tokio::sync::broadcast;
use utoipa::ToSchema;

/// Monitor rows kept per network application, for a browser that opens the monitor late.
pub const MONITOR_BACKLOG: usize = 200;

/// A registered DA as the device API tells it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DeviceInfo {
    #[schema(value_type = String, format = "uuid")]
    pub id: DaId,
    pub name: String,
    /// `profile.model`: the device model it claims.
    pub model: String,
    pub idf: Vec<String>,
    pub odf: Vec<String>,
    pub online: bool,
}

/// A change of the device list, streamed to browsers.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DeviceEvent {
    /// `register`, `online`, `offline`, `deregister`, or `csm` (the CSM connection came or
    /// went: reload the list).
    pub kind: String,
    pub device: Option<DeviceInfo>,
    /// Whether the CSM answers the device API now.
    pub csm: bool,
}

/// How one network application stands on the CSM.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct NetAppStatus {
    /// The CSM graph id (`ccm-p<project>-n<netapp>`).
    pub graph: String,
    /// `off` (project off), `waiting` (a linked device object is not bound), `applying`,
    /// `applied`, or `error`.
    pub state: String,
    /// Plain words on the state: what it waits for, or the CSM's refusal.
    pub detail: String,
    /// Errors by link id (a refused `add_link`, a function error seen on the monitor).
    #[schema(value_type = BTreeMap<String, String>)]
    pub link_errors: BTreeMap<u32, String>,
    /// The join function's last error.
    pub join_error: Option<String>,
}

/// How one device object stands.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct ObjectStatus {
    /// Whether its bound DA is online; `null` when unbound or unknown to the CSM.
    pub online: Option<bool>,
    /// The bound DA's name.
    pub da_name: Option<String>,
    pub error: Option<String>,
}

/// A project's run-time status, by object and network application id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct ProjectStatus {
    /// By device object id (JSON keys are strings: `"1"`).
    #[schema(value_type = BTreeMap<String, ObjectStatus>)]
    pub objects: BTreeMap<u32, ObjectStatus>,
    /// By network application id.
    #[schema(value_type = BTreeMap<String, NetAppStatus>)]
    pub netapps: BTreeMap<u32, NetAppStatus>,
    /// What the last reconciliation with the CSM found different and changed, newest last.
    pub reconciled: Vec<String>,
}

/// One row of a join's live monitor.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct MonitorRow {
    /// Unix seconds.
    pub ts: f64,
    /// `idf` (an input value), `join` (the join's output), `odf` (a value sent to an ODF) or
    /// `error`.
    pub kind: String,
    /// The feature (and device object id) it concerns, e.g. `3:Dummy_Sensor`; empty for join.
    pub src: String,
    #[schema(value_type = Object)]
    pub value: serde_json::Value,
}

/// A monitor row with the network application it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorEvent {
    pub project: u32,
    pub netapp: u32,
    pub row: MonitorRow,
}

/// The shared run-time view. Locks are std locks held for a copy or an insert, never across
/// an `.await`.
#[derive(Debug)]
pub struct Live {
    devices: RwLock<BTreeMap<DaId, DeviceInfo>>,
    device_tx: broadcast::Sender<DeviceEvent>,
    status: RwLock<BTreeMap<u32, ProjectStatus>>,
    backlog: Mutex<HashMap<(u32, u32), VecDeque<MonitorRow>>>,
    monitor_tx: broadcast::Sender<MonitorEvent>,
    csm: AtomicBool,
}

impl Default for Live {
    fn default() -> Self {
        Self {
            devices: RwLock::default(),
            device_tx: broadcast::channel(256).0,
            status: RwLock::default(),
            backlog: Mutex::default(),
            monitor_tx: broadcast::channel(1024).0,
            csm: AtomicBool::new(false),
        }
    }
}

impl Live {
    /// The registered DAs, online first, then by name.
    pub fn devices(&self) -> Vec<DeviceInfo> {
        let mut v: Vec<DeviceInfo> = self
            .devices
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| b.online.cmp(&a.online).then_with(|| a.name.cmp(&b.name)));
        v
    }

    pub fn device(&self, id: &DaId) -> Option<DeviceInfo> {
        self.devices
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    /// Replaces the whole list (after an `attach`).
    pub fn set_devices(&self, list: Vec<DeviceInfo>) {
        *self.devices.write().unwrap_or_else(PoisonError::into_inner) =
            list.into_iter().map(|d| (d.id, d)).collect();
        let _ = self.device_tx.send(DeviceEvent {
            kind: "csm".into(),
            device: None,
            csm: self.csm_connected(),
        });
    }

    /// One announcement: `deregister` removes the device, anything else upserts it.
    pub fn device_event(&self, kind: &str, device: DeviceInfo) {
        {
            let mut d = self.devices.write().unwrap_or_else(PoisonError::into_inner);
            if kind == "deregister" {
                d.remove(&device.id);
            } else {
                d.insert(device.id, device.clone());
            }
        }
        let _ = self.device_tx.send(DeviceEvent {
            kind: kind.into(),
            device: Some(device),
            csm: self.csm_connected(),
        });
    }

    pub fn subscribe_devices(&self) -> broadcast::Receiver<DeviceEvent> {
        self.device_tx.subscribe()
    }

    pub fn csm_connected(&self) -> bool {
        self.csm.load(Ordering::Relaxed)
    }

    pub fn set_csm_connected(&self, up: bool) {
        if self.csm.swap(up, Ordering::Relaxed) != up {
            let _ = self.device_tx.send(DeviceEvent {
                kind: "csm".into(),
                device: None,
                csm: up,
            });
        }
    }

    pub fn status(&self, project: u32) -> ProjectStatus {
        self.status
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&project)
            .cloned()
            .unwrap_or_default()
    }

    pub fn set_status(&self, project: u32, status: ProjectStatus) {
        self.status
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(project, status);
    }

    /// Changes one project's status in place.
    pub fn update_status(&self, project: u32, f: impl FnOnce(&mut ProjectStatus)) {
        let mut s = self.status.write().unwrap_or_else(PoisonError::into_inner);
        f(s.entry(project).or_default());
    }

    pub fn forget_project(&self, project: u32) {
        self.status
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&project);
        self.backlog
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(p, _), _| *p != project);
    }

    /// Records a monitor row and streams it.
    pub fn monitor_row(&self, project: u32, netapp: u32, row: MonitorRow) {
        {
            let mut b = self.backlog.lock().unwrap_or_else(PoisonError::into_inner);
            let q = b.entry((project, netapp)).or_default();
            if q.len() == MONITOR_BACKLOG {
                q.pop_front();
            }
            q.push_back(row.clone());
        }
        let _ = self.monitor_tx.send(MonitorEvent {
            project,
            netapp,
            row,
        });
    }

    /// The recent rows of one network application (oldest first) and the stream of the next
    /// ones (of every network application: filter by `project` and `netapp`).
    pub fn monitor(
        &self,
        project: u32,
        netapp: u32,
    ) -> (Vec<MonitorRow>, broadcast::Receiver<MonitorEvent>) {
        let b = self.backlog.lock().unwrap_or_else(PoisonError::into_inner);
        let rx = self.monitor_tx.subscribe();
        let rows = b
            .get(&(project, netapp))
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default();
        (rows, rx)
    }
}
