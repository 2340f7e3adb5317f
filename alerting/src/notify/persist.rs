//! Routing state in the state store: what was paged for each alert (and
//! whether it was acknowledged) and each group, tickets, silences and every
//! notification with how its sending went. Saved on every change; at
//! start it is read back, so a restarted collector does not page again
//! for what it already paged, keeps its silences and acks, and sends
//! the notifications it had not delivered yet.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;

use serde::Serialize;

use keel_state::{Op, Table, Writer};

use super::route::{GroupSent, Router, Sent, Ticket};

/// Routing keys of groups start with this (an alert's is a JSON object).
const GROUP: &str = "group:";
use super::silence::Silence;

/// What has been saved, as values, to save only changes: a decision
/// compares each alert's and group's state with what was saved and
/// serialises only what differs.
pub struct NotifyPersist {
    writer: Writer,
    sent: HashMap<Vec<(String, String)>, Sent>,
    groups: HashMap<String, GroupSent>,
    tickets: HashMap<u64, Ticket>,
    silences: HashMap<u64, Silence>,
    /// Saved keys that did not parse (or not back to themselves): deleted
    /// by the next sync.
    orphans: Vec<(Table, String)>,
}

/// The saved routing state, as read at start.
#[derive(Debug, Default)]
pub struct Saved {
    /// The routing table's documents.
    pub routing: Vec<(String, String)>,
    /// The tickets table's.
    pub tickets: Vec<(String, String)>,
    /// The silences table's.
    pub silences: Vec<(String, String)>,
    /// The notifications table's.
    pub notifications: Vec<(String, String)>,
}

impl Saved {
    /// Read every routing table of `store`.
    pub async fn load(store: &keel_state::StateStore) -> Result<Self, keel_state::StateError> {
        Ok(Self {
            routing: store.load(Table::Routing).await?,
            tickets: store.load(Table::Tickets).await?,
            silences: store.load(Table::Silences).await?,
            notifications: store.load(Table::Notifications).await?,
        })
    }
}

/// A numbered document's key: zero-padded, so keys sort as numbers.
pub fn number_key(n: u64) -> String {
    format!("{n:012}")
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, key: &str, doc: &str) -> Option<T> {
    serde_json::from_str(doc)
        .map_err(
            |e| tracing::warn!(what, key, error = %e, "a saved record does not parse; dropped"),
        )
        .ok()
}

fn sent_key(labels: &[(String, String)]) -> String {
    let m: BTreeMap<&str, &str> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    serde_json::to_string(&m).unwrap_or_default()
}

impl NotifyPersist {
    /// Put `saved` back into `router`; the persister that saves what
    /// changes from now on.
    pub fn restore(writer: Writer, saved: &Saved, router: &mut Router) -> Self {
        // What was read back is what is saved, under the key the next sync
        // would write it at; a record under another key is put back too,
        // deleted there and written again under its own (it is left out of
        // what is saved, so the next sync writes it); a record that does
        // not parse is deleted.
        let mut me = Self {
            writer,
            sent: HashMap::new(),
            groups: HashMap::new(),
            tickets: HashMap::new(),
            silences: HashMap::new(),
            orphans: Vec::new(),
        };
        let mut tickets: Vec<Ticket> = Vec::new();
        for (k, d) in &saved.tickets {
            let Some(t) = parse::<Ticket>("ticket", k, d) else {
                me.orphans.push((Table::Tickets, k.clone()));
                continue;
            };
            if number_key(t.id) == *k {
                me.tickets.insert(t.id, t.clone());
            } else {
                me.orphans.push((Table::Tickets, k.clone()));
            }
            tickets.push(t);
        }
        tickets.sort_by_key(|t| t.id);
        router.tickets = tickets;
        let mut silences: Vec<Silence> = Vec::new();
        for (k, d) in &saved.silences {
            let Some(s) = parse::<Silence>("silence", k, d) else {
                me.orphans.push((Table::Silences, k.clone()));
                continue;
            };
            if number_key(s.id) == *k {
                me.silences.insert(s.id, s.clone());
            } else {
                me.orphans.push((Table::Silences, k.clone()));
            }
            silences.push(s);
        }
        silences.sort_by_key(|s| s.id);
        router.silences = silences;
        for (k, d) in &saved.routing {
            if let Some(g) = k.strip_prefix(GROUP) {
                match parse::<GroupSent>("routing group", k, d) {
                    Some(s) => {
                        me.groups.insert(g.to_owned(), s.clone());
                        router.groups.insert(g.to_owned(), s);
                    }
                    None => me.orphans.push((Table::Routing, k.clone())),
                }
                continue;
            }
            let labels: Option<BTreeMap<String, String>> = parse("routing key", k, k);
            let sent: Option<Sent> = parse("routing", k, d);
            let (Some(l), Some(s)) = (labels, sent) else {
                me.orphans.push((Table::Routing, k.clone()));
                continue;
            };
            let l: Vec<(String, String)> = l.into_iter().collect();
            if sent_key(&l) == *k {
                me.sent.insert(l.clone(), s.clone());
            } else {
                me.orphans.push((Table::Routing, k.clone()));
            }
            router.sent.insert(l, s);
        }
        let n = router.sent.len() + router.tickets.len() + router.silences.len();
        if n > 0 {
            tracing::info!(
                alerts = router.sent.len(),
                tickets = router.tickets.len(),
                silences = router.silences.len(),
                "routing state restored from the state store"
            );
        }
        me
    }

    /// Save what changed in `router` since the last call: only entries
    /// whose value differs are serialised.
    pub fn sync(&mut self, now_ms: i64, router: &Router) {
        self.sync_with(now_ms, router, &[]);
    }

    /// As [`Self::sync`], with `deliveries` saved in the same transaction:
    /// the routing that decided a page and the page's intent are durable
    /// together or not at all.
    pub fn sync_with(&mut self, now_ms: i64, router: &Router, deliveries: &[super::Delivery]) {
        let mut ops: Vec<Op> = self
            .orphans
            .drain(..)
            .map(|(table, key)| Op::Delete { table, key })
            .collect();
        let w = &mut ops;
        sync_map(
            w,
            Table::Routing,
            now_ms,
            &mut self.sent,
            &router.sent,
            |k| sent_key(k),
        );
        sync_map(
            w,
            Table::Routing,
            now_ms,
            &mut self.groups,
            &router.groups,
            |k| format!("{GROUP}{k}"),
        );
        let tickets = router.tickets.iter().map(|t| (&t.id, t));
        sync_map(
            w,
            Table::Tickets,
            now_ms,
            &mut self.tickets,
            tickets,
            |id| number_key(*id),
        );
        let silences = router.silences.iter().map(|s| (&s.id, s));
        sync_map(
            w,
            Table::Silences,
            now_ms,
            &mut self.silences,
            silences,
            |id| number_key(*id),
        );
        ops.extend(deliveries.iter().filter_map(|d| notification_op(now_ms, d)));
        self.writer.send_all(ops);
    }

    /// Save a notification (under its `seq`).
    pub fn notification(&self, now_ms: i64, d: &super::Delivery) {
        if let Some(op) = notification_op(now_ms, d) {
            self.writer.send(op);
        }
    }

    /// Delete notification `seq` (past its retention).
    pub fn forget_notification(&self, seq: u64) {
        self.writer.send(Op::Delete {
            table: Table::Notifications,
            key: number_key(seq),
        });
    }

    /// The writer, to wait until what was saved is durable.
    pub fn writer(&self) -> Writer {
        self.writer.clone()
    }
}

/// The op that saves a notification under its `seq`.
fn notification_op(now_ms: i64, d: &super::Delivery) -> Option<Op> {
    match serde_json::to_string(d) {
        Ok(doc) => Some(Op::Put {
            table: Table::Notifications,
            key: number_key(d.seq),
            at_ms: now_ms,
            doc,
        }),
        Err(e) => {
            tracing::error!(error = %e, "a notification does not serialize");
            None
        }
    }
}

/// Write the entries of `now` whose value differs from `saved` (as
/// `key` names them), delete the saved ones `now` lacks, and remember
/// `now` as saved.
fn sync_map<'a, K, V>(
    writer: &mut Vec<Op>,
    table: Table,
    at_ms: i64,
    saved: &mut HashMap<K, V>,
    now: impl IntoIterator<Item = (&'a K, &'a V)>,
    key: impl Fn(&K) -> String,
) where
    K: Eq + Hash + Clone + 'a,
    V: PartialEq + Clone + Serialize + 'a,
{
    let mut seen: HashSet<&K> = HashSet::new();
    for (k, v) in now {
        // Two entries under one key (ids in foreign data): the first is
        // the one saved, so a sync does not write both every time.
        if !seen.insert(k) || saved.get(k) == Some(v) {
            continue;
        }
        match serde_json::to_string(v) {
            Ok(doc) => {
                writer.push(Op::Put {
                    table,
                    key: key(k),
                    at_ms,
                    doc,
                });
                saved.insert(k.clone(), v.clone());
            }
            Err(e) => tracing::error!(error = %e, "a routing record does not serialize"),
        }
    }
    saved.retain(|k, _| {
        let keep = seen.contains(k);
        if !keep {
            writer.push(Op::Delete { table, key: key(k) });
        }
        keep
    });
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use keel_state::StateStore;

    use super::*;
    use crate::notify::NotifyConfig;

    fn keys(rows: &[(String, String)]) -> Vec<&str> {
        rows.iter().map(|(k, _)| k.as_str()).collect()
    }

    #[tokio::test]
    async fn a_sync_writes_only_what_changed_and_deletes_what_left_and_what_did_not_parse() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = keel_state::sqlite_url(&dir.path().join("state.db"));
        let store = Arc::new(StateStore::open(&url).await.expect("open"));
        let w = store.writer();
        // Saved before: a group record that does not parse, and an
        // alert's record under a key written another way (a space).
        w.send(Op::Put {
            table: Table::Routing,
            key: "group:old".into(),
            at_ms: 1,
            doc: "not json".into(),
        });
        w.send(Op::Put {
            table: Table::Routing,
            key: r#"{"alertname": "A"}"#.into(),
            at_ms: 1,
            doc: serde_json::to_string(&Sent::default()).expect("json"),
        });
        w.flush().await.expect("flush");
        let saved = Saved {
            routing: store.load(Table::Routing).await.expect("load"),
            ..Saved::default()
        };
        let config = NotifyConfig::default();
        let hours = config.business_hours.compile().expect("hours");
        let mut router = Router::new(config.policy(hours), Vec::new());
        let mut p = NotifyPersist::restore(w.clone(), &saved, &mut router);
        let group = |t: i64| GroupSent {
            first_seen_ms: Some(t),
            ..GroupSent::default()
        };
        router.groups.insert("a".into(), group(1));
        router.groups.insert("b".into(), group(2));
        p.sync(1_000, &router);
        w.flush().await.expect("flush");
        let rows = store.load(Table::Routing).await.expect("load");
        let a_labels = vec![("alertname".to_owned(), "A".to_owned())];
        assert_eq!(router.sent.get(&a_labels), Some(&Sent::default()));
        assert_eq!(
            keys(&rows),
            ["group:a", "group:b", r#"{"alertname":"A"}"#],
            "the unparseable one is gone; the alert's is kept under its own key"
        );

        // Only b changes: only b is written again.
        router.groups.insert("b".into(), group(3));
        p.sync(2_000, &router);
        w.flush().await.expect("flush");
        let written = store
            .load_between(Table::Routing, 2_000, 2_000, 10)
            .await
            .expect("load");
        assert_eq!(keys(&written), ["group:b"]);
        assert!(written[0].1.contains("\"first_seen_ms\":3"), "{written:?}");

        // Nothing changes: nothing is written; a leaves: it is deleted.
        p.sync(3_000, &router);
        router.groups.remove("a");
        p.sync(4_000, &router);
        w.flush().await.expect("flush");
        let rows = store.load(Table::Routing).await.expect("load");
        assert_eq!(keys(&rows), ["group:b", r#"{"alertname":"A"}"#]);
        let written = store
            .load_between(Table::Routing, 3_000, 4_000, 10)
            .await
            .expect("load");
        assert!(written.is_empty(), "{written:?}");
    }
}
