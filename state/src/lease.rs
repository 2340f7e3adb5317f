//! Leases: which of several collectors sharing one state store leads
//! (evaluates rules, sends notifications, runs the controller), with a
//! fencing token.
//!
//! A lease is one row of `keel_leases`, taken and renewed by one
//! statement timed by the database's own clock (PostgreSQL's `now()`),
//! so collectors whose clocks disagree still agree on who holds it. The
//! holder renews it before it expires; anyone may take it once it has.
//! Each new holder gets a larger token. Writes a leader makes are
//! wrapped in [`Op::Fenced`](crate::Op::Fenced): the transaction that
//! lands them first checks, under the lease row's lock, that the token
//! still holds and has not expired, and drops them if not — so a deposed
//! leader that wakes up late changes nothing.

use std::time::Duration;

use sqlx::Row as _;

use crate::{Backend, StateError, StateStore};

/// The database's clock, in milliseconds since the epoch.
pub(crate) fn now_ms(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT)",
        Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
    }
}

/// A lease held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// The fencing token: larger for each new holder.
    pub token: i64,
    /// Since when this holder has held it (ms, the database's clock).
    pub since_ms: i64,
    /// When it expires unless renewed (ms, the database's clock).
    pub expires_ms: i64,
}

/// Who holds a lease, as anyone may read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The holder's name.
    pub holder: String,
    /// Its grant.
    pub grant: Grant,
    /// The database's clock when this was read (ms): the lease has
    /// lapsed when `grant.expires_ms <= now_ms`.
    pub now_ms: i64,
}

impl StateStore {
    /// Take the lease `name` for `holder` for `ttl`, or renew it if
    /// `holder` holds it: the grant, or `None` while another holds it
    /// unexpired. A holder whose own lease lapsed gets a new token, as
    /// anyone taking it would.
    pub async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Grant>, StateError> {
        let now = now_ms(self.backend);
        // `excluded` is the row proposed; `keel_leases` the one there.
        let held =
            "keel_leases.holder = excluded.holder AND keel_leases.expires_ms > excluded.renewed_ms";
        let row = sqlx::query(sql!(
            "INSERT INTO keel_leases (name, holder, token, since_ms, renewed_ms, expires_ms) \
             VALUES ($1, $2, 1, {now}, {now}, {now} + $3) \
             ON CONFLICT (name) DO UPDATE SET \
               token = CASE WHEN {held} THEN keel_leases.token ELSE keel_leases.token + 1 END, \
               since_ms = CASE WHEN {held} THEN keel_leases.since_ms ELSE excluded.since_ms END, \
               holder = excluded.holder, \
               renewed_ms = excluded.renewed_ms, \
               expires_ms = excluded.expires_ms \
             WHERE keel_leases.holder = excluded.holder OR keel_leases.expires_ms <= excluded.renewed_ms \
             RETURNING token, since_ms, expires_ms"
        ))
        .bind(name)
        .bind(holder)
        .bind(ttl.as_millis().min(i64::MAX as u128) as i64)
        .fetch_optional(&self.pool)
        .await
        .map_err(|source| StateError::Query {
            what: "take the lease",
            source,
        })?;
        row.map(|r| {
            Ok(Grant {
                token: r.try_get(0)?,
                since_ms: r.try_get(1)?,
                expires_ms: r.try_get(2)?,
            })
        })
        .transpose()
        .map_err(|source| StateError::Query {
            what: "read the lease",
            source,
        })
    }

    /// Give up the lease `name` if `holder` holds it with `token` (a
    /// clean stop: the next holder need not wait for it to expire).
    pub async fn release_lease(
        &self,
        name: &str,
        holder: &str,
        token: i64,
    ) -> Result<bool, StateError> {
        let now = now_ms(self.backend);
        sqlx::query(sql!(
            "UPDATE keel_leases SET expires_ms = {now} \
             WHERE name = $1 AND holder = $2 AND token = $3 AND expires_ms > {now}"
        ))
        .bind(name)
        .bind(holder)
        .bind(token)
        .execute(&self.pool)
        .await
        .map(|r| r.rows_affected() == 1)
        .map_err(|source| StateError::Query {
            what: "release the lease",
            source,
        })
    }

    /// Who holds the lease `name` (or held it last), if anyone ever did.
    pub async fn lease_holder(&self, name: &str) -> Result<Option<Holder>, StateError> {
        let now = now_ms(self.backend);
        let row = sqlx::query(sql!(
            "SELECT holder, token, since_ms, expires_ms, {now} FROM keel_leases WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(|source| StateError::Query {
            what: "read the lease",
            source,
        })?;
        row.map(|r| {
            Ok(Holder {
                holder: r.try_get(0)?,
                grant: Grant {
                    token: r.try_get(1)?,
                    since_ms: r.try_get(2)?,
                    expires_ms: r.try_get(3)?,
                },
                now_ms: r.try_get(4)?,
            })
        })
        .transpose()
        .map_err(|source| StateError::Query {
            what: "read the lease",
            source,
        })
    }
}

/// Inside a write transaction: whether the lease `name` is still held
/// with `token` and unexpired. On PostgreSQL the row stays locked until
/// the transaction ends, so no one can take the lease in between.
pub(crate) async fn still_held(
    tx: &mut sqlx::AnyConnection,
    backend: Backend,
    name: &str,
    token: i64,
) -> Result<bool, sqlx::Error> {
    let now = now_ms(backend);
    sqlx::query(sql!(
        "UPDATE keel_leases SET token = token WHERE name = $1 AND token = $2 AND expires_ms > {now}"
    ))
    .bind(name)
    .bind(token)
    .execute(tx)
    .await
    .map(|r| r.rows_affected() == 1)
}

/// Where a collector stands, as its lease says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Not known yet (the first try has not answered).
    Starting,
    /// It holds the lease: it may act, writing under this grant's token.
    Leader(Grant),
    /// Another holds it (named, when it could be read).
    Follower(Option<String>),
    /// The store could not be asked: it does not act (why).
    Lost(String),
}

impl Standing {
    /// The token to write under, while leading.
    pub fn token(&self) -> Option<i64> {
        match self {
            Standing::Leader(g) => Some(g.token),
            _ => None,
        }
    }
}

/// Whether this collector may act now, and under which token: it leads
/// and its own deadline (see [`StateStore::lead`]; read on the clock that
/// keeps counting while the machine is suspended, Linux' `CLOCK_BOOTTIME`)
/// has not passed. Read at the moment of acting, so a process that was
/// stalled past its lease (a pause, a frozen VM) knows at once, before
/// its lease task has run again. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Acting {
    rx: tokio::sync::watch::Receiver<Standing>,
    deadline: std::sync::Arc<std::sync::Mutex<Option<i128>>>,
}

/// Nanoseconds on the clock that keeps counting while the machine is
/// suspended (Linux' `CLOCK_BOOTTIME`), so a leader that wakes from a
/// suspend sees its deadline passed; elsewhere the monotonic clock. A
/// clock that cannot be read reads as the end of time: no deadline holds.
fn boot_ns() -> i128 {
    #[cfg(target_os = "linux")]
    {
        match nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME) {
            Ok(t) => i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec()),
            Err(_) => i128::MAX,
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_nanos() as i128
    }
}

impl Acting {
    /// The token to act under now, or `None`: do not act.
    pub fn token(&self) -> Option<i64> {
        let token = self.rx.borrow().token()?;
        let deadline = *self.deadline.lock().unwrap_or_else(|e| e.into_inner());
        deadline.is_some_and(|d| boot_ns() < d).then_some(token)
    }

    /// Whether this collector may act now.
    pub fn may_act(&self) -> bool {
        self.token().is_some()
    }
}

/// A lease held, renewed and watched by a task of its own
/// ([`StateStore::lead`]); dropping it stops the task without releasing
/// the lease (call [`Leadership::release`] on a clean stop).
pub struct Leadership {
    rx: tokio::sync::watch::Receiver<Standing>,
    task: tokio::task::JoinHandle<()>,
    store: std::sync::Arc<StateStore>,
    cfg: LeaseConfig,
    /// Set once this collector has led.
    led: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acting: Acting,
}

impl Leadership {
    /// Where this collector stands now.
    pub fn standing(&self) -> Standing {
        self.rx.borrow().clone()
    }

    /// The lease's name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// A receiver that sees every change of standing.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<Standing> {
        self.rx.clone()
    }

    /// The check to make at the moment of acting ([`Acting`]).
    pub fn acting(&self) -> Acting {
        self.acting.clone()
    }

    /// `ops` as one group written under this lease's current token
    /// ([`Op::Fenced`](crate::Op::Fenced)), or `None` while not leading:
    /// the caller must not act then.
    pub fn fence(&self, ops: Vec<crate::Op>) -> Option<crate::Op> {
        let token = self.acting.token()?;
        Some(crate::Op::Fenced {
            lease: self.cfg.name.clone(),
            token,
            ops,
        })
    }

    /// Wait until this collector, having led, leads no more (another
    /// took the lease, it could not be renewed in time, or the task
    /// stopped): why. Never while it has not led.
    pub async fn deposed(&self) -> String {
        use std::sync::atomic::Ordering::SeqCst;
        let mut w = self.rx.clone();
        loop {
            let why = match &*w.borrow_and_update() {
                Standing::Leader(_) | Standing::Starting => None,
                Standing::Follower(Some(who)) => Some(format!("{who} took the lease")),
                Standing::Follower(None) => Some("another collector took the lease".into()),
                Standing::Lost(why) => Some(why.clone()),
            };
            if let Some(why) = why.filter(|_| self.led.load(SeqCst)) {
                return why;
            }
            if w.changed().await.is_err() {
                if self.led.load(SeqCst) {
                    return "the lease task stopped".into();
                }
                return std::future::pending().await;
            }
        }
    }

    /// A clean stop: stop renewing and give the lease up, so the next
    /// holder need not wait for it to lapse.
    pub async fn release(&self) {
        self.task.abort();
        if let Some(token) = self.rx.borrow().token() {
            let released = self
                .store
                .release_lease(&self.cfg.name, &self.cfg.holder, token)
                .await;
            if let Err(e) = released {
                tracing::warn!(error = %e, "the lease was not released; it lapses by itself");
            }
        }
    }

    /// Stop at once, as a crash would: the lease is not released, and
    /// the next holder waits for it to lapse.
    pub fn abort(&self) {
        self.task.abort();
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How a [`StateStore::lead`] task holds its lease.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// The lease's name (one per group of collectors).
    pub name: String,
    /// This collector's name in it.
    pub holder: String,
    /// How long a grant lasts unless renewed (at least three `every`).
    pub ttl: Duration,
    /// How often it is taken or renewed: a follower takes a lapsed
    /// lease within `ttl + every` of the last renewal.
    pub every: Duration,
}

impl StateStore {
    /// Take and renew the lease `cfg` names, every `cfg.every` on
    /// `clock`, for as long as the returned [`Leadership`] lives. Each
    /// try may take `ttl / 3`. A leader that cannot renew stays leader
    /// only until its own deadline — when its last successful try
    /// started, plus `ttl - every` — measured on this machine's monotonic
    /// clock, so it stops acting before any other collector can take the
    /// lease; it says so. A success before then keeps its token.
    pub fn lead(
        self: &std::sync::Arc<Self>,
        cfg: LeaseConfig,
        clock: keel_core::clock::SharedClock,
    ) -> Leadership {
        let (tx, rx) = tokio::sync::watch::channel(Standing::Starting);
        let led = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let acting = Acting {
            rx: rx.clone(),
            deadline: Default::default(),
        };
        let task = tokio::spawn(lead_loop(
            self.clone(),
            cfg.clone(),
            clock,
            tx,
            led.clone(),
            acting.deadline.clone(),
        ));
        Leadership {
            rx,
            task,
            store: self.clone(),
            cfg,
            led,
            acting,
        }
    }
}

/// The task of [`StateStore::lead`].
async fn lead_loop(
    store: std::sync::Arc<StateStore>,
    cfg: LeaseConfig,
    clock: keel_core::clock::SharedClock,
    tx: tokio::sync::watch::Sender<Standing>,
    led: std::sync::Arc<std::sync::atomic::AtomicBool>,
    shared_deadline: std::sync::Arc<std::sync::Mutex<Option<i128>>>,
) {
    use tokio::time::Instant;
    let try_for = cfg.ttl / 3;
    let margin = cfg.ttl.saturating_sub(cfg.every);
    // Until when this collector may act without another renewal
    // (published to [`Acting`] with every change).
    let mut deadline: Option<Instant> = None;
    // The same deadline on the boot clock, for [`Acting`].
    let margin_ns = i128::try_from(margin.as_nanos()).unwrap_or(i128::MAX);
    let mut boot_deadline: Option<i128> = None;
    let share = |d: Option<i128>| {
        *shared_deadline.lock().unwrap_or_else(|e| e.into_inner()) = d;
    };
    let publish = |next: Standing| {
        tx.send_if_modified(|now| {
            if *now == next {
                return false;
            }
            match (&*now, &next) {
                (Standing::Leader(_), Standing::Lost(why)) => tracing::error!(
                    lease = %cfg.name, %why,
                    "gave up leading: the lease could not be renewed in time, so nothing is done until it is"
                ),
                (Standing::Leader(_), Standing::Follower(who)) => tracing::warn!(
                    lease = %cfg.name, leader = ?who,
                    "no longer leading: another collector holds the lease"
                ),
                (_, Standing::Leader(g)) if now.token() != Some(g.token) => {
                    tracing::info!(lease = %cfg.name, token = g.token, "leading")
                }
                _ => {}
            }
            if matches!(next, Standing::Leader(_)) {
                led.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            *now = next;
            true
        })
    };
    loop {
        let started = Instant::now();
        let started_boot = boot_ns();
        // A leader's try may not outlast its deadline.
        let limit = deadline.map_or(try_for, |d| {
            try_for.min(d.saturating_duration_since(started))
        });
        let tried =
            tokio::time::timeout(limit, store.acquire_lease(&cfg.name, &cfg.holder, cfg.ttl)).await;
        match tried {
            Ok(Ok(Some(g))) => {
                deadline = Some(started + margin);
                boot_deadline = Some(started_boot.saturating_add(margin_ns));
                share(boot_deadline);
                publish(Standing::Leader(g));
            }
            Ok(Ok(None)) => {
                deadline = None;
                boot_deadline = None;
                share(None);
                // At once; the leader's name follows if it can be read.
                publish(Standing::Follower(None));
                let who = tokio::time::timeout(try_for, store.lease_holder(&cfg.name)).await;
                if let Ok(Ok(Some(h))) = who {
                    publish(Standing::Follower(Some(h.holder)));
                }
            }
            Ok(Err(e)) => fail(&tx, &publish, &mut deadline, e.to_string()),
            Err(_) => fail(
                &tx,
                &publish,
                &mut deadline,
                format!("the state store did not answer within {limit:?}"),
            ),
        }
        if deadline.is_none() {
            boot_deadline = None;
        }
        share(boot_deadline);
        // Wake for the next try, or at the deadline if that is sooner.
        let wait = deadline.map_or(cfg.every, |d| {
            cfg.every.min(d.saturating_duration_since(Instant::now()))
        });
        clock.sleep(wait).await;
        if deadline.is_some_and(|d| Instant::now() >= d) && tx.borrow().token().is_some() {
            deadline = None;
            boot_deadline = None;
            share(None);
            publish(Standing::Lost(format!(
                "the lease was not renewed within {margin:?}"
            )));
        }
    }
}

/// A failed try: a leader stays leader until its deadline; anyone else
/// is lost (it does not know who leads).
fn fail(
    tx: &tokio::sync::watch::Sender<Standing>,
    publish: &impl Fn(Standing) -> bool,
    deadline: &mut Option<tokio::time::Instant>,
    why: String,
) {
    let leading = tx.borrow().token().is_some();
    let in_time = deadline.is_some_and(|d| tokio::time::Instant::now() < d);
    if leading && in_time {
        tracing::warn!(%why, "the lease could not be renewed; trying again before it lapses");
        return;
    }
    *deadline = None;
    publish(Standing::Lost(why));
}
