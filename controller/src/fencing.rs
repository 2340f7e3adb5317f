//! The authority the controller acts under. With a collector pair
//! (`collector.ha`) every action is asked for only while this collector
//! leads within its own deadline, and carries the lease's fencing token
//! ([`keel_core::fencing`]) so that the actuator refuses it if a newer
//! leader has already acted. A single collector acts alone, no token.

use keel_state::ActAs;

/// Read at the moment of each action (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct Fencing(Option<keel_state::Writer>);

/// This collector may not act: it does not lead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not done: this collector no longer leads (collector.ha); the leader acts")]
pub struct NotLeading;

impl Fencing {
    /// The authority of `writer`'s owner (none: alone).
    pub fn new(writer: Option<keel_state::Writer>) -> Self {
        Self(writer)
    }

    /// The lease and token to act under now (`None`: alone).
    pub fn token(&self) -> Result<Option<(String, i64)>, NotLeading> {
        match self
            .0
            .as_ref()
            .map_or(ActAs::Alone, keel_state::Writer::act_as)
        {
            ActAs::Alone => Ok(None),
            ActAs::Leader { lease, token } => Ok(Some((lease, token))),
            ActAs::NotLeading => Err(NotLeading),
        }
    }

    /// `req` with the token's headers, or the refusal to send it.
    pub fn stamp(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, NotLeading> {
        Ok(with_token(req, self.token()?))
    }
}

/// `req` carrying `token` (a lease and its token; none: as it is), for a
/// caller that has read the token already.
pub fn with_token(
    req: reqwest::RequestBuilder,
    token: Option<(String, i64)>,
) -> reqwest::RequestBuilder {
    match token {
        None => req,
        Some((lease, token)) => req
            .header(keel_core::fencing::LEASE_HEADER, lease)
            .header(keel_core::fencing::TOKEN_HEADER, token.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actuator::{Actuator, ActuatorError};
    use crate::policy::ActuatorConfig;
    use std::sync::Arc;
    use std::time::Duration;

    /// A leader's command gets its lease and token; once its lease has
    /// passed its own deadline (its renewals stopped), nothing is run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leader_acts_under_its_token_and_a_deposed_one_does_not_act() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = keel_state::sqlite_url(&dir.path().join("state.db"));
        let store = Arc::new(keel_state::StateStore::open(&url).await.expect("open"));
        let clock: keel_core::clock::SharedClock = Arc::new(keel_core::clock::SystemClock);
        let leadership = store.lead(
            keel_state::lease::LeaseConfig {
                name: "pair".into(),
                holder: "a".into(),
                ttl: Duration::from_millis(600),
                every: Duration::from_millis(200),
            },
            clock,
        );
        let mut w = leadership.watch();
        tokio::time::timeout(Duration::from_secs(30), w.wait_for(|s| s.token().is_some()))
            .await
            .expect("leads within 30 s")
            .expect("the lease task runs");
        let fencing = Fencing::new(Some(store.writer_fenced(&leadership)));
        let (lease, token) = fencing.token().expect("leads").expect("a token");
        assert_eq!(lease, "pair");
        let seen = dir.path().join("seen");
        let actuator = Actuator::new(&ActuatorConfig::Exec {
            read: vec!["sh".into(), "-c".into(), "echo 1".into()],
            scale: vec![
                "sh".into(),
                "-c".into(),
                format!(
                    "echo \"$KEEL_FENCING_LEASE $KEEL_FENCING_TOKEN $KEEL_REPLICAS\" >> {}",
                    seen.display()
                ),
            ],
            timeout: Duration::from_secs(10),
        });
        actuator.set(3, &fencing).await.expect("the leader scales");
        let read = || std::fs::read_to_string(&seen).unwrap_or_default();
        assert_eq!(read(), format!("pair {token} 3\n"));

        // Its renewals stop (a stall): past its own deadline it does not act.
        leadership.abort();
        let started = std::time::Instant::now();
        while fencing.token().is_ok() {
            assert!(started.elapsed() < Duration::from_secs(30), "never lapsed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let refused = actuator.set(4, &fencing).await;
        assert!(
            matches!(refused, Err(ActuatorError::NotLeading(_))),
            "{refused:?}"
        );
        assert_eq!(read(), format!("pair {token} 3\n"), "nothing ran");
        // Alone (no pair), no token is sent.
        actuator.set(5, &Fencing::default()).await.expect("alone");
        assert!(read().ends_with("\n  5\n"), "{}", read());
    }
}
