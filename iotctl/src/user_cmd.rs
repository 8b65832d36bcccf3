//! `iotctl user add|list|rm|passwd`: controller users in the database. A running controller
//! sees the change within a few seconds (it reloads the `users` table). Passwords are read
//! from stdin or generated and printed once; only their Argon2id hash is stored.

use std::io::BufRead;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use iot_auth::password;
use iot_migrations::users::UserRow;
use iot_migrations::Db;
use iot_proto::auth::Role;
use zeroize::Zeroizing;

use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user; prints a generated password unless --password-stdin.
    Add {
        name: String,
        /// admin (everything) or app (request/response services only).
        #[arg(long, value_parser = ["admin", "app"])]
        role: String,
        /// Read the password from the first line of stdin instead of generating one.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users and their roles.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a user.
    Rm { name: String },
    /// Change a user's password; prints a generated one unless --password-stdin.
    Passwd {
        name: String,
        /// Read the password from the first line of stdin instead of generating one.
        #[arg(long)]
        password_stdin: bool,
    },
}

pub async fn run(cfg: &Config, command: UserCommand) -> Result<ExitCode> {
    let url = cfg.database.url.clone();
    tokio::task::spawn_blocking(move || run_blocking(&url, command)).await?
}

fn run_blocking(url: &str, command: UserCommand) -> Result<ExitCode> {
    let mut db = Db::connect(url)?;
    db.migrate()?;
    match command {
        UserCommand::Add {
            name,
            role,
            password_stdin,
        } => {
            password::check_name(&name)?;
            let role: Role = role.parse()?;
            let (pw, generated) = new_password(password_stdin)?;
            let row = UserRow {
                name: name.clone(),
                role: role.to_string(),
                password_hash: password::hash(pw.as_bytes())?,
                created_time: iot_csm::now_epoch(),
            };
            if !db.insert_user(&row)? {
                bail!("user `{name}` exists; `iotctl user passwd {name}` changes the password");
            }
            println!("added user {name} ({role})");
            if generated {
                println!("password: {}", pw.as_str());
                println!("(shown once: store it now; `iotctl user passwd {name}` sets a new one)");
            }
        }
        UserCommand::List { json } => {
            let users = db.load_users()?;
            if json {
                let list: Vec<_> = users
                    .iter()
                    .map(|u| serde_json::json!({"name": u.name, "role": u.role, "created_time": u.created_time}))
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else if users.is_empty() {
                println!("no users (add one with `iotctl user add NAME --role admin`)");
            } else {
                println!("{:<32} ROLE", "NAME");
                for u in users {
                    println!("{:<32} {}", u.name, u.role);
                }
            }
        }
        UserCommand::Rm { name } => {
            if !db.delete_user(&name)? {
                bail!("no user `{name}`");
            }
            println!("removed user {name}");
        }
        UserCommand::Passwd {
            name,
            password_stdin,
        } => {
            let (pw, generated) = new_password(password_stdin)?;
            if !db.set_user_password(&name, &password::hash(pw.as_bytes())?)? {
                bail!("no user `{name}`");
            }
            println!("changed the password of {name}");
            if generated {
                println!("password: {}", pw.as_str());
                println!("(shown once: store it now)");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The password from stdin's first line, or a generated one (and whether it was generated).
fn new_password(from_stdin: bool) -> Result<(Zeroizing<String>, bool)> {
    if !from_stdin {
        return Ok((password::generate(), true));
    }
    let mut line = Zeroizing::new(String::new());
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from stdin")?;
    let pw = Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned());
    password::check_password(pw.as_bytes())?;
    Ok((pw, false))
}
