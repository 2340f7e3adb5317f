//! Routing state in the state store: what was paged for each alert (and
//! whether it was acknowledged) and each group, tickets, silences and every
//! notification with how its sending went. Saved on every change; at
//! start it is read back, so a restarted collector does not page again
//! for what it already paged, keeps its silences and acks, and sends
//! the notifications it had not delivered yet.

use std::collections::{BTreeMap, HashMap};

use keel_state::{Op, Table, Writer};

use super::route::{GroupSent, Router, Sent, Ticket};

/// Routing keys of groups start with this (an alert's is a JSON object).
const GROUP: &str = "group:";
use super::silence::Silence;

/// What has been saved, to save only changes.
pub struct NotifyPersist {
    writer: Writer,
    sent: HashMap<String, String>,
    tickets: HashMap<String, String>,
    silences: HashMap<String, String>,
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
        let mut me = Self {
            writer,
            sent: HashMap::new(),
            tickets: HashMap::new(),
            silences: HashMap::new(),
        };
        let mut tickets: Vec<Ticket> = saved
            .tickets
            .iter()
            .filter_map(|(k, d)| parse("ticket", k, d))
            .collect();
        tickets.sort_by_key(|t| t.id);
        router.tickets = tickets;
        let mut silences: Vec<Silence> = saved
            .silences
            .iter()
            .filter_map(|(k, d)| parse("silence", k, d))
            .collect();
        silences.sort_by_key(|s| s.id);
        router.silences = silences;
        for (k, d) in &saved.routing {
            if let Some(g) = k.strip_prefix(GROUP) {
                if let Some(s) = parse::<GroupSent>("routing group", k, d) {
                    router.groups.insert(g.to_owned(), s);
                }
                continue;
            }
            let labels: Option<BTreeMap<String, String>> = parse("routing key", k, k);
            let sent: Option<Sent> = parse("routing", k, d);
            if let (Some(l), Some(s)) = (labels, sent) {
                router.sent.insert(l.into_iter().collect(), s);
            }
        }
        // What was read is what is saved (unparseable records are
        // overwritten or deleted by the next sync).
        me.sent = saved.routing.iter().cloned().collect();
        me.tickets = saved.tickets.iter().cloned().collect();
        me.silences = saved.silences.iter().cloned().collect();
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

    /// Save what changed in `router` since the last call.
    pub fn sync(&mut self, now_ms: i64, router: &Router) {
        let sent: HashMap<String, String> =
            router
                .sent
                .iter()
                .filter_map(|(k, s)| Some((sent_key(k), serde_json::to_string(s).ok()?)))
                .chain(router.groups.iter().filter_map(|(k, g)| {
                    Some((format!("{GROUP}{k}"), serde_json::to_string(g).ok()?))
                }))
                .collect();
        sync_table(&self.writer, Table::Routing, now_ms, &mut self.sent, sent);
        let tickets = router
            .tickets
            .iter()
            .filter_map(|t| Some((number_key(t.id), serde_json::to_string(t).ok()?)))
            .collect();
        sync_table(
            &self.writer,
            Table::Tickets,
            now_ms,
            &mut self.tickets,
            tickets,
        );
        let silences = router
            .silences
            .iter()
            .filter_map(|s| Some((number_key(s.id), serde_json::to_string(s).ok()?)))
            .collect();
        sync_table(
            &self.writer,
            Table::Silences,
            now_ms,
            &mut self.silences,
            silences,
        );
    }

    /// Save notification number `n`.
    pub fn notification(&self, now_ms: i64, n: usize, d: &super::Delivery) {
        match serde_json::to_string(d) {
            Ok(doc) => self.writer.send(Op::Put {
                table: Table::Notifications,
                key: number_key(n as u64),
                at_ms: now_ms,
                doc,
            }),
            Err(e) => tracing::error!(error = %e, "a notification does not serialize"),
        }
    }
}

/// Write the documents of `now` that differ from `saved`, delete the
/// ones `now` lacks, and remember `now` as saved.
fn sync_table(
    writer: &Writer,
    table: Table,
    at_ms: i64,
    saved: &mut HashMap<String, String>,
    now: HashMap<String, String>,
) {
    for (k, doc) in &now {
        if saved.get(k) != Some(doc) {
            writer.send(Op::Put {
                table,
                key: k.clone(),
                at_ms,
                doc: doc.clone(),
            });
        }
    }
    for k in saved.keys() {
        if !now.contains_key(k) {
            writer.send(Op::Delete {
                table,
                key: k.clone(),
            });
        }
    }
    *saved = now;
}
