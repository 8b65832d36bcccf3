//! `iotctl key ...`: the keymanager (docs/keymanager.md). The admin commands (init, unseal,
//! seal, status, rotate, put, rm, list, client, audit) go to the running controller's
//! `/api/keys`, which answers only from its own machine; `get` is a client like any other,
//! over MQTT. Passwords and values are read from stdin, never from the command line.

use std::io::{BufRead, Read, Write};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::ccm_api::Api;
use crate::config::Config;
use crate::service::Login;

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create the key store with an unseal password (first line of stdin); it is unsealed
    /// afterwards. Keep the password: nothing can open the store without it.
    Init {
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Unseal the running controller's key store (the password: first line of stdin).
    Unseal {
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Seal the key store: the decrypted key is wiped; requests answer `sealed`.
    Seal,
    /// Whether the store exists and is sealed, and how many keys and clients it holds.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Change the unseal password: the current one on the first line of stdin, the new one on
    /// the second. Every record is encrypted again under a new key and salt.
    Rotate {
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Store a secret; the value is all of stdin (one trailing newline removed unless --raw).
    Put {
        name: String,
        #[arg(long, required = true)]
        value_stdin: bool,
        /// Keep stdin byte for byte (a trailing newline included).
        #[arg(long)]
        raw: bool,
    },
    /// Remove a secret.
    Rm { name: String },
    /// The secrets' names and when each changed (never values).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Clients: machines allowed to read some keys.
    Client {
        #[command(subcommand)]
        command: ClientCommand,
    },
    /// Fetch a key as a client, over MQTT (the kcore `kmc`): the client's password is the
    /// first line of stdin; the value goes to stdout as it is (a newline added on a terminal).
    /// Retries what may pass later (no reply, `sealed`, `limited`, `replay`); on failure the
    /// exit status is 1 and the error names the keymanager's code.
    Get {
        name: String,
        /// The keymanager client to ask as.
        #[arg(long)]
        client: String,
        #[arg(long, required = true)]
        password_stdin: bool,
        /// This machine's id (default: $IOTCTL_MACHINE_ID, else /etc/machine-id).
        #[arg(long)]
        machine_id: Option<String>,
        /// The broker, `mqtt://HOST:PORT` or `mqtts://HOST:PORT` (default: the running
        /// controller's, else `broker.external`, else `broker.listen`).
        #[arg(long)]
        broker: Option<String>,
        /// Attempts after the first.
        #[arg(long, default_value_t = 3)]
        retries: u32,
        /// A CA certificate (PEM) to trust for `mqtts`, besides the system's.
        #[arg(long)]
        ca_file: Option<std::path::PathBuf>,
    },
    /// The audit trail, newest first: requests and admin actions (never values).
    Audit {
        /// How many records (1 to 10000).
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Only this client's.
        #[arg(long)]
        client: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Add (or replace) a client bound to a machine; its password is the first line of stdin.
    Add {
        name: String,
        /// The client machine's id (its /etc/machine-id, or what it sets in IOTCTL_MACHINE_ID).
        #[arg(long)]
        machine_id: String,
        /// The keys it may read, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        keys: Vec<String>,
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Remove a client.
    Rm { name: String },
    /// The clients and the keys each may read.
    List {
        #[arg(long)]
        json: bool,
    },
}

/// The first line of stdin, without its line end; refused when empty.
fn read_line(what: &str, lines: &mut impl BufRead) -> Result<Zeroizing<String>> {
    let mut line = Zeroizing::new(String::new());
    lines
        .read_line(&mut line)
        .with_context(|| format!("cannot read {what} from stdin"))?;
    let pw = Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned());
    if pw.is_empty() {
        bail!("{what} is empty (give it on stdin)");
    }
    Ok(pw)
}

fn password() -> Result<Zeroizing<String>> {
    read_line("the password", &mut std::io::stdin().lock())
}

fn path_of(prefix: &str, name: &str) -> String {
    format!("{prefix}/{}", iot_proto::url::percent_encode(name))
}

/// The broker of this configuration: the running controller's MQTT listener, else the
/// external broker, else `broker.listen` (a wildcard address as loopback).
fn default_broker(cfg: &Config) -> String {
    if let Some(addr) = crate::runfile::read_state(cfg).and_then(|s| s.mqtt) {
        return format!("mqtt://{addr}");
    }
    if !cfg.broker.external.is_empty() {
        return cfg.broker.external.clone();
    }
    let listen = cfg.broker.embedded.listen.replace("0.0.0.0", "127.0.0.1");
    format!("mqtt://{listen}")
}

/// `2026-12-03T15:40:05Z`.
fn time_text(unix: f64) -> String {
    chrono::DateTime::from_timestamp(unix as i64, 0).map_or_else(
        || "?".to_owned(),
        |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

pub async fn run(cfg: &Config, command: KeyCommand, login: Option<Login>) -> Result<ExitCode> {
    let api = Api::new(cfg, login.clone());
    match command {
        KeyCommand::Init { .. } => {
            let pw = password()?;
            api.call(
                Method::POST,
                "/api/keys/init",
                Some(json!({"password": pw.as_str()})),
            )
            .await?;
            println!("key store created and unsealed");
        }
        KeyCommand::Unseal { .. } => {
            let pw = password()?;
            api.call(
                Method::POST,
                "/api/keys/unseal",
                Some(json!({"password": pw.as_str()})),
            )
            .await?;
            println!("unsealed");
        }
        KeyCommand::Seal => {
            api.call(Method::POST, "/api/keys/seal", None).await?;
            println!("sealed");
        }
        KeyCommand::Status { json } => {
            let v = api.call(Method::GET, "/api/keys/status", None).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if v["initialised"] != Value::Bool(true) {
                println!("not initialised (run `iotctl key init --password-stdin`)");
            } else {
                let state = if v["sealed"] == Value::Bool(true) {
                    "sealed"
                } else {
                    "unsealed"
                };
                println!("{state}, {} keys, {} clients", v["keys"], v["clients"]);
            }
        }
        KeyCommand::Rotate { .. } => {
            let mut stdin = std::io::stdin().lock();
            let current = read_line("the current password", &mut stdin)?;
            let next = read_line("the new password (second line)", &mut stdin)?;
            let body = json!({"password": current.as_str(), "new_password": next.as_str()});
            api.call(Method::POST, "/api/keys/rotate", Some(body))
                .await?;
            println!("unseal password changed");
        }
        KeyCommand::Put { name, raw, .. } => {
            let mut value = Zeroizing::new(Vec::new());
            std::io::stdin()
                .read_to_end(&mut value)
                .context("cannot read the value from stdin")?;
            if !raw {
                for end in [&b"\r\n"[..], b"\n"] {
                    if value.ends_with(end) {
                        let keep = value.len() - end.len();
                        value.truncate(keep);
                        break;
                    }
                }
            }
            let b64 = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&*value));
            api.call(
                Method::PUT,
                &path_of("/api/keys/secrets", &name),
                Some(json!({"value_b64": b64.as_str()})),
            )
            .await?;
            println!("stored `{name}` ({} bytes)", value.len());
        }
        KeyCommand::Rm { name } => {
            api.call(Method::DELETE, &path_of("/api/keys/secrets", &name), None)
                .await?;
            println!("removed `{name}`");
        }
        KeyCommand::List { json } => {
            let v = api.call(Method::GET, "/api/keys/secrets", None).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for k in v.as_array().into_iter().flatten() {
                    let t = k["updated"].as_f64().unwrap_or(0.0);
                    println!("{}  {}", time_text(t), k["name"].as_str().unwrap_or("?"));
                }
            }
        }
        KeyCommand::Client { command } => client(&api, command).await?,
        KeyCommand::Get {
            name,
            client,
            machine_id,
            broker,
            retries,
            ca_file,
            ..
        } => {
            let broker = broker.unwrap_or_else(|| default_broker(cfg));
            let mut b = da_sdk::KeyClient::builder(broker, client, password()?).retries(retries);
            if let Some(m) = machine_id {
                b = b.machine_id(m);
            }
            if let Some(l) = &login {
                b = b.credentials(l.user(), Zeroizing::new(l.password().to_owned()));
            }
            if let Some(f) = ca_file {
                let pem =
                    std::fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?;
                b = b.tls_roots_pem(pem);
            }
            let value = b.build()?.get(&name).await?;
            let mut out = std::io::stdout().lock();
            out.write_all(&value)?;
            if std::io::IsTerminal::is_terminal(&out) {
                out.write_all(b"\n")?;
            }
            out.flush()?;
        }
        KeyCommand::Audit {
            limit,
            client,
            json,
        } => {
            let mut path = format!("/api/keys/audit?limit={limit}");
            if let Some(c) = client {
                path.push_str(&format!("&client={}", iot_proto::url::percent_encode(&c)));
            }
            let v = api.call(Method::GET, &path, None).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let mut out = std::io::stdout().lock();
                for r in v.as_array().into_iter().flatten() {
                    let s = |k: &str| r[k].as_str().unwrap_or("").to_owned();
                    writeln!(
                        out,
                        "{}  {:<10} {:<16} client={} key={} from={}",
                        time_text(r["time"].as_f64().unwrap_or(0.0)),
                        s("action"),
                        s("result"),
                        s("client").escape_debug(),
                        s("key").escape_debug(),
                        s("from").escape_debug(),
                    )?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn client(api: &Api, command: ClientCommand) -> Result<()> {
    match command {
        ClientCommand::Add {
            name,
            machine_id,
            keys,
            ..
        } => {
            let pw = password()?;
            let body = json!({"machine_id": machine_id, "keys": keys, "password": pw.as_str()});
            api.call(
                Method::PUT,
                &path_of("/api/keys/clients", &name),
                Some(body),
            )
            .await?;
            println!("client `{name}` may read {}", keys.join(", "));
        }
        ClientCommand::Rm { name } => {
            api.call(Method::DELETE, &path_of("/api/keys/clients", &name), None)
                .await?;
            println!("removed client `{name}`");
        }
        ClientCommand::List { json } => {
            let v = api.call(Method::GET, "/api/keys/clients", None).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for c in v.as_array().into_iter().flatten() {
                    let keys: Vec<&str> = c["keys"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    println!(
                        "{}  {}: {}",
                        time_text(c["updated"].as_f64().unwrap_or(0.0)),
                        c["name"].as_str().unwrap_or("?"),
                        keys.join(", ")
                    );
                }
            }
        }
    }
    Ok(())
}
