//! Fuzzes graph-API replies as a client reads them: `GraphReply::from_json`, then the
//! results of every op read from it (`GraphReply::ok_for`). Any bytes give a reply or
//! `None`, never a panic.
#![no_main]

use iot_proto::wire::graph_api::{GraphReply, OpKind};
use libfuzzer_sys::fuzz_target;

const OPS: &[&str] = &[
    "attach",
    "detach",
    "add_funcs",
    "rm_funcs",
    "add_link",
    "rm_link",
    "set_join",
    "set_df_func",
    "start_monitor",
    "stop_monitor",
    "show",
];

fuzz_target!(|data: &[u8]| {
    if let Some(r) = GraphReply::from_json(data) {
        if let Err(reason) = &r.outcome {
            assert!(!reason.is_empty());
        }
        for op in OPS.iter().filter_map(|o| OpKind::parse(o)) {
            let _ = r.ok_for(op);
        }
    }
});
