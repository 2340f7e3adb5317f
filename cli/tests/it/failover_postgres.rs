//! Failover of a real PostgreSQL 15 cluster: a primary and two standbys
//! on loopback made by the test, each run by its own `keel agent` (the
//! failover role), the controller (in this process) on the `postgres`
//! driver, in synchronous mode, under a libpq writer that finds the
//! primary with a multi-host connection string.
//!
//! - The primary's whole node (agent and postmaster) is SIGKILLed: a
//!   standby is promoted, the other follows it, writes go on, and no
//!   acknowledged commit is lost. The old primary's node comes back: it
//!   is rewound and rejoins as a standby; the role endpoints say who is
//!   primary.
//! - A planned switchover under the writer loses nothing.
//! - A standby beyond the lag limit, a member that cannot be reached and a
//!   connection string that names another cluster: clear errors, no
//!   promotion.
//!
//! Gated on `KEEL_TEST_PG_FAILOVER=1` (`.ci/run` sets it, having installed
//! Debian's python3-psycopg2 for the writer).

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use crate::pgcluster::{Cluster, Writer, http_get, missing};
use keel_controller::failover::{Failover, FailoverConfig, Mode, Probe};
use keel_controller::{Controller, ControllerConfig};
use keel_core::clock::{SharedClock, SystemClock};

async fn controller(f: FailoverConfig) -> Result<(Arc<Controller>, Arc<Failover>), String> {
    let config = ControllerConfig {
        failover: vec![f],
        ..ControllerConfig::default()
    };
    let mut problems = Vec::new();
    config.validate(&mut problems);
    assert!(problems.is_empty(), "{problems:?}");
    let clock: SharedClock = Arc::new(SystemClock);
    let c = Controller::new(&config, Arc::new(keel_testkit::NoMetrics), clock, None);
    let t = c.failovers()[0].clone();
    t.start("controller.failover[0]", None).await?;
    tokio::spawn(c.clone().run());
    Ok((c, t))
}

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn now_ms() -> i64 {
    keel_core::clock::unix_ms(std::time::SystemTime::now())
}

/// Wait until `member` answers as a replica of the current epoch that
/// streams from the primary.
async fn following(t: &Failover, member: &str) {
    eventually(
        &format!("{member} follows the primary"),
        Duration::from_secs(90),
        || async {
            let s = t.status();
            match s.members.get(member) {
                Some(Probe::Answered(r))
                    if r.role == "replica" && r.epoch == s.epoch && r.primary_ok == Some(true) =>
                {
                    Some(())
                }
                _ => None,
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_failover_rewind_switchover_and_refusals() {
    let _turn = crate::common::heavy().await;
    if std::env::var("KEEL_TEST_PG_FAILOVER").as_deref() != Ok("1") {
        eprintln!(
            "skipped: set KEEL_TEST_PG_FAILOVER=1 (needs PostgreSQL 15's programs and python3-psycopg2)"
        );
        return;
    }
    assert!(
        crate::pgcluster::available(),
        "PostgreSQL 15's programs are not in {}",
        crate::pgcluster::BIN
    );
    // No synchronous_standby_names: the controller manages it.
    let mut c = blocking(|| Cluster::create(KEEL.as_ref(), 3, &[])).expect("cluster");
    eventually(
        "both standbys stream from pg-1",
        Duration::from_secs(60),
        || async {
            let n = blocking(|| {
                c.psql(
                    0,
                    "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
                )
            });
            (n.as_deref() == Ok("2")).then_some(())
        },
    )
    .await;
    // An agent's failover actions want its token: a stop without it (or
    // with a wrong one) is refused and the primary stays up.
    let http = reqwest::Client::new();
    // A page in a browser cannot post to it either, even with the token.
    let right = format!("Bearer {}", crate::pgcluster::AGENT_TOKEN);
    for (auth, origin) in [
        (None, None),
        (Some("Bearer not-the-agent-token-000"), None),
        (Some(right.as_str()), Some("https://evil.example")),
    ] {
        let mut r = http.post(format!("{}/api/v1/failover/stop", c.agent_url(0)));
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        let status = r.send().await.expect("the agent answers").status();
        assert_eq!(status.as_u16(), 401, "{auth:?} {origin:?}");
    }
    assert_eq!(
        blocking(|| c.psql(0, "SELECT 1")).as_deref(),
        Ok("1"),
        "the refused stop changed nothing"
    );
    let (ctl, t) = controller(c.target(Mode::Synchronous))
        .await
        .expect("controller starts");
    assert_eq!(t.status().primary, "pg-1");
    let epoch0 = t.status().epoch;
    assert_eq!(
        blocking(|| c.psql(0, "SHOW synchronous_standby_names")).as_deref(),
        Ok("ANY 1 (\"pg-2\", \"pg-3\")"),
        "synchronous mode: the primary holds a commit until a standby has it"
    );

    // 1. The primary's node dies under the writer.
    let w = Writer::start(&c.dir, &c.libpq_conninfo(), "orders", 1).expect("writer");
    eventually("the writer commits", Duration::from_secs(30), || async {
        (w.acked() >= 200).then_some(())
    })
    .await;
    let killed_at = now_ms();
    blocking(|| c.kill_node(0));
    let new = eventually("a standby is promoted", Duration::from_secs(60), || async {
        let s = t.status();
        (s.primary != "pg-1").then_some(s.primary)
    })
    .await;
    let (_, first) = eventually(
        "a commit after the kill",
        Duration::from_secs(60),
        || async { w.first_ack_after_outage(killed_at) },
    )
    .await;
    eprintln!(
        "failover: node killed → first commit {} ms",
        first - killed_at
    );
    for e in ctl.events(killed_at, Some("pg"), 100) {
        eprintln!(
            "  +{} ms {}: {}",
            e.at_ms - killed_at,
            e.kind,
            e.explanation
        );
    }
    let s = t.status();
    assert!(
        s.epoch > epoch0,
        "the epoch (timeline) moved on: {} → {}",
        epoch0,
        s.epoch
    );
    let other = if new == "pg-2" { "pg-3" } else { "pg-2" };
    assert_eq!(
        blocking(|| c.psql(
            c.index(&new).expect("a member"),
            "SHOW synchronous_standby_names"
        )),
        Ok(format!("ANY 1 (\"pg-1\", \"{other}\")")),
        "the promoted member waits for a standby before acknowledging"
    );
    following(&t, other).await;
    let before = w.acked();
    eventually("writes go on", Duration::from_secs(30), || async {
        (w.acked() >= before + 100).then_some(())
    })
    .await;
    let acked = blocking(|| w.stop());
    let lost = blocking(|| missing(&c, c.index(&new).expect("a member"), "orders", &acked))
        .expect("read back");
    assert!(
        lost.is_empty(),
        "synchronous mode lost {} acknowledged commits: {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    let events = ctl.events(0, Some("pg"), 1000);
    let promoted = events
        .iter()
        .find(|e| e.kind == "failover.promoted")
        .expect("a promoted event");
    assert!(
        promoted.explanation.contains(&new),
        "{}",
        promoted.explanation
    );

    // The old primary's node comes back: its agent leaves a former
    // primary stopped, and the controller rewinds it into a standby.
    blocking(|| c.start_agent(0, "standby")).expect("pg-1's agent");
    following(&t, "pg-1").await;
    // The event is recorded when the agent's rejoin returns, which can be
    // a moment after the member already streams.
    let rejoined = eventually("pg-1's rejoin event", Duration::from_secs(30), || async {
        ctl.events(0, Some("pg"), 1000).into_iter().find(|e| {
            e.kind == "failover.rejoined" && e.explanation.starts_with("pg: pg-1 was stopped")
        })
    })
    .await;
    assert!(
        rejoined
            .decision
            .as_ref()
            .is_some_and(|d| d["error"].is_null()),
        "{:?}",
        rejoined.decision
    );
    let lost = blocking(|| missing(&c, 0, "orders", &acked)).expect("pg-1 reads");
    assert!(
        lost.is_empty(),
        "pg-1, rewound, lacks {} acknowledged commits",
        lost.len()
    );
    // Role endpoints, as a load balancer checks them: 200 only on the
    // primary, 503 with the member's role elsewhere.
    let new_i = c.index(&new).expect("a member");
    let body = http_get(&format!("{}/primary", c.agent_url(new_i)))
        .expect("the primary's /primary is 200");
    assert!(body.contains("\"role\":\"primary\""), "{body}");
    for i in [0, c.index(other).expect("a member")] {
        let e = http_get(&format!("{}/primary", c.agent_url(i)))
            .expect_err("a standby's /primary is not 200");
        assert!(
            e.contains("\"role\":\"replica\""),
            "a 503 naming its role: {e}"
        );
        http_get(&format!("{}/replica", c.agent_url(i))).expect("a standby's /replica is 200");
    }

    // 2. A planned switchover under the writer loses nothing.
    let w = Writer::start(&c.dir, &c.libpq_conninfo(), "orders", 1_000_000).expect("writer");
    eventually("the writer commits", Duration::from_secs(30), || async {
        (w.acked() >= 100).then_some(())
    })
    .await;
    let from = t.status().primary;
    let switched_at = now_ms();
    let p = t.switchover(Some("pg-1")).await.expect("switchover");
    assert!(
        !p.followed.contains(&from),
        "the old primary, stopped, is rewound when tidied: {p:?}"
    );
    assert_eq!(t.status().primary, "pg-1");
    eventually(
        "a commit after the switchover",
        Duration::from_secs(60),
        || async { w.first_ack_after_outage(switched_at) },
    )
    .await;
    let acked = blocking(|| w.stop());
    let lost = blocking(|| missing(&c, 0, "orders", &acked)).expect("read back");
    assert!(
        lost.is_empty(),
        "the switchover lost {} acknowledged commits",
        lost.len()
    );
    following(&t, &from).await;

    // 3. Refusals. A standby whose WAL receiver is frozen (SIGSTOP) falls
    // behind the lag limit: promoting it is refused.
    let lagging = if from == "pg-2" { "pg-3" } else { "pg-2" };
    let li = c.index(lagging).expect("a member");
    let receiver: i32 = blocking(|| c.psql(li, "SELECT pid FROM pg_stat_wal_receiver"))
        .expect("its receiver")
        .parse()
        .expect("a pid");
    let receiver =
        nix::unistd::Pid::from_raw(c.host_pid(li, receiver).expect("the receiver's pid here"));
    nix::sys::signal::kill(receiver, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
    blocking(|| c.psql(0, "CREATE TABLE pad AS SELECT (SELECT string_agg(md5(random()::text || g || i), '') FROM generate_series(1, 32) i) AS x FROM generate_series(1, 8000) g")).expect("pad");
    eventually(
        "the primary's position is known past the limit",
        Duration::from_secs(30),
        || async {
            let s = t.status();
            match (s.members.get("pg-1"), s.members.get(lagging)) {
                (Some(Probe::Answered(p)), Some(Probe::Answered(r))) => {
                    (p.last_lsn > r.last_lsn + (1 << 20) + (1 << 19)).then_some(())
                }
                _ => None,
            }
        },
    )
    .await;
    let e = t
        .failover(Some(lagging))
        .await
        .expect_err("a lagging standby is refused");
    let _ = nix::sys::signal::kill(receiver, nix::sys::signal::Signal::SIGCONT);
    assert!(e.contains("beyond maximum_lag_on_failover"), "{e}");
    assert_eq!(t.status().primary, "pg-1", "nothing changed");

    // A member whose node is gone cannot be promoted.
    let gone = from.clone();
    let gi = c.index(&gone).expect("a member");
    blocking(|| c.kill_node(gi));
    let e = t
        .failover(Some(&gone))
        .await
        .expect_err("an unreachable member is refused");
    assert!(e.contains("does not answer"), "{e}");
    assert_eq!(t.status().primary, "pg-1", "nothing changed");
    assert!(
        ctl.events(0, Some("pg"), 1000)
            .iter()
            .filter(|e| e.kind == "failover.promoted")
            .count()
            == 2,
        "no promotion beyond the failover and the switchover"
    );

    // A dsn whose user may not read the standbys' replication status is
    // refused at start, naming the member and the grant it needs.
    blocking(|| c.psql(0, "CREATE ROLE keel_probe LOGIN")).expect("a plain role");
    let mut weak = c.target(Mode::Synchronous);
    weak.name = "weak".into();
    let wi = if gone == "pg-2" { 2 } else { 1 };
    weak.members[wi].dsn = Some(
        c.dsn(wi)
            .replace("postgres://postgres@", "postgres://keel_probe@"),
    );
    let e = controller(weak)
        .await
        .err()
        .expect("a user without pg_read_all_stats is refused");
    assert!(
        e.contains(&format!(
            "{}: its dsn's user \"keel_probe\"",
            c.nodes[wi].name
        )) && e.contains("pg_read_all_stats"),
        "{e}"
    );

    // A connection string that names another cluster (the machine's own
    // PostgreSQL) is refused at start, naming the member.
    if std::env::var("KEEL_TEST_POSTGRES").as_deref() == Ok("1") {
        let mut wrong = c.target(Mode::Synchronous);
        wrong.name = "wrong".into();
        wrong.members[1].dsn = Some("postgres://postgres@127.0.0.1:5432/postgres".into());
        let e = controller(wrong)
            .await
            .err()
            .expect("another cluster is refused");
        assert!(
            e.contains("pg-2 is not in pg-1's cluster") && e.contains("system identifier"),
            "{e}"
        );
    }
}
