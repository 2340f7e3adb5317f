//! `keel user …` and `keel token …`: who may log in to the API and the
//! pages. They write to the state store the configuration names (so the
//! first admin needs no login), and a running collector sees a change
//! within seconds. Each change is in the audit as `cli:<$USER>`.

use std::io::{BufRead as _, IsTerminal as _};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use keel_auth::Role;
use keel_auth::directory::{AuditEntry, Directory};

use crate::silence_cmd::time;

/// `keel user …`.
#[derive(clap::Subcommand)]
pub enum UserCommand {
    /// Add a person (the password is asked for, or read from stdin).
    Add {
        /// Their name (letters, digits, '.', '_', '@', '-').
        name: String,
        /// viewer, editor or admin.
        #[arg(long, default_value = "viewer")]
        role: Role,
        /// Read the password from stdin's first line instead of asking.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List people and their roles.
    List,
    /// Remove a person (their sessions end).
    Remove {
        /// Their name.
        name: String,
    },
    /// Change a password, or with --role only a role (sessions end).
    Passwd {
        /// Their name.
        name: String,
        /// A new role.
        #[arg(long)]
        role: Option<Role>,
        /// Read the password from stdin's first line instead of asking.
        #[arg(long)]
        password_stdin: bool,
    },
}

/// `keel token …`.
#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Make an API token (printed once: keep it), for Grafana, a script,
    /// or `KEEL_TOKEN` for this CLI.
    Create {
        /// What it is for.
        name: String,
        /// viewer, editor or admin.
        #[arg(long, default_value = "viewer")]
        role: Role,
        /// How long it lasts (`90d`); `never` for until revoked.
        #[arg(long, default_value = "90d")]
        expires: String,
    },
    /// List tokens (never the tokens themselves).
    List,
    /// Revoke tokens by id or name.
    Revoke {
        /// An id or a name.
        which: String,
    },
}

fn now_ms() -> i64 {
    keel_core::clock::unix_ms(std::time::SystemTime::now())
}

fn who() -> String {
    format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    )
}

/// The directory in the state store `keel.yaml` names.
async fn open(config: Option<&Path>) -> anyhow::Result<Directory> {
    let c = crate::config::load(config)?.collector;
    let Some(url) = c.state_url() else {
        bail!("collector.state is none: users and tokens need a state store");
    };
    if c.state.is_empty() {
        std::fs::create_dir_all(&c.data_dir)
            .with_context(|| format!("creating {}", c.data_dir.display()))?;
    }
    let store = keel_state::StateStore::open(&url).await?;
    Ok(Directory::new(Arc::new(store)))
}

async fn audit(d: &Directory, role: Role, what: String) {
    let e = AuditEntry {
        at_ms: now_ms(),
        who: who(),
        role,
        what,
        status: 0,
    };
    if let Err(e) = d.audit(&e).await {
        eprintln!("warning: the change was made but not audited: {e}");
    }
}

/// A password: stdin's first line, or asked for twice on the terminal.
fn password(from_stdin: bool) -> anyhow::Result<String> {
    if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    let first = rpassword::prompt_password("password: ")?;
    let again = rpassword::prompt_password("again: ")?;
    if first != again {
        bail!("the two passwords differ");
    }
    Ok(first)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// `keel user …`.
pub fn user(config: Option<&Path>, command: UserCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let d = open(config).await?;
        match command {
            UserCommand::Add {
                name,
                role,
                password_stdin,
            } => {
                let p = password(password_stdin)?;
                let u = d.add_user(&name, role, &p, now_ms()).await?;
                audit(
                    &d,
                    Role::Admin,
                    format!("user add {} --role {}", u.name, u.role),
                )
                .await;
                println!("user {} added ({})", u.name, u.role);
            }
            UserCommand::List => {
                println!("{:<24} {:<8} {:<22} CHANGED", "NAME", "ROLE", "ADDED");
                for u in d.users().await? {
                    println!(
                        "{:<24} {:<8} {:<22} {}",
                        u.name,
                        u.role,
                        time(u.created_ms),
                        time(u.updated_ms)
                    );
                }
            }
            UserCommand::Remove { name } => {
                if !d.remove_user(&name).await? {
                    bail!("no user {name:?}");
                }
                audit(&d, Role::Admin, format!("user remove {name}")).await;
                println!("user {name} removed");
            }
            UserCommand::Passwd {
                name,
                role,
                password_stdin,
            } => {
                let p = if role.is_some() && !password_stdin {
                    None
                } else {
                    Some(password(password_stdin)?)
                };
                let u = d.update_user(&name, p.as_deref(), role, now_ms()).await?;
                audit(&d, Role::Admin, format!("user passwd {name}")).await;
                println!("user {} changed ({}); their sessions end", u.name, u.role);
            }
        }
        Ok(())
    })
}

/// `keel token …`.
pub fn token(config: Option<&Path>, command: TokenCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let d = open(config).await?;
        match command {
            TokenCommand::Create {
                name,
                role,
                expires,
            } => {
                let now = now_ms();
                let expires_ms = keel_auth::directory::expiry(now, &expires)
                    .map_err(|e| anyhow::anyhow!("--expires: {e}"))?;
                let (token, rec) = d.create_token(&name, role, expires_ms, &who(), now).await?;
                audit(
                    &d,
                    Role::Admin,
                    format!("token create {name} --role {role}"),
                )
                .await;
                eprintln!(
                    "token {} ({}, {}, {}); it is shown once:",
                    rec.id,
                    rec.name,
                    rec.role,
                    rec.expires_ms.map_or_else(
                        || "never expires".into(),
                        |e| format!("expires {}", time(e))
                    )
                );
                println!("{token}");
            }
            TokenCommand::List => {
                println!(
                    "{:<14} {:<20} {:<8} {:<22} {:<22} BY",
                    "ID", "NAME", "ROLE", "CREATED", "EXPIRES"
                );
                for t in d.tokens().await? {
                    println!(
                        "{:<14} {:<20} {:<8} {:<22} {:<22} {}",
                        t.id,
                        t.name,
                        t.role,
                        time(t.created_ms),
                        t.expires_ms.map_or_else(|| "never".into(), time),
                        t.created_by
                    );
                }
            }
            TokenCommand::Revoke { which } => {
                let gone = d.revoke_token(&which).await?;
                if gone.is_empty() {
                    bail!("no token {which:?}");
                }
                audit(&d, Role::Admin, format!("token revoke {which}")).await;
                for t in gone {
                    println!("token {} ({}) revoked", t.id, t.name);
                }
            }
        }
        Ok(())
    })
}
