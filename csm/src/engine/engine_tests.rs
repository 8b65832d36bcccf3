//! The engine with a real (embedded) broker: a graph task that dies is started again from its
//! graph's latest plan, and routing resumes.

use std::time::Duration;

use iot_broker::{EmbeddedConfig, Message, NativeBroker, QoS, Security};
use serde_json::{json, Value};

use super::*;
use crate::funcs::Callable;
use crate::plan::{IdfPlan, OdfPlan};

const WAIT: Duration = Duration::from_secs(30);

fn plan(join: Option<Callable>) -> Arc<Plan> {
    Arc::new(Plan {
        gid: "g".into(),
        monitor: None,
        idfs: vec![IdfPlan {
            da: "00000000-0000-4000-8000-000000000001".parse().unwrap(),
            feature: "In".parse().unwrap(),
            topic: "t/in".into(),
            func: None,
            variant: Vec::new(),
            param_no: 1,
            tag_param_no: 0,
        }],
        join,
        odfs: vec![OdfPlan {
            da: "00000000-0000-4000-8000-000000000002".parse().unwrap(),
            feature: "Out".parse().unwrap(),
            topic: "t/out".into(),
            func: None,
            open: true,
        }],
    })
}

#[tokio::test]
async fn a_graph_task_that_dies_is_restarted_from_its_plan() {
    let shutdown = CancellationToken::new();
    let cfg = EmbeddedConfig {
        listen: "127.0.0.1:0".into(),
        ws_listen: String::new(),
        ..EmbeddedConfig::default()
    };
    let (broker, _task) = NativeBroker::start(&cfg, Security::default(), shutdown.clone())
        .await
        .unwrap();
    let broker: BrokerHandle = Arc::new(broker);
    let mut out = broker.subscribe("t/out", 16).await.unwrap();
    let mut engine = Engine::new(broker.clone(), shutdown.clone(), Hold::default());
    let send = |v: i64| Message::new("t/in", json!([v]).to_string(), QoS::AtMostOnce, false);

    // A join that panics kills the task on the first message.
    engine
        .apply("g".into(), Some(plan(Some(Callable::Panic))))
        .await;
    broker.publish(send(1)).await.unwrap();
    let ended = tokio::time::timeout(WAIT, engine.next_exit())
        .await
        .unwrap();
    assert!(ended.as_ref().is_err_and(|e| e.is_panic()), "{ended:?}");
    engine.task_ended(ended).await;
    assert_eq!(engine.stats.task_restarts.load(Ordering::Relaxed), 1);

    // Restarted from the same plan: it panics again on the next message.
    broker.publish(send(2)).await.unwrap();
    let ended = tokio::time::timeout(WAIT, engine.next_exit())
        .await
        .unwrap();
    engine.task_ended(ended).await;
    assert_eq!(engine.stats.task_restarts.load(Ordering::Relaxed), 2);

    // A plan without the bad join: the restarted task (its subscription made anew) routes.
    engine.apply("g".into(), Some(plan(None))).await;
    broker.publish(send(3)).await.unwrap();
    let m = tokio::time::timeout(WAIT, out.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&m.payload).unwrap(),
        json!([3])
    );

    // A graph stopped on purpose is not restarted.
    engine.apply("g".into(), None).await;
    let ended = tokio::time::timeout(WAIT, engine.next_exit())
        .await
        .unwrap();
    engine.task_ended(ended).await;
    assert_eq!(engine.stats.task_restarts.load(Ordering::Relaxed), 2);
    shutdown.cancel();
}
