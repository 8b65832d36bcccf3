//! `iotctl acl export --format mosquitto`: the topic ACL as a Mosquitto `acl_file`, for a
//! controller using an external broker (which enforces its own ACL). Read from the database:
//! users, DAs and the data topics of their links (see `iot_csm::acl::mosquitto`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Subcommand, ValueEnum};
use iot_csm::acl::mosquitto;
use iot_migrations::Db;
use iot_proto::auth::Role;
use iot_proto::DaId;

use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// Write the ACL for another broker (a snapshot: run again after users, DAs or links change).
    Export {
        #[arg(long, value_enum)]
        format: AclFormat,
        /// Write to FILE instead of standard output.
        #[arg(long, short, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AclFormat {
    /// A Mosquitto `acl_file`.
    Mosquitto,
}

pub async fn run(cfg: &Config, command: AclCommand) -> Result<ExitCode> {
    let AclCommand::Export { format, out } = command;
    let url = cfg.database.url.clone();
    let home_das = cfg.home.allow_das;
    let text = tokio::task::spawn_blocking(move || export(&url, format, home_das)).await??;
    match out {
        Some(path) => {
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote the Mosquitto ACL to {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn export(url: &str, format: AclFormat, home_das: bool) -> Result<String> {
    let AclFormat::Mosquitto = format;
    let mut db = Db::connect(url)?;
    db.migrate()?;
    let users: Vec<(String, Role)> = db
        .load_users()?
        .into_iter()
        .filter_map(|u| Some((u.name, u.role.parse().ok()?)))
        .collect();
    let das: Vec<DaId> = db
        .load_das()?
        .into_iter()
        .filter_map(|d| d.id.parse().ok())
        .collect();
    let docs: Vec<String> = db.load_graphs()?.into_iter().map(|g| g.doc).collect();
    let (links, unreadable) = mosquitto::link_topics(&docs);
    if unreadable > 0 {
        tracing::warn!(
            graphs.unreadable = unreadable,
            "some stored graphs could not be read: their data topics are missing from the ACL"
        );
    }
    // Home commands from DAs: `home.allow_das`, as in `run`.
    Ok(mosquitto::export(&users, &das, &links, home_das))
}
