//! Why a graph op was refused; the text is the `reason` of the graph-API reply, word for word
//! what IoTtalk clients know where IoTtalk had the same error.

use iot_proto::wire::graph_api::{Digest, GraphApiError, LinkRef};
use iot_proto::DaId;

use crate::funcs::SetupError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// The request itself was malformed.
    #[error(transparent)]
    Request(#[from] GraphApiError),
    #[error("Unknown graph id {0}")]
    UnknownGraph(String),
    #[error("Function unknown. Please add it first.")]
    FunctionUnknown,
    #[error("dependency {0} not found")]
    DependencyNotFound(String),
    #[error("function {0} is not in this graph")]
    NotInGraph(Digest),
    #[error("function {0} is in use")]
    InUse(Digest),
    #[error(transparent)]
    Bind(SetupError),
    #[error("code #{index} is larger than {max} bytes")]
    CodeTooLarge { index: usize, max: usize },
    #[error(
        "digest mismatch for code #{index}: sha256 of the code is {got}, the request says {want}"
    )]
    DigestMismatch {
        index: usize,
        got: Digest,
        want: Digest,
    },
    #[error("code #{index}: {error}")]
    Code { index: usize, error: SetupError },
    /// The reply echoes every field of the request: one this large would not fit.
    #[error("request too large: its reply, which echoes every field, would be about {bytes} bytes, more than broker.max_payload_bytes {limit}; send it in smaller parts (e.g. fewer functions per add_funcs)")]
    ReplyTooLarge { bytes: usize, limit: usize },
    #[error("link already exists")]
    LinkExists,
    #[error("link unknown")]
    LinkUnknown,
    #[error("`depends` needs a `func`")]
    DependsNeedsFunc,
    #[error("`depends` needs a function in `new`")]
    DependsNeedsNew,
    #[error("`prev` field mismatch")]
    PrevMismatch,
    #[error("DA {0} not found")]
    NoDa(DaId),
    #[error("DA {} has no {} `{}`", .0.da_id, .0.direction.as_str(), .0.feature)]
    NoFeature(LinkRef),
    /// `add_funcs` reached the store without its functions checked (a bug, not the caller's).
    #[error("internal: the functions were not checked")]
    NotChecked,
    /// Checking the functions failed for a reason of the controller's (it is logged).
    #[error("internal: checking the functions failed; see the controller's log")]
    CheckFailed,
    #[error(
        "too many requests ({0}) wait for an add_funcs on this graph to be checked: retry later"
    )]
    Busy(usize),
}
