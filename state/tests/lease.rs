//! Leases against SQLite (always) and the real PostgreSQL server
//! (`KEEL_TEST_POSTGRES=1`): one holder at a time, renewals keep the
//! token, a lapsed lease goes to the next taker with a larger token, and
//! a deposed holder's fenced writes are dropped in the transaction that
//! would have landed them.

use std::sync::Arc;
use std::time::Duration;

use keel_state::{Op, StateStore, Table, testing};

const LEASE: &str = "leader";

fn put(key: &str, doc: &str) -> Op {
    Op::Put {
        table: Table::Events,
        key: key.into(),
        at_ms: 1,
        doc: doc.into(),
    }
}

fn fenced(token: i64, ops: Vec<Op>) -> Op {
    Op::Fenced {
        lease: LEASE.into(),
        token,
        ops,
    }
}

/// Between polls of the database's clock.
async fn pace() {
    tokio::time::sleep(Duration::from_millis(20)).await;
}

/// Poll until the lease has lapsed by the database's clock.
async fn wait_until_lapsed(store: &StateStore) {
    loop {
        let h = store
            .lease_holder(LEASE)
            .await
            .expect("read")
            .expect("held");
        if h.grant.expires_ms <= h.now_ms {
            return;
        }
        pace().await;
    }
}

async fn one_holder_at_a_time(url: &str) {
    let store = Arc::new(StateStore::open(url).await.expect("open"));
    let long = Duration::from_secs(60);
    let a = store
        .acquire_lease(LEASE, "a", long)
        .await
        .expect("take")
        .expect("free: a takes it");
    assert!(
        store
            .acquire_lease(LEASE, "b", long)
            .await
            .expect("try")
            .is_none(),
        "held by a"
    );
    let renewed = store
        .acquire_lease(LEASE, "a", long)
        .await
        .expect("renew")
        .expect("a renews");
    assert_eq!(
        (renewed.token, renewed.since_ms),
        (a.token, a.since_ms),
        "a renewal keeps the token"
    );
    assert!(renewed.expires_ms >= a.expires_ms);

    // a's writes land while it holds the lease.
    store
        .apply(&[fenced(a.token, vec![put("by-a", "1")])])
        .await
        .expect("apply");
    // a stops cleanly; b takes over at once, with a larger token.
    assert!(
        store
            .release_lease(LEASE, "a", a.token)
            .await
            .expect("release")
    );
    let b = store
        .acquire_lease(LEASE, "b", long)
        .await
        .expect("take")
        .expect("released: b takes it");
    assert!(b.token > a.token, "{b:?} after {a:?}");
    // A late write of a's, and b's, in one transaction: a's is dropped.
    store
        .apply(&[
            fenced(a.token, vec![put("late-a", "1"), put("by-a", "2")]),
            fenced(b.token, vec![put("by-b", "1")]),
            put("plain", "1"),
        ])
        .await
        .expect("apply");
    let docs = store.load(Table::Events).await.expect("load");
    assert_eq!(
        docs,
        [
            ("by-a".to_owned(), "1".to_owned()),
            ("by-b".to_owned(), "1".to_owned()),
            ("plain".to_owned(), "1".to_owned()),
        ],
        "a's late writes dropped, the rest landed"
    );
    assert_eq!(store.fenced(), 1, "one group dropped");
    let h = store
        .lease_holder(LEASE)
        .await
        .expect("read")
        .expect("held");
    assert_eq!((h.holder.as_str(), h.grant.token), ("b", b.token));
    assert!(h.grant.expires_ms > h.now_ms);

    // b's short lease lapses (the database's clock decides): a takes it
    // then, not before, with a larger token still.
    let short = Duration::from_millis(300);
    let b = store
        .acquire_lease(LEASE, "b", short)
        .await
        .expect("renew")
        .expect("b renews, shorter");
    let a2 = loop {
        if let Some(g) = store.acquire_lease(LEASE, "a", short).await.expect("try") {
            break g;
        }
        pace().await;
    };
    assert!(a2.since_ms >= b.expires_ms, "{a2:?} before {b:?} lapsed");
    assert!(a2.token > b.token);
    // b, deposed, finds out at its next renewal.
    assert!(
        store
            .acquire_lease(LEASE, "b", short)
            .await
            .expect("try")
            .is_none()
    );
    // A holder whose own lease lapsed gets a new token too.
    wait_until_lapsed(&store).await;
    let again = store
        .acquire_lease(LEASE, "a", short)
        .await
        .expect("take")
        .expect("nobody else wants it");
    assert_eq!(again.token, a2.token + 1);
}

#[tokio::test]
async fn sqlite_leases_go_to_one_holder_at_a_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    one_holder_at_a_time(&keel_state::sqlite_url(&dir.path().join("state.db"))).await;
}

#[tokio::test]
async fn postgres_leases_go_to_one_holder_at_a_time() {
    if !testing::postgres_enabled() {
        eprintln!("skipped: set KEEL_TEST_POSTGRES=1 to run against PostgreSQL");
        return;
    }
    let url = testing::fresh_postgres_database().await.expect("database");
    one_holder_at_a_time(&url).await;
}

/// Wait (30 s at most: a hang is a failure) until `l` stands as `pred` wants.
async fn until(
    l: &keel_state::lease::Leadership,
    what: &str,
    pred: impl FnMut(&keel_state::lease::Standing) -> bool,
) {
    let mut w = l.watch();
    tokio::time::timeout(Duration::from_secs(30), w.wait_for(pred))
        .await
        .unwrap_or_else(|_| panic!("{what}: not within 30 s"))
        .expect("the leading task runs");
}

/// Two collectors (two pools, as two processes) lead one at a time: the
/// follower names the leader and may not write under the lease; when the
/// leader crashes the follower takes over after the lease lapses and
/// within `ttl + every` of it; a clean stop (release) hands over before
/// the lapse.
async fn two_collectors_one_leader(url: &str) {
    use keel_state::lease::{LeaseConfig, Standing};
    let open = || async { Arc::new(StateStore::open(url).await.expect("open")) };
    let (sa, sb, sc) = (open().await, open().await, open().await);
    let every = Duration::from_millis(250);
    let cfg = |holder: &str| LeaseConfig {
        name: "ha".into(),
        holder: holder.into(),
        ttl: Duration::from_millis(1500),
        every,
    };
    let clock: keel_core::clock::SharedClock = Arc::new(keel_core::clock::SystemClock);
    let a = sa.lead(cfg("a"), clock.clone());
    let b = sb.lead(cfg("b"), clock.clone());
    let settled = |l: &keel_state::lease::Leadership, f: &keel_state::lease::Leadership| {
        matches!(l.standing(), Standing::Leader(_))
            && matches!(f.standing(), Standing::Follower(Some(_)))
    };
    let started = std::time::Instant::now();
    let (leader, follower, store, leader_store) = loop {
        assert!(started.elapsed() < Duration::from_secs(30), "never settled");
        if settled(&a, &b) {
            break (a, b, sb.clone(), sa.clone());
        }
        if settled(&b, &a) {
            break (b, a, sa.clone(), sb.clone());
        }
        pace().await;
    };
    let Standing::Leader(old) = leader.standing() else {
        unreachable!("settled")
    };
    let Standing::Follower(Some(named)) = follower.standing() else {
        unreachable!("settled")
    };
    let h = store.lease_holder("ha").await.expect("read").expect("held");
    assert_eq!(named, h.holder, "the follower names the leader");
    assert!(
        follower.fence(vec![put("x", "1")]).is_none(),
        "a follower may not write"
    );
    assert!(leader.acting().may_act() && !follower.acting().may_act());
    let write = leader
        .fence(vec![put("by-old", "1")])
        .expect("the leader writes");
    // Writers: the leader's changes land, the follower's are dropped.
    let (lw, fw) = (
        leader_store.writer_fenced(&leader),
        store.writer_fenced(&follower),
    );
    lw.send(put("by-leader", "1"));
    lw.flush().await.expect("flush");
    fw.send(put("by-follower", "1"));
    assert!(
        matches!(fw.flush().await, Err(keel_state::StateError::Fenced(1))),
        "the follower is told its change was dropped"
    );
    assert_eq!(store.fenced(), 1, "the follower's change");

    // The leader crashes: its lease is left to lapse.
    leader.abort();
    let last = store.lease_holder("ha").await.expect("read").expect("held");
    until(&follower, "the follower takes over", |s| {
        matches!(s, Standing::Leader(_))
    })
    .await;
    let Standing::Leader(new) = follower.standing() else {
        unreachable!("waited for it")
    };
    assert!(new.token > old.token);
    // Nothing told the stalled leader (its task is gone), but its own
    // deadline, before the lapse, has passed: it may not act.
    assert!(matches!(leader.standing(), Standing::Leader(_)));
    assert!(!leader.acting().may_act(), "past its own deadline");
    assert!(!lw.may_act());
    assert!(follower.acting().may_act(), "the new leader acts");
    assert!(
        new.since_ms >= last.grant.expires_ms,
        "not before the lapse: {new:?} {last:?}"
    );
    // Within one renewal of the lapse (and, on a busy 2-core machine,
    // a second for the query and the scheduler).
    let late = new.since_ms - last.grant.expires_ms;
    assert!(
        late <= every.as_millis() as i64 + 1000,
        "took over {late} ms after the lapse"
    );
    // The crashed leader's writes, landing late, are dropped.
    store.apply(&[write]).await.expect("apply");
    lw.send(put("late-leader", "1"));
    assert!(
        matches!(lw.flush().await, Err(keel_state::StateError::Fenced(1))),
        "the deposed leader is told"
    );
    assert_eq!(
        store.load(Table::Events).await.expect("load"),
        [("by-leader".to_owned(), "1".to_owned())]
    );
    assert_eq!(store.fenced() + leader_store.fenced(), 3);

    // A clean stop releases: a third takes over before the lapse.
    let c = sc.lead(cfg("c"), clock.clone());
    until(&c, "c follows", |s| {
        matches!(s, Standing::Follower(Some(_)))
    })
    .await;
    let held = store.lease_holder("ha").await.expect("read").expect("held");
    follower.release().await;
    until(&c, "c takes over", |s| matches!(s, Standing::Leader(_))).await;
    let Standing::Leader(third) = c.standing() else {
        unreachable!("waited for it")
    };
    assert!(
        third.since_ms < held.grant.expires_ms,
        "released, not lapsed: {third:?} {held:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_collectors_lead_one_at_a_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    two_collectors_one_leader(&keel_state::sqlite_url(&dir.path().join("state.db"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_collectors_lead_one_at_a_time() {
    if !testing::postgres_enabled() {
        eprintln!("skipped: set KEEL_TEST_POSTGRES=1 to run against PostgreSQL");
        return;
    }
    let url = testing::fresh_postgres_database().await.expect("database");
    two_collectors_one_leader(&url).await;
}
