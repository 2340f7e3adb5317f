//! Browser sessions: a random id in a cookie, held in memory with the
//! user's name, a CSRF token and an expiry.
//!
//! A session ends at its expiry, at logout, or when its user's password
//! or role changes or the user is removed (checked on use). Sessions live
//! in the collector's memory: a restart logs everyone out.

use std::collections::HashMap;
use std::sync::Mutex;

use rand::RngCore as _;

/// Most sessions held at once; past it the oldest ends first.
const MAX_SESSIONS: usize = 10_000;

/// One logged-in browser.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// Who.
    pub user: String,
    /// What a state-changing request must echo in `X-Keel-CSRF`.
    pub csrf: String,
    /// When the session began (ms).
    pub since_ms: i64,
    /// The user's `updated_ms` at login: a password or role change since
    /// ends the session (whatever clock either was written on).
    pub user_updated_ms: i64,
    /// When it ends (ms).
    pub expires_ms: i64,
}

/// The sessions of one collector.
pub struct Sessions {
    ttl_ms: i64,
    held: Mutex<HashMap<String, Session>>,
}

/// 32 random bytes, hex.
pub fn random_hex() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

impl Sessions {
    /// Sessions lasting `ttl_ms`.
    pub fn new(ttl_ms: i64) -> Self {
        Self {
            ttl_ms,
            held: Mutex::default(),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Begin a session for `user`: its id (the cookie) and the session.
    pub fn begin(&self, user: &crate::directory::User, now_ms: i64) -> (String, Session) {
        let id = random_hex();
        let s = Session {
            user: user.name.clone(),
            csrf: random_hex(),
            since_ms: now_ms,
            user_updated_ms: user.updated_ms,
            expires_ms: now_ms.saturating_add(self.ttl_ms),
        };
        let mut held = self.held();
        held.retain(|_, s| s.expires_ms > now_ms);
        if held.len() >= MAX_SESSIONS
            && let Some(oldest) = held
                .iter()
                .min_by_key(|(_, s)| s.since_ms)
                .map(|(k, _)| k.clone())
        {
            held.remove(&oldest);
        }
        held.insert(id.clone(), s.clone());
        (id, s)
    }

    /// The live session `id` names.
    pub fn get(&self, id: &str, now_ms: i64) -> Option<Session> {
        let mut held = self.held();
        match held.get(id) {
            Some(s) if s.expires_ms > now_ms => Some(s.clone()),
            Some(_) => {
                held.remove(id);
                None
            }
            None => None,
        }
    }

    /// End session `id`.
    pub fn end(&self, id: &str) {
        self.held().remove(id);
    }

    /// Sessions held (live or not yet swept).
    pub fn len(&self) -> usize {
        self.held().len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ada() -> crate::directory::User {
        crate::directory::User {
            name: "ada".into(),
            role: crate::role::Role::Viewer,
            hash: String::new(),
            created_ms: 0,
            updated_ms: 5,
        }
    }

    #[test]
    fn a_session_lives_until_its_expiry_or_its_end() {
        let s = Sessions::new(1_000);
        let (id, sess) = s.begin(&ada(), 10_000);
        assert_eq!(sess.user_updated_ms, 5);
        assert_eq!(id.len(), 64);
        assert_ne!(sess.csrf, id);
        assert_eq!(s.get(&id, 10_999).map(|x| x.user), Some("ada".into()));
        assert_eq!(s.get(&id, 11_000), None, "expired");
        assert!(s.is_empty(), "an expired session is dropped when seen");
        let (id, _) = s.begin(&ada(), 20_000);
        s.end(&id);
        assert_eq!(s.get(&id, 20_001), None);
        assert_eq!(s.get("not-a-session", 20_001), None);
    }
}
