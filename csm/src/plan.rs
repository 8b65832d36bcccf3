//! A graph's execution plan: the immutable snapshot the engine routes with, built by the graph
//! store on every change of a graph and handed to the engine whole (never edited in place).

use iot_proto::{DaId, FeatureName};

use crate::funcs::Callable;

/// What the engine needs to route one graph.
#[derive(Debug)]
pub struct Plan {
    pub gid: String,
    pub monitor: Option<String>,
    pub idfs: Vec<IdfPlan>,
    pub join: Option<Callable>,
    pub odfs: Vec<OdfPlan>,
}

/// Plans compare by identity: each graph change makes a new one.
impl PartialEq for Plan {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

#[derive(Debug)]
pub struct IdfPlan {
    pub da: DaId,
    pub feature: FeatureName,
    pub topic: String,
    pub func: Option<Callable>,
    /// Which data positions are `variant` inputs.
    pub variant: Vec<bool>,
    pub param_no: usize,
    pub tag_param_no: usize,
}

#[derive(Debug)]
pub struct OdfPlan {
    pub da: DaId,
    pub feature: FeatureName,
    pub topic: String,
    pub func: Option<Callable>,
    /// The DA acknowledged CONNECT when the plan was made: it is subscribed to `topic`.
    /// Later changes reach the engine as gates (`Effect::OdfGate`); until the topic is
    /// open (and while the DA is offline or reconnecting) outputs are held.
    pub open: bool,
}
