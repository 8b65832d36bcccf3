//! `iotctl shell`: a line-oriented console with the database and a broker connection ready.
//! Commands: `list`, `show ID`, `pub TOPIC PAYLOAD [qos=N] [retain]`, `sub FILTER`,
//! `unsub FILTER`, `help`, `quit`. It reads standard input, so it can be scripted too.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Result;
use iot_broker::{Broker, ExternalBroker, ExternalConfig, Message, QoS};
use iot_migrations::Db;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

use crate::config::Config;

const HELP: &str = "commands:
  list                          registered DAs (from the database)
  show ID                       one DA's record
  pub TOPIC PAYLOAD [qos=N] [retain]
                                publish (PAYLOAD is the rest of the line up to the options)
  sub FILTER                    print messages matching FILTER as they arrive
  unsub FILTER                  stop printing them
  help, quit";

pub async fn run(cfg: &Config) -> Result<()> {
    let db_url = cfg.database.url.clone();
    let db = tokio::task::spawn_blocking(move || -> Result<Db> {
        let mut db = Db::connect(&db_url)?;
        db.migrate()?;
        Ok(db)
    })
    .await??;
    let db = Arc::new(std::sync::Mutex::new(db));
    let shutdown = CancellationToken::new();
    // The running controller's broker (its state file has the bound address), else the config's.
    let url = match crate::runfile::read_state(cfg).and_then(|r| r.mqtt) {
        Some(addr) => format!("mqtt://{addr}"),
        None if cfg.broker.external.is_empty() => {
            format!("mqtt://{}", cfg.broker.embedded.listen)
        }
        None => cfg.broker.external.clone(),
    };
    let mut connection = None;
    let broker = match ExternalBroker::connect(
        &ExternalConfig {
            url: url.clone(),
            client_id_prefix: "iotctl-shell".into(),
            ..ExternalConfig::default()
        },
        shutdown.clone(),
    )
    .await
    {
        Ok((b, task)) => {
            connection = Some(task);
            println!(
                "connected to {url}; database {}",
                iot_migrations::redact(&cfg.database.url)
            );
            Some(b)
        }
        Err(e) => {
            println!("no broker ({e}); database commands only");
            None
        }
    };
    println!("type `help` for commands");
    let mut subs: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let line = line.trim();
        let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
        let rest = rest.trim();
        match cmd {
            "" => {}
            "help" | "?" => println!("{HELP}"),
            "quit" | "exit" => break,
            "list" => {
                let db = db.clone();
                let rows = tokio::task::spawn_blocking(move || {
                    db.lock()
                        .map_err(|_| anyhow::anyhow!("db lock"))?
                        .load_das()
                        .map_err(anyhow::Error::from)
                })
                .await??;
                println!("{} DA(s)", rows.len());
                for r in rows {
                    println!("  {}  {}  {}", r.id, r.name, r.profile);
                }
            }
            "show" => {
                let db = db.clone();
                let id = rest.to_owned();
                let rows = tokio::task::spawn_blocking(move || {
                    db.lock()
                        .map_err(|_| anyhow::anyhow!("db lock"))?
                        .load_das()
                        .map_err(anyhow::Error::from)
                })
                .await??;
                match rows.into_iter().find(|r| r.id == id) {
                    Some(r) => println!("{r:#?}"),
                    None => println!("no DA {id}"),
                }
            }
            "pub" | "sub" | "unsub" if broker.is_none() => println!("not connected to a broker"),
            "pub" => {
                let Some(b) = &broker else { continue };
                let mut words: Vec<&str> = rest.split(' ').collect();
                let mut qos = QoS::AtMostOnce;
                let mut retain = false;
                while let Some(last) = words.last() {
                    match *last {
                        "retain" => retain = true,
                        "qos=0" => qos = QoS::AtMostOnce,
                        "qos=1" => qos = QoS::AtLeastOnce,
                        "qos=2" => qos = QoS::ExactlyOnce,
                        _ => break,
                    }
                    words.pop();
                }
                let Some((topic, payload)) = words.split_first() else {
                    println!("usage: pub TOPIC PAYLOAD [qos=N] [retain]");
                    continue;
                };
                let msg = Message::new(*topic, payload.join(" ").into_bytes(), qos, retain);
                match b.publish(msg).await {
                    Ok(()) => println!("published"),
                    Err(e) => println!("error: {e}"),
                }
            }
            "sub" => {
                let Some(b) = &broker else { continue };
                match b.subscribe(rest, 1024).await {
                    Ok(mut sub) => {
                        let filter = rest.to_owned();
                        subs.insert(
                            filter,
                            tokio::spawn(async move {
                                while let Some(m) = sub.recv().await {
                                    println!(
                                        "{} {}{}",
                                        m.topic,
                                        String::from_utf8_lossy(&m.payload),
                                        if m.retain { " (retained)" } else { "" }
                                    );
                                }
                            }),
                        );
                        println!("subscribed to {rest}");
                    }
                    Err(e) => println!("error: {e}"),
                }
            }
            "unsub" => match subs.remove(rest) {
                Some(t) => {
                    t.abort();
                    println!("unsubscribed from {rest}");
                }
                None => println!("not subscribed to {rest}"),
            },
            other => println!("unknown command `{other}`; type `help`"),
        }
    }
    // Let queued publishes and the DISCONNECT go out before leaving.
    shutdown.cancel();
    if let Some(task) = connection {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), task).await;
    }
    Ok(())
}
