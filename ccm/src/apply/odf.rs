//! Placeholder until the CSM's ODF write API lands (the next commit replaces this file):
//! a `da` home device fails with a clear reason meanwhile.
use iot_broker::BrokerHandle;
use iot_proto::DaId;
use std::time::Duration;
#[derive(Debug, Clone)]
pub struct OdfClient;
impl OdfClient {
    pub async fn connect(_b: BrokerHandle, _c: &str, _t: Duration) -> Result<OdfClient, String> {
        Ok(OdfClient)
    }
    pub async fn write(&self, _da: &DaId, _odf: &str, _v: serde_json::Value) -> Result<(), String> {
        Err("the `da` driver needs the CSM's ODF write API".into())
    }
}
