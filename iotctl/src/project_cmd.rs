//! `iotctl project list|show|on|off|export|import`: the CCM's projects over its REST API
//! (docs/ccm.md), at the address the running controller wrote in its state file (else
//! `ccm.listen`). With authentication on, as an admin: `--user`/`IOTCTL_USER` and the password
//! in `IOTCTL_PASSWORD`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use serde_json::Value;

use crate::ccm_api::Api;
use crate::config::Config;
use crate::service::Login;

#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// The projects: id, name, on/off, device objects and network applications.
    List,
    /// One project (by id or name), with how each network application stands.
    Show {
        project: String,
        /// Print the JSON the API answers.
        #[arg(long)]
        json: bool,
    },
    /// Turn a project on: the CCM applies it to the CSM.
    On { project: String },
    /// Turn a project off: its graphs are detached.
    Off { project: String },
    /// Write a project, with the models, features and function versions it uses, as JSON
    /// (to stdout, or to FILE).
    Export {
        project: String,
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Import an exported project (FILE, or `-` for stdin) as a new project.
    Import {
        file: PathBuf,
        /// Import under this name instead of the file's.
        #[arg(long)]
        name: Option<String>,
    },
}

impl Api {
    /// The id of a project named by id or by name.
    async fn find(&self, project: &str) -> Result<u64> {
        let list = self
            .call(reqwest::Method::GET, "/api/projects", None)
            .await?;
        let all = list.as_array().cloned().unwrap_or_default();
        if let Some(p) = all.iter().find(|p| p["name"] == project) {
            return p["id"]
                .as_u64()
                .context("the API answered a project without an id");
        }
        if let Ok(id) = project.parse::<u64>() {
            if all.iter().any(|p| p["id"] == id) {
                return Ok(id);
            }
        }
        bail!("no project `{project}` (see `iotctl project list`)")
    }
}

pub async fn run(cfg: &Config, command: ProjectCommand, login: Option<Login>) -> Result<ExitCode> {
    use reqwest::Method;
    let api = Api::new(cfg, login);
    match command {
        ProjectCommand::List => {
            let list = api.call(Method::GET, "/api/projects", None).await?;
            println!(
                "{:>4}  {:<32} {:<4} {:>8} {:>8}",
                "id", "name", "on", "objects", "netapps"
            );
            for p in list.as_array().cloned().unwrap_or_default() {
                // Numbers as u64: a JSON value ignores the column widths.
                let n = |k: &str| p[k].as_u64().unwrap_or_default();
                println!(
                    "{:>4}  {:<32} {:<4} {:>8} {:>8}",
                    n("id"),
                    p["name"].as_str().unwrap_or_default(),
                    if p["on"] == true { "on" } else { "off" },
                    n("objects"),
                    n("netapps")
                );
            }
        }
        ProjectCommand::Show { project, json } => {
            let id = api.find(&project).await?;
            let v = api
                .call(Method::GET, &format!("/api/projects/{id}"), None)
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_project(&v);
            }
        }
        ProjectCommand::On { project } => switch(&api, &project, "on").await?,
        ProjectCommand::Off { project } => switch(&api, &project, "off").await?,
        ProjectCommand::Export { project, output } => {
            let id = api.find(&project).await?;
            let v = api
                .call(Method::GET, &format!("/api/projects/{id}/export"), None)
                .await?;
            let text = serde_json::to_string_pretty(&v)? + "\n";
            match output {
                Some(path) => {
                    std::fs::write(&path, text)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    eprintln!("exported project `{project}` to {}", path.display());
                }
                None => print!("{text}"),
            }
        }
        ProjectCommand::Import { file, name } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?
            };
            let doc: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            let path = match &name {
                Some(n) => format!(
                    "/api/projects/import?name={}",
                    iot_proto::url::percent_encode(n)
                ),
                None => "/api/projects/import".into(),
            };
            let p = api.call(Method::POST, &path, Some(doc)).await?;
            println!(
                "imported project `{}` (id {}, {})",
                p["name"].as_str().unwrap_or_default(),
                p["id"],
                if p["on"] == true { "on" } else { "off" }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn switch(api: &Api, project: &str, to: &str) -> Result<()> {
    let id = api.find(project).await?;
    api.call(
        reqwest::Method::POST,
        &format!("/api/projects/{id}/{to}"),
        None,
    )
    .await?;
    println!("project `{project}` is {to}");
    Ok(())
}

fn print_project(v: &Value) {
    let p = &v["project"];
    let st = &v["status"];
    println!(
        "project {} `{}`: {} (auto-bind {})",
        p["id"],
        p["name"].as_str().unwrap_or_default(),
        if p["on"] == true { "on" } else { "off" },
        if p["auto_bind"] == true { "on" } else { "off" }
    );
    println!("device objects:");
    for o in p["objects"].as_array().cloned().unwrap_or_default() {
        let s = &st["objects"][o["id"].to_string()];
        let bound = match o["da_id"].as_str() {
            Some(da) => format!(
                "bound to {da} ({}, {})",
                s["da_name"].as_str().unwrap_or("unknown DA"),
                match s["online"].as_bool() {
                    Some(true) => "online",
                    Some(false) => "offline",
                    None => "not registered",
                }
            ),
            None => "not bound".into(),
        };
        println!(
            "  {:>3}  {:<24} {bound}",
            o["id"],
            o["model"].as_str().unwrap_or_default()
        );
    }
    println!("network applications:");
    for n in p["netapps"].as_array().cloned().unwrap_or_default() {
        let s = &st["netapps"][n["id"].to_string()];
        let join = match n["join"]["name"].as_str() {
            Some(f) => format!("join {f} v{}", n["join"]["version"]),
            None => "no join function".into(),
        };
        println!(
            "  {:>3}  {:<24} {join}, {} links: {} {}",
            n["id"],
            n["name"].as_str().unwrap_or_default(),
            n["links"].as_array().map_or(0, Vec::len),
            s["state"].as_str().unwrap_or("-"),
            s["detail"].as_str().unwrap_or_default()
        );
        for l in n["links"].as_array().cloned().unwrap_or_default() {
            if let Some(e) = s["link_errors"][l["id"].to_string()].as_str() {
                println!(
                    "         link {} ({}): {e}",
                    l["id"],
                    l["feature"].as_str().unwrap_or_default()
                );
            }
        }
        if let Some(e) = s["join_error"].as_str() {
            println!("         join: {e}");
        }
    }
}
