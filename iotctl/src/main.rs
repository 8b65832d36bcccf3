//! `iotctl`: the one command line of the controller. This binary is the only place with clap,
//! the tracing subscriber and `anyhow`; the servers live in library crates.
//!
//! Layout: [`config`] (typed settings), [`run`] (initdb, start: one `start_*` per component,
//! wiring them, signals), [`runfile`] (the pidfile and the state file), [`service`] (stop,
//! status), [`user_cmd`] (`iotctl user`), [`acl_cmd`] (`iotctl acl export`), [`exposure`]
//! (the public-bind check of `start`), [`tls`] (`[tls]` and its checks), [`gencert`] (a CA
//! and server certificate to try TLS),
//! [`shell`] (interactive console), [`bench_cmd`] (the flags of `iotctl bench` and
//! where the controller is; the load tests themselves are the `iot-bench` crate).

mod acl_cmd;
mod bench_cmd;
mod ccm_api;
mod config;
mod da_cmd;
mod exposure;
mod gencert;
mod home_cmd;
mod key_cmd;
mod project_cmd;
mod run;
mod runfile;
mod service;
mod shell;
mod tls;
mod user_cmd;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use iot_auth::logz::{LogRing, LogzLayer};

use crate::config::{Config, DEFAULT_CONFIG};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// IoTtalk-compatible IoT controller: an MQTT broker, device registration, and routing.
#[derive(Debug, Parser)]
#[command(name = "iotctl", version, about)]
struct Cli {
    /// Debug logging.
    #[arg(short, long, global = true)]
    debug: bool,
    /// Configuration file (TOML; `iotctl genconf FILE` writes a documented one).
    #[arg(short, long, global = true, value_name = "FILE", env = "IOTCTL_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write the documented default configuration to DEST.
    Genconf {
        dest: PathBuf,
        /// Overwrite DEST if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Write a CA (ca.pem) and a server certificate signed by it (server.pem, server.key)
    /// into DIR, to try TLS out; prints the configuration lines to add.
    Gencert {
        dir: PathBuf,
        /// Another name or IP address the certificate is for (besides localhost, 127.0.0.1
        /// and ::1); repeatable.
        #[arg(long = "host", value_name = "NAME")]
        hosts: Vec<String>,
        /// Overwrite the files if they exist.
        #[arg(long)]
        force: bool,
    },
    /// Create the database or migrate it to the current schema.
    Initdb,
    /// Start the controller in the foreground (Ctrl-C or `iotctl stop` to stop).
    Start {
        #[arg(value_enum, default_value_t = Component::All)]
        component: Component,
    },
    /// Stop the controller started with this configuration.
    Stop,
    /// Stop the running controller, then start it again in the foreground.
    Restart {
        #[arg(value_enum, default_value_t = Component::All)]
        component: Component,
    },
    /// Show whether each component is up, with registered and online DA counts.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// An admin user, when authentication is on (its password from IOTCTL_PASSWORD).
        #[arg(long, env = "IOTCTL_USER")]
        user: Option<String>,
    },
    /// The topic ACL for an external broker (see docs/security.md).
    Acl {
        #[command(subcommand)]
        command: acl_cmd::AclCommand,
    },
    /// The configuration manager's projects: list, show, on, off, export, import
    /// (docs/ccm.md).
    Project {
        #[command(subcommand)]
        command: project_cmd::ProjectCommand,
        /// An admin user, when authentication is on (its password from IOTCTL_PASSWORD).
        #[arg(long, env = "IOTCTL_USER", global = true)]
        user: Option<String>,
    },
    /// Home scenes: import, export, list, run (docs/home.md).
    Home {
        #[command(subcommand)]
        command: home_cmd::HomeCommand,
        /// An admin user, when authentication is on (its password from IOTCTL_PASSWORD).
        #[arg(long, env = "IOTCTL_USER", global = true)]
        user: Option<String>,
    },
    /// The keymanager: init, unseal, seal, status, rotate, put, rm, list, client, audit, get
    /// (docs/keymanager.md).
    Key {
        #[command(subcommand)]
        command: key_cmd::KeyCommand,
        /// An admin user, when authentication is on (its password from IOTCTL_PASSWORD); for
        /// `get`, the broker user (an app user named like the client).
        #[arg(long, env = "IOTCTL_USER", global = true)]
        user: Option<String>,
    },
    /// The operator's DA: call a method of a DA or app (streamed items printed as they
    /// arrive), send or fetch a file (docs/sdk.md).
    Da {
        #[command(subcommand)]
        command: da_cmd::DaCommand,
    },
    /// Manage controller users (admin and app roles; see docs/security.md).
    User {
        #[command(subcommand)]
        command: user_cmd::UserCommand,
    },
    /// Interactive console with the database and a broker connection ready.
    Shell,
    /// Measure a controller (or any MQTT broker): throughput, loss, latency, CPU, memory.
    Bench {
        #[command(subcommand)]
        command: bench_cmd::BenchCommand,
    },
}

/// What `start` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Component {
    /// Broker, CSM and CCM (with the web GUI) in one process.
    All,
    /// Only the embedded MQTT broker.
    Broker,
    /// Only the CSM, using the broker of `broker.external` or `broker.listen`.
    Csm,
    /// Only the Configuration and Control Manager and its web GUI, using the broker of
    /// `broker.external` or `broker.listen` and the CSM on it.
    Ccm,
}

/// Logs to stderr and keeps the last `log.logz_lines` lines for `/logz` (the ring returned).
fn init_tracing(cfg: &Config, debug: bool, quiet_sdk: bool) -> Arc<LogRing> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::EnvFilter;
    let mut level = if debug {
        "debug".to_owned()
    } else {
        cfg.log.level.clone()
    };
    // rmqtt and ntex log a lot at info; keep them quiet unless asked for by name.
    if !level.contains("rmqtt") {
        level.push_str(",rmqtt=warn,rmqtt_net=warn,rmqtt_retainer=warn,rmqtt_shared_subscription=warn,ntex=warn,ntex_mqtt=warn,ntex_io=warn,rumqttc=warn");
    }
    // `iotctl da`: the operator's DA registering and leaving is not news on the terminal.
    if quiet_sdk && !debug && !level.contains("da_sdk") {
        level.push_str(",da_sdk=warn");
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let ring = LogRing::new(cfg.log.logz_lines);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(LogzLayer(ring.clone()))
        .try_init();
    ring
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("iotctl: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> Result<ExitCode> {
    if let Command::Genconf { dest, force } = &cli.command {
        if dest.exists() && !force {
            anyhow::bail!("{} exists; pass --force to overwrite it", dest.display());
        }
        std::fs::write(dest, DEFAULT_CONFIG)
            .with_context(|| format!("cannot write {}", dest.display()))?;
        println!("wrote the default configuration to {}", dest.display());
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Gencert { dir, hosts, force } = &cli.command {
        gencert::run(dir, hosts, *force)?;
        return Ok(ExitCode::SUCCESS);
    }
    let cfg = Config::load(cli.config.as_deref())?;
    let logz = init_tracing(&cfg, cli.debug, matches!(cli.command, Command::Da { .. }));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.command {
            Command::Genconf { .. } | Command::Gencert { .. } => Ok(ExitCode::SUCCESS),
            Command::Initdb => run::initdb(&cfg).await.map(|()| ExitCode::SUCCESS),
            Command::Start { component } => run::start(cfg, component, logz)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Stop => service::stop(&cfg).await,
            Command::Restart { component } => {
                service::stop(&cfg).await?;
                run::start(cfg, component, logz)
                    .await
                    .map(|()| ExitCode::SUCCESS)
            }
            Command::Status { json, user } => {
                let login = service::Login::from_env(user)?;
                service::status(&cfg, json, login.as_ref()).await
            }
            Command::User { command } => user_cmd::run(&cfg, command).await,
            Command::Project { command, user } => {
                let login = service::Login::from_env(user)?;
                project_cmd::run(&cfg, command, login).await
            }
            Command::Home { command, user } => {
                let login = service::Login::from_env(user)?;
                home_cmd::run(&cfg, command, login).await
            }
            Command::Key { command, user } => {
                let login = service::Login::from_env(user)?;
                key_cmd::run(&cfg, command, login).await
            }
            Command::Acl { command } => acl_cmd::run(&cfg, command).await,
            Command::Da { command } => da_cmd::run(&cfg, command).await,
            Command::Shell => shell::run(&cfg).await.map(|()| ExitCode::SUCCESS),
            Command::Bench { command } => bench_cmd::run(&cfg, command).await,
        }
    })
}
