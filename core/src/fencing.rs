//! Fencing tokens where actions land. A leader of a collector pair
//! (`collector.ha`) sends its lease's name and fencing token with every
//! action it asks of an actuator (the sample app's supervisor, an
//! agent's failover role); the actuator remembers the newest token of
//! each lease and refuses an older one, so a deposed leader's late
//! request is refused even if it slipped past the leader's own check —
//! the pattern of Kleppmann's "How to do distributed locking".

use std::collections::HashMap;
use std::sync::Mutex;

/// The header naming the lease.
pub const LEASE_HEADER: &str = "keel-fencing-lease";
/// The header carrying the token.
pub const TOKEN_HEADER: &str = "keel-fencing-token";

/// An older token than one already seen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "fencing token {token} of lease {lease:?} is older than {newest}, already seen: a newer leader acts; this request is refused"
)]
pub struct Stale {
    /// The lease.
    pub lease: String,
    /// The token presented.
    pub token: i64,
    /// The newest seen.
    pub newest: i64,
}

/// A malformed token header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{TOKEN_HEADER}: {0:?} is not a whole number")]
pub struct BadToken(pub String);

/// The newest token seen of each lease.
#[derive(Debug, Default)]
pub struct Newest(Mutex<HashMap<String, i64>>);

impl Newest {
    /// Take `token` of `lease` if it is no older than the newest seen
    /// (then it is the newest).
    pub fn admit(&self, lease: &str, token: i64) -> Result<(), Stale> {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let newest = seen.entry(lease.to_owned()).or_insert(token);
        if token < *newest {
            return Err(Stale {
                lease: lease.to_owned(),
                token,
                newest: *newest,
            });
        }
        *newest = token;
        Ok(())
    }

    /// Check a request's headers (`header(name)` reads one): a request
    /// without a token is let through (a single collector has none).
    pub fn admit_headers<'a>(
        &self,
        header: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<(), FencingError> {
        let Some(token) = header(TOKEN_HEADER) else {
            return Ok(());
        };
        let token = token
            .trim()
            .parse::<i64>()
            .map_err(|_| BadToken(token.to_owned()))?;
        let lease = header(LEASE_HEADER).unwrap_or_default();
        Ok(self.admit(lease, token)?)
    }
}

/// Why a request's token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FencingError {
    /// Older than one seen.
    #[error(transparent)]
    Stale(#[from] Stale),
    /// Not a number.
    #[error(transparent)]
    Bad(#[from] BadToken),
}

impl FencingError {
    /// The HTTP status to answer with: 409 for a stale token, 400 for
    /// one that is not a number.
    pub fn status(&self) -> u16 {
        match self {
            FencingError::Stale(_) => 409,
            FencingError::Bad(_) => 400,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_token_is_refused_and_a_newer_one_becomes_the_newest() {
        let n = Newest::default();
        assert_eq!(n.admit("a", 5), Ok(()));
        assert_eq!(n.admit("a", 5), Ok(()), "the same leader again");
        assert_eq!(
            n.admit("a", 4),
            Err(Stale {
                lease: "a".into(),
                token: 4,
                newest: 5
            })
        );
        assert_eq!(n.admit("b", 1), Ok(()), "leases are apart");
        assert_eq!(n.admit("a", 7), Ok(()));
        assert!(n.admit("a", 5).is_err());
        let headers = |t: &'static str| {
            move |h: &str| match h {
                TOKEN_HEADER => Some(t),
                LEASE_HEADER => Some("a"),
                _ => None,
            }
        };
        assert!(matches!(
            n.admit_headers(headers("6")),
            Err(FencingError::Stale(_))
        ));
        assert!(matches!(
            n.admit_headers(headers("x")),
            Err(FencingError::Bad(_))
        ));
        assert_eq!(n.admit_headers(headers("8")), Ok(()));
        assert_eq!(n.admit_headers(|_| None), Ok(()), "no token: alone");
    }
}
