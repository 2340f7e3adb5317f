//! Who may log in, kept in the state store: users (name, role, argon2
//! hash), API tokens (id, name, role, expiry, the token's SHA-256) and the
//! audit of changes people made.
//!
//! `keel user …` and `keel token …` write here directly (so the first
//! admin needs no login); the collector reads users and tokens through a
//! short cache, so a removal or a role change applies within seconds.

use std::sync::Arc;

use keel_state::{Op, StateStore, Table};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::password;
use crate::role::Role;

/// A directory failure.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// The state store failed.
    #[error("{0}")]
    State(#[from] keel_state::StateError),
    /// A saved document does not parse.
    #[error("{table} {key:?}: {source}")]
    Corrupt {
        /// Which table.
        table: &'static str,
        /// Its key.
        key: String,
        /// Why.
        source: serde_json::Error,
    },
    /// The request cannot be done (a name taken, a bad password…).
    #[error("{0}")]
    Refused(String),
}

/// One person who logs in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Their name.
    pub name: String,
    /// What they may do.
    pub role: Role,
    /// The argon2 PHC string of their password.
    pub hash: String,
    /// When the user was added (ms).
    pub created_ms: i64,
    /// When the password or role last changed (ms): sessions from before
    /// end.
    pub updated_ms: i64,
}

/// One API token, as kept (the token itself is never stored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Its id: the part of the token after `keel_`, before the secret.
    pub id: String,
    /// What it is for (a Grafana, a CI job).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// When it was made (ms).
    pub created_ms: i64,
    /// When it stops working (ms); none: never.
    pub expires_ms: Option<i64>,
    /// Who made it.
    pub created_by: String,
    /// The SHA-256 of the whole token, hex.
    pub sha256: String,
}

/// One change a person made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When (ms).
    pub at_ms: i64,
    /// Who: a user, `token:<name>`, a proxy's user, or `anonymous` (no
    /// login required).
    pub who: String,
    /// Their role then.
    pub role: Role,
    /// What: the request (`POST /api/v1/silences`) or the CLI command.
    pub what: String,
    /// The answer's status (CLI changes: 0).
    pub status: u16,
}

/// A name for a user or a token: 1–64 of letters, digits and `._@-`.
pub fn check_name(kind: &str, name: &str) -> Result<(), DirectoryError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(DirectoryError::Refused(format!(
            "{kind} name {name:?}: use 1 to 64 letters, digits, '.', '_', '@' or '-'"
        )))
    }
}

/// The users and tokens of one state store.
#[derive(Clone)]
pub struct Directory {
    store: Arc<StateStore>,
}

fn parse<T: for<'de> Deserialize<'de>>(
    table: &'static str,
    key: &str,
    doc: &str,
) -> Result<T, DirectoryError> {
    serde_json::from_str(doc).map_err(|source| DirectoryError::Corrupt {
        table,
        key: key.to_owned(),
        source,
    })
}

fn put<T: Serialize>(table: Table, key: &str, at_ms: i64, doc: &T) -> Op {
    Op::Put {
        table,
        key: key.to_owned(),
        at_ms,
        // Our own structs of strings and numbers always serialize.
        doc: serde_json::to_string(doc).unwrap_or_default(),
    }
}

/// When a token made at `now_ms` for `spec` (`90d`, or `never`) expires:
/// between a minute and ten years on.
pub fn expiry(now_ms: i64, spec: &str) -> Result<Option<i64>, String> {
    if spec.trim() == "never" {
        return Ok(None);
    }
    let d = keel_core::duration::parse(spec)?;
    const TEN_YEARS_S: u64 = 10 * 366 * 24 * 3600;
    if d.as_secs() < 60 || d.as_secs() > TEN_YEARS_S {
        return Err(format!(
            "{spec:?}: a token lasts between 1m and 10y, or never"
        ));
    }
    Ok(Some(now_ms.saturating_add(d.as_millis() as i64)))
}

/// The SHA-256 of a token, hex.
pub fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Split `keel_<id>_<secret>` into its id, if it is shaped so.
pub fn token_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix("keel_")?;
    let (id, secret) = rest.split_once('_')?;
    let hexish = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hexish(id, 12) && hexish(secret, 64)).then_some(id)
}

impl Directory {
    /// The directory kept in `store`.
    pub fn new(store: Arc<StateStore>) -> Self {
        Self { store }
    }

    /// Every user, by name.
    pub async fn users(&self) -> Result<Vec<User>, DirectoryError> {
        self.store
            .load(Table::Users)
            .await?
            .iter()
            .map(|(k, d)| parse("user", k, d))
            .collect()
    }

    /// The user called `name`.
    pub async fn user(&self, name: &str) -> Result<Option<User>, DirectoryError> {
        match self.store.get(Table::Users, name).await? {
            Some(d) => parse("user", name, &d).map(Some),
            None => Ok(None),
        }
    }

    /// Add `name` with `role` and `password` (refused if the name is
    /// taken or the password too weak).
    pub async fn add_user(
        &self,
        name: &str,
        role: Role,
        password: &str,
        now_ms: i64,
    ) -> Result<User, DirectoryError> {
        check_name("user", name)?;
        password::acceptable(name, password).map_err(DirectoryError::Refused)?;
        if self.user(name).await?.is_some() {
            return Err(DirectoryError::Refused(format!(
                "user {name:?} exists: `keel user passwd` changes a password"
            )));
        }
        let user = User {
            name: name.to_owned(),
            role,
            hash: hashed(password).await?,
            created_ms: now_ms,
            updated_ms: now_ms,
        };
        self.store
            .apply(&[put(Table::Users, name, now_ms, &user)])
            .await?;
        Ok(user)
    }

    /// Change `name`'s password and, if given, role; their sessions end.
    pub async fn update_user(
        &self,
        name: &str,
        password: Option<&str>,
        role: Option<Role>,
        now_ms: i64,
    ) -> Result<User, DirectoryError> {
        let mut user = self
            .user(name)
            .await?
            .ok_or_else(|| DirectoryError::Refused(format!("no user {name:?}")))?;
        if let Some(p) = password {
            password::acceptable(name, p).map_err(DirectoryError::Refused)?;
            user.hash = hashed(p).await?;
        }
        if let Some(r) = role {
            user.role = r;
        }
        user.updated_ms = now_ms.max(user.updated_ms + 1);
        self.store
            .apply(&[put(Table::Users, name, now_ms, &user)])
            .await?;
        Ok(user)
    }

    /// Remove `name` (their sessions end) and revoke the API tokens they
    /// made; whether there was such a user.
    pub async fn remove_user(&self, name: &str) -> Result<bool, DirectoryError> {
        let was = self.user(name).await?.is_some();
        if was {
            let mut ops = vec![Op::Delete {
                table: Table::Users,
                key: name.to_owned(),
            }];
            ops.extend(
                self.tokens()
                    .await?
                    .into_iter()
                    .filter(|t| t.created_by == name)
                    .map(|t| Op::Delete {
                        table: Table::Tokens,
                        key: t.id,
                    }),
            );
            self.store.apply(&ops).await?;
        }
        Ok(was)
    }

    /// Make a token called `name` with `role`, expiring at `expires_ms`:
    /// the token (shown once, never kept) and its record.
    pub async fn create_token(
        &self,
        name: &str,
        role: Role,
        expires_ms: Option<i64>,
        created_by: &str,
        now_ms: i64,
    ) -> Result<(String, TokenRecord), DirectoryError> {
        check_name("token", name)?;
        let mut id = [0u8; 6];
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut id);
        rand::rng().fill_bytes(&mut secret);
        let id = hex::encode(id);
        let token = format!("keel_{id}_{}", hex::encode(secret));
        let record = TokenRecord {
            id: id.clone(),
            name: name.to_owned(),
            role,
            created_ms: now_ms,
            expires_ms,
            created_by: created_by.to_owned(),
            sha256: token_digest(&token),
        };
        self.store
            .apply(&[put(Table::Tokens, &id, now_ms, &record)])
            .await?;
        Ok((token, record))
    }

    /// Every token's record, by id.
    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, DirectoryError> {
        self.store
            .load(Table::Tokens)
            .await?
            .iter()
            .map(|(k, d)| parse("token", k, d))
            .collect()
    }

    /// The record of token `id`.
    pub async fn token(&self, id: &str) -> Result<Option<TokenRecord>, DirectoryError> {
        match self.store.get(Table::Tokens, id).await? {
            Some(d) => parse("token", id, &d).map(Some),
            None => Ok(None),
        }
    }

    /// Revoke the tokens whose id or name is `which`: those revoked.
    pub async fn revoke_token(&self, which: &str) -> Result<Vec<TokenRecord>, DirectoryError> {
        let gone: Vec<TokenRecord> = self
            .tokens()
            .await?
            .into_iter()
            .filter(|t| t.id == which || t.name == which)
            .collect();
        let ops: Vec<Op> = gone
            .iter()
            .map(|t| Op::Delete {
                table: Table::Tokens,
                key: t.id.clone(),
            })
            .collect();
        self.store.apply(&ops).await?;
        Ok(gone)
    }

    /// Record a change a person made.
    pub async fn audit(&self, entry: &AuditEntry) -> Result<(), DirectoryError> {
        self.store
            .apply(&[put(
                Table::Audit,
                &audit_key(entry.at_ms),
                entry.at_ms,
                entry,
            )])
            .await?;
        Ok(())
    }

    /// The changes made in `[start_ms, end_ms]`, oldest first, at most
    /// `limit` (the newest).
    pub async fn audit_between(
        &self,
        start_ms: i64,
        end_ms: i64,
        limit: i64,
    ) -> Result<Vec<AuditEntry>, DirectoryError> {
        self.store
            .load_between(Table::Audit, start_ms, end_ms, limit)
            .await?
            .iter()
            .map(|(k, d)| parse("audit entry", k, d))
            .collect()
    }
}

/// A key that sorts by time and is unique however many changes share a
/// millisecond.
fn audit_key(at_ms: i64) -> String {
    let mut r = [0u8; 4];
    rand::rng().fill_bytes(&mut r);
    format!("{at_ms:015}-{}", hex::encode(r))
}

/// Hash off the async runtime: argon2 takes tens of milliseconds.
pub(crate) async fn hashed(password: &str) -> Result<String, DirectoryError> {
    let p = password.to_owned();
    tokio::task::spawn_blocking(move || password::hash(&p))
        .await
        .map_err(|e| DirectoryError::Refused(e.to_string()))?
        .map_err(DirectoryError::Refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn directory() -> Directory {
        Directory::new(Arc::new(
            StateStore::open("sqlite::memory:").await.expect("store"),
        ))
    }

    #[tokio::test]
    async fn users_are_added_once_changed_and_removed() {
        let d = directory().await;
        let u = d
            .add_user("ada", Role::Editor, "analytical engine", 1_000)
            .await
            .expect("added");
        assert!(password::verify("analytical engine", &u.hash));
        let again = d
            .add_user("ada", Role::Viewer, "another password", 2_000)
            .await;
        assert!(matches!(again, Err(DirectoryError::Refused(m)) if m.contains("exists")));
        assert!(
            d.add_user("bad name", Role::Viewer, "long enough pw", 1)
                .await
                .is_err()
        );
        let u2 = d
            .update_user("ada", Some("difference engine"), Some(Role::Admin), 1_000)
            .await
            .expect("updated");
        assert_eq!(u2.role, Role::Admin);
        assert!(u2.updated_ms > u.updated_ms, "sessions from before end");
        assert!(password::verify("difference engine", &u2.hash));
        assert_eq!(d.users().await.expect("list").len(), 1);
        let (_, theirs) = d
            .create_token("ci", Role::Viewer, None, "ada", 1_000)
            .await
            .expect("token");
        let (_, others) = d
            .create_token("grafana", Role::Viewer, None, "cli:root", 1_000)
            .await
            .expect("token");
        assert!(d.remove_user("ada").await.expect("removed"));
        assert!(!d.remove_user("ada").await.expect("removed"));
        assert_eq!(
            d.token(&theirs.id).await.expect("read"),
            None,
            "their token is revoked"
        );
        assert!(
            d.token(&others.id).await.expect("read").is_some(),
            "others' stay"
        );
        assert_eq!(d.user("ada").await.expect("read"), None);
    }

    #[tokio::test]
    async fn a_token_is_kept_only_as_its_digest_and_revoked_by_name_or_id() {
        let d = directory().await;
        let (token, rec) = d
            .create_token("grafana", Role::Viewer, Some(5_000), "ada", 1_000)
            .await
            .expect("token");
        assert_eq!(token_id(&token), Some(rec.id.as_str()));
        assert_eq!(rec.sha256, token_digest(&token));
        let kept = d.token(&rec.id).await.expect("read").expect("kept");
        assert!(
            !serde_json::to_string(&kept)
                .expect("json")
                .contains(&token[18..])
        );
        assert_eq!(token_id("keel_zz_00"), None);
        assert_eq!(expiry(1_000, "1m"), Ok(Some(61_000)));
        assert_eq!(expiry(1_000, "never"), Ok(None));
        assert!(
            expiry(1_000, "300000000y").is_err(),
            "no overflow past 10 years"
        );
        assert!(expiry(1_000, "1s").is_err());
        assert_eq!(token_id("Bearer whatever"), None);
        let gone = d.revoke_token("grafana").await.expect("revoked");
        assert_eq!(gone.len(), 1);
        assert_eq!(d.token(&rec.id).await.expect("read"), None);
    }
}
