//! The state store against SQLite (always) and the real PostgreSQL
//! server (`KEEL_TEST_POSTGRES=1`): documents survive reopening, writes
//! apply in order, history is kept and pruned.

use std::sync::Arc;

use keel_state::{Op, StateStore, Table, testing};

fn put(table: Table, key: &str, at_ms: i64, doc: &str) -> Op {
    Op::Put {
        table,
        key: key.into(),
        at_ms,
        doc: doc.into(),
    }
}

/// Write through a writer, reopen, and read everything back.
async fn round_trip(url: &str) {
    {
        let store = Arc::new(StateStore::open(url).await.expect("open"));
        let w = store.writer();
        w.send(put(Table::Alerts, "a", 1, r#"{"v":1}"#));
        w.send(put(Table::Alerts, "b", 1, r#"{"v":2}"#));
        // Later ops win: the overwrite and the delete apply in order.
        w.send(put(Table::Alerts, "a", 2, r#"{"v":3}"#));
        w.send(Op::Delete {
            table: Table::Alerts,
            key: "b".into(),
        });
        w.send(put(Table::Silences, "1", 2, r#"{"id":1}"#));
        for (t, what) in [(10, "pending"), (20, "firing"), (30, "resolved")] {
            w.send(Op::History {
                at_ms: t,
                key: "a".into(),
                doc: format!(r#"{{"to":"{what}"}}"#),
            });
        }
        w.flush().await.expect("flush");
    }
    let store = StateStore::open(url).await.expect("reopen");
    assert_eq!(
        store.load(Table::Alerts).await.expect("load"),
        vec![("a".to_owned(), r#"{"v":3}"#.to_owned())]
    );
    assert_eq!(store.load(Table::Silences).await.expect("load").len(), 1);
    assert!(store.load(Table::Tickets).await.expect("load").is_empty());
    let h = store.history(0, 25, 100).await.expect("history");
    assert_eq!(
        h.iter()
            .map(|e| (e.at_ms, e.doc.as_str()))
            .collect::<Vec<_>>(),
        vec![(10, r#"{"to":"pending"}"#), (20, r#"{"to":"firing"}"#)]
    );
    assert!(h[0].seq < h[1].seq);
    let newest = store.history(0, 100, 1).await.expect("history");
    assert_eq!(newest.len(), 1);
    assert_eq!(newest[0].at_ms, 30, "a limit keeps the newest");
    assert_eq!(store.prune_history(20).await.expect("prune"), 1);
    assert_eq!(store.history(0, 100, 100).await.expect("history").len(), 2);
}

#[tokio::test]
async fn sqlite_keeps_documents_and_history_across_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = keel_state::sqlite_url(&dir.path().join("state.db"));
    round_trip(&url).await;
}

#[tokio::test]
async fn postgres_keeps_documents_and_history_across_reopening() {
    if !testing::postgres_enabled() {
        eprintln!("skipped: set KEEL_TEST_POSTGRES=1 to run against PostgreSQL");
        return;
    }
    let url = testing::fresh_postgres_database().await.expect("database");
    round_trip(&url).await;
}

#[tokio::test]
async fn an_unreachable_database_is_an_error_naming_it() {
    let e = StateStore::open("postgres://nobody:pw@127.0.0.1:1/none")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("postgres://nobody:***@127.0.0.1:1/none"), "{e}");
}

/// A store made before migrations existed is adopted as it is, upgraded
/// to the latest schema once, and a schema newer than Keel's is refused.
async fn migrations(url: &str) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .expect("connect");
    // The old schema, as `IF NOT EXISTS` statements wrote it, with a row.
    sqlx::query("CREATE TABLE keel_alerts (key TEXT PRIMARY KEY, updated_ms BIGINT NOT NULL, doc TEXT NOT NULL)")
        .execute(&pool)
        .await
        .expect("old table");
    sqlx::query(
        "INSERT INTO keel_alerts (key, updated_ms, doc) VALUES ('old', 1, '{\"kept\":true}')",
    )
    .execute(&pool)
    .await
    .expect("old row");
    let versions = |pool: sqlx::AnyPool| async move {
        let rows = sqlx::query("SELECT version FROM keel_schema ORDER BY version")
            .fetch_all(&pool)
            .await
            .expect("versions");
        rows.iter()
            .map(|r| sqlx::Row::try_get::<i64, _>(r, 0).expect("version"))
            .collect::<Vec<i64>>()
    };
    {
        let store = StateStore::open(url).await.expect("open migrates");
        assert_eq!(
            store.load(Table::Alerts).await.expect("load"),
            vec![("old".to_owned(), r#"{"kept":true}"#.to_owned())],
            "the old row survives"
        );
        assert!(
            store
                .load(Table::Failover)
                .await
                .expect("new table")
                .is_empty()
        );
    }
    let latest = keel_state::migrate::latest();
    assert_eq!(
        versions(pool.clone()).await,
        (1..=latest).collect::<Vec<_>>()
    );
    // Reopening applies nothing twice.
    drop(StateStore::open(url).await.expect("reopen"));
    assert_eq!(
        versions(pool.clone()).await,
        (1..=latest).collect::<Vec<_>>()
    );
    // A newer Keel's schema: refused, naming the versions.
    sqlx::query("INSERT INTO keel_schema (version, applied_ms, what) VALUES (999, 0, 'future')")
        .execute(&pool)
        .await
        .expect("future version");
    let e = match StateStore::open(url).await {
        Ok(_) => panic!("a schema newer than Keel's was opened"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("version 999, newer than this Keel knows"), "{e}");
    pool.close().await;
}

#[tokio::test]
async fn sqlite_migrates_an_old_store_and_refuses_a_newer_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    migrations(&keel_state::sqlite_url(&dir.path().join("state.db"))).await;
}

#[tokio::test]
async fn postgres_migrates_an_old_store_and_refuses_a_newer_one() {
    if !testing::postgres_enabled() {
        eprintln!("skipped: set KEEL_TEST_POSTGRES=1 to run against PostgreSQL");
        return;
    }
    let url = testing::fresh_postgres_database().await.expect("database");
    migrations(&url).await;
}

#[tokio::test]
async fn documents_changed_before_a_time_are_pruned_and_the_rest_kept() {
    let store = StateStore::open("sqlite::memory:").await.expect("open");
    store
        .apply(&[
            put(Table::Audit, "old", 1_000, "{}"),
            put(Table::Audit, "edge", 2_000, "{}"),
            put(Table::Audit, "new", 3_000, "{}"),
        ])
        .await
        .expect("write");
    let gone = store
        .prune_documents(Table::Audit, 2_000)
        .await
        .expect("prune");
    assert_eq!(gone, 1);
    let kept: Vec<String> = store
        .load(Table::Audit)
        .await
        .expect("load")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(kept, ["edge", "new"]);
}
