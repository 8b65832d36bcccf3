//! `iotctl home import|export|list|run`: the home catalog and runs over the configuration
//! manager's REST API (docs/home.md).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use iot_ccm::home::catalog::{Catalog, Driver};
use iot_proto::home::HomeResult;
use reqwest::Method;
use serde_json::{json, Value};

use crate::ccm_api::Api;
use crate::config::Config;
use crate::service::Login;

#[derive(Debug, Subcommand)]
pub enum HomeCommand {
    /// Add the devices and scenes of a TOML file (FILE, or `-` for stdin) to the catalog,
    /// replacing those of the same name.
    Import {
        file: PathBuf,
        /// Make the file the whole catalog (devices and scenes not in it are removed).
        #[arg(long)]
        replace: bool,
    },
    /// Print the catalog as TOML (what `import` reads).
    Export,
    /// The devices and scenes, one per line.
    List,
    /// Run a device or scene (or a unique part of its name) and print the result tree; the
    /// exit status is 0 only when every device succeeded.
    Run {
        target: String,
        /// `on` (default), `off`, `dim`, `med`, `full` or `dim:N`.
        cmd: Option<String>,
        /// The whole run's deadline (default `home.deadline_ms`).
        #[arg(long)]
        deadline_ms: Option<u64>,
        /// Print the JSON result instead of the tree.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cfg: &Config, command: HomeCommand, login: Option<Login>) -> Result<ExitCode> {
    let api = Api::new(cfg, login);
    match command {
        HomeCommand::Import { file, replace } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?
            };
            let c = Catalog::read_toml(&text).with_context(|| format!("{}", file.display()))?;
            let (d, s) = (c.devices.len(), c.scenes.len());
            let path = if replace {
                "/api/home?replace=true"
            } else {
                "/api/home"
            };
            let now = api
                .call(Method::PUT, path, Some(serde_json::to_value(&c)?))
                .await?;
            let count = |k: &str| now[k].as_object().map_or(0, serde_json::Map::len);
            println!(
                "imported {d} devices and {s} scenes (the catalog now has {} devices and {} scenes)",
                count("devices"),
                count("scenes")
            );
        }
        HomeCommand::Export => {
            let c = catalog(&api).await?;
            print!(
                "{}",
                c.to_toml().context("cannot write the catalog as TOML")?
            );
        }
        HomeCommand::List => print_list(&catalog(&api).await?),
        HomeCommand::Run {
            target,
            cmd,
            deadline_ms,
            json,
        } => {
            let mut body = json!({});
            if let Some(c) = cmd {
                body["cmd"] = c.into();
            }
            if let Some(d) = deadline_ms {
                body["deadline_ms"] = d.into();
            }
            let path = format!("/api/home/run/{}", iot_proto::url::percent_encode(&target));
            let v = api.call(Method::POST, &path, Some(body)).await?;
            let r: HomeResult = serde_json::from_value(v.clone())
                .context("the API answered something that is not a result")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_tree(&r, 0);
            }
            return Ok(if r.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn catalog(api: &Api) -> Result<Catalog> {
    let v: Value = api.call(Method::GET, "/api/home", None).await?;
    serde_json::from_value(v).context("the API answered something that is not a catalog")
}

fn print_list(c: &Catalog) {
    let width =
        |names: &mut dyn Iterator<Item = &String>| names.map(String::len).max().unwrap_or(0);
    let dw = width(&mut c.devices.keys());
    let sw = width(&mut c.scenes.keys());
    println!("devices:");
    for (name, d) in &c.devices {
        let what = match d {
            Driver::Tplink { host, port, kind } => format!("tplink {host}:{port} ({kind})"),
            Driver::Http { url } => format!("http {url}"),
            Driver::Mqtt { topic, payload } => format!("mqtt {topic} <- {payload}"),
            Driver::Da { da, odf } => format!("da {da} {odf}"),
            Driver::Delay { ms } => format!("delay {ms} ms"),
        };
        println!("  {name:<dw$}  {what}");
    }
    println!("scenes:");
    for (name, s) in &c.scenes {
        let mode = match s.mode() {
            iot_ccm::home::catalog::Mode::Parallel => "parallel",
            iot_ccm::home::catalog::Mode::Sequence => "sequence",
        };
        println!("  {name:<sw$}  {mode}  {}", s.items().join(", "));
    }
}

/// One line per target, children indented.
fn print_tree(r: &HomeResult, depth: usize) {
    let state = if r.ok { "ok" } else { "FAILED" };
    let detail = r
        .detail
        .as_deref()
        .map(|d| format!(": {d}"))
        .unwrap_or_default();
    let retry = r
        .retry_after_ms
        .map(|ms| format!(" (try again in {ms} ms)"))
        .unwrap_or_default();
    println!(
        "{:indent$}{state} {} {} ({} ms){detail}{retry}",
        "",
        r.target,
        r.cmd,
        r.ms,
        indent = depth * 2
    );
    for c in &r.children {
        print_tree(c, depth + 1);
    }
}
