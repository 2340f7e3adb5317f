//! `keel up`: start everything and print where it listens.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use keel_core::config::Validate;
use keel_sampleapp::supervisor::Supervisor;

/// `say` with `format!` arguments.
macro_rules! say_fmt {
    ($($arg:tt)*) => {
        say(&format!($($arg)*))
    };
}

/// Flags of `keel up` (they override the config file and environment).
#[derive(clap::Args)]
pub struct UpArgs {
    /// Where logs, WALs, state and process specs go (the sample app's
    /// files, `collector/` and `agent/` under it, unless the config
    /// places those elsewhere).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Load balancer port (0 picks a free one).
    #[arg(long)]
    lb_port: Option<u16>,
    /// Supervisor (actuator API) port (0 picks a free one).
    #[arg(long)]
    supervisor_port: Option<u16>,
    /// Web instances to start with.
    #[arg(long)]
    web: Option<u32>,
    /// The collector's state store: a `sqlite:` or `postgres://` URL
    /// (default: SQLite in the collector's data directory).
    #[arg(long)]
    state: Option<String>,
}

pub fn run(config_path: Option<&Path>, args: UpArgs) -> anyhow::Result<()> {
    let mut config = crate::config::load(config_path)?;
    if let Some(d) = args.data_dir {
        // Everything under it: the sample app's files, and the collector's
        // and the agent's unless the config places them.
        config.sampleapp.data_dir = d.clone();
        if config.collector.data_dir == keel_collector::server::CollectorConfig::default().data_dir
        {
            config.collector.data_dir = d.join("collector");
        }
        if config.agent.data_dir == keel_agent::config::AgentConfig::default().data_dir {
            config.agent.data_dir = d.join("agent");
        }
    }
    let app = &mut config.sampleapp;
    if let Some(p) = args.lb_port {
        app.lb.port = p;
    }
    if let Some(p) = args.supervisor_port {
        app.supervisor.port = p;
    }
    if let Some(n) = args.web {
        app.web.instances = n;
    }
    if let Some(s) = args.state {
        config.collector.state = s;
    }
    let supervisor_token = supervisor_token(&mut config.sampleapp)?;
    let token_note = match &config.sampleapp.supervisor.token_file {
        f if f.as_os_str().is_empty() => "token: sampleapp.supervisor.token".to_owned(),
        f => format!("token in {}", f.display()),
    };
    config.check("command-line flags")?;
    tracing_subscriber_init();
    let exe = std::env::current_exe().context("locating the keel binary")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let clock: keel_core::clock::SharedClock =
            std::sync::Arc::new(keel_core::clock::SystemClock);
        let mut collector_config = config.collector.clone();
        // The agent keel up runs must trust the collector's certificate
        // (and the sample app exports through the agent, never to it).
        if collector_config.tls.enabled() && config.agent.collector_tls.ca_file.is_none() {
            anyhow::bail!(
                "collector.tls is set: keel up's agent must trust the CA that signed \
                 collector.tls.cert_file; set agent.collector_tls.ca_file (and, with \
                 collector.tls.client_ca_file, agent.collector_tls.cert_file and key_file)"
            );
        }
        if collector_config.ha.enabled {
            anyhow::bail!(
                "collector.ha: keel up runs one collector beside the sample app; run a pair with \
                 `keel collector` on each host"
            );
        }
        if collector_config.rules.files.is_empty() {
            collector_config.rules.files = vec![default_rules(&config.sampleapp.data_dir)?];
        }
        let collector = keel_collector::server::start(&collector_config, clock.clone()).await?;
        collector
            .incidents
            .set_replayer(std::sync::Arc::new(keel_replay::Replayer));
        let db_config = config.sampleapp.db.clone();
        let mut app = config.sampleapp;
        // The agent starts first: it finds the sample app's processes in
        // the targets file the supervisor keeps, and takes their spans.
        let mut agent_config = agent_for(config.agent.clone(), &collector, &app.data_dir);
        // A collector that wants sender tokens gets one from the agent
        // `keel up` runs: the first sender's, unless the agent has its own.
        if let Some(sender) = config.collector.auth.senders.first()
            && agent_config.collector_token().ok().flatten().is_none()
        {
            agent_config.collector_token = keel_core::secret::Secret::new(
                sender
                    .read()
                    .map_err(|e| anyhow::anyhow!("collector.auth.senders[0]: {e}"))?,
            );
        }
        let agent = keel_agent::run::Agent::start(agent_config, clock.clone()).await?;
        if agent.otlp_addr.is_none()
            && app.otlp_endpoint.is_none()
            && !config.collector.auth.senders.is_empty()
        {
            anyhow::bail!(
                "collector.auth.senders is set and agent.otlp_receiver is \"\": the sample app \
                 would export its spans to the collector without a token; give the agent a \
                 receiver (its default, 127.0.0.1:4319) or set sampleapp.otlp_endpoint"
            );
        }
        // The sample app's spans go to the agent's local receiver (or, with
        // none, to the collector) unless the configuration names another
        // endpoint.
        if app.otlp_endpoint.is_none() {
            app.otlp_endpoint = Some(match agent.otlp_addr {
                Some(to) => format!("http://{to}"),
                None => format!("{}://{}", collector.scheme(), collector.otlp_http),
            });
        }
        let web_min = app.web.instances.max(1);
        let web_max = app.web.max_instances.min(10).max(web_min);
        let (sup, ep) = Supervisor::start(app, exe).await?;
        let mut controller_config = config.controller.clone();
        let own_url = format!("http://{}", ep.supervisor);
        for p in &mut controller_config.policies {
            if let keel_controller::ActuatorConfig::Supervisor {
                url,
                token,
                token_file,
            } = &mut p.actuator
            {
                point_at_own_supervisor(url, token, token_file, &own_url, &supervisor_token);
            }
        }
        let own = keel_controller::ActuatorConfig::supervisor(&own_url, Some(&supervisor_token));
        if controller_config.policies.is_empty() {
            controller_config.policies = vec![shipped_policy(own, web_min, web_max)];
        }
        for f in &mut controller_config.failover {
            if let keel_controller::failover::DriverConfig::Sample {
                supervisor,
                token,
                token_file,
            } = &mut f.driver
            {
                point_at_own_supervisor(supervisor, token, token_file, &own_url, &supervisor_token);
            }
        }
        if controller_config.failover.is_empty() {
            controller_config.failover = vec![shipped_failover(
                keel_controller::failover::DriverConfig::sample(&own_url, Some(&supervisor_token)),
                &db_config,
            )];
        }
        let (controller_addr, _controller) =
            start_controller(&controller_config, &collector, clock.clone()).await?;
        say("keel: the sample app is up");
        say(&format!("  access              {}", access(&collector_config)));
        let s = collector.scheme();
        say_fmt!("  dashboard           {s}://{}/ui/", collector.api);
        say_fmt!(
            "  collector OTLP/HTTP {s}://{}/v1/metrics",
            collector.otlp_http
        );
        say_fmt!("  collector OTLP/gRPC {s}://{}", collector.otlp_grpc);
        say_fmt!(
            "  PromQL API          {s}://{}/api/v1/query",
            collector.api
        );
        say_fmt!(
            "  log search          {s}://{}/api/v1/logs/search?q=level:error",
            collector.api
        );
        say_fmt!(
            "  trace search        {s}://{}/api/v1/traces/search?service=shop-lb",
            collector.api
        );
        say_fmt!(
            "  alert rules         {s}://{}/api/v1/rules   ({})",
            collector.api,
            collector_config
                .rules
                .files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        say_fmt!(
            "  alerts              {s}://{}/api/v1/alerts",
            collector.api
        );
        say_fmt!(
            "  controller events   {s}://{controller_addr}/api/v1/events   ({})",
            controller_config
                .policies
                .iter()
                .map(|p| format!("{} {}–{}", p.name, p.min, p.max))
                .collect::<Vec<_>>()
                .join(", ")
        );
        say_fmt!(
            "  failover            {s}://{controller_addr}/api/v1/failover   ({}; keel failover status)",
            controller_config
                .failover
                .iter()
                .map(|f| format!("{}: {}", f.name, f.members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ")))
                .collect::<Vec<_>>()
                .join("; ")
        );
        say_fmt!("  agent status        http://{}/status", agent.addr);
        if let Some(a) = agent.otlp_addr {
            say_fmt!("  agent OTLP/HTTP     http://{a}/v1/traces");
        }
        say_fmt!("  shop API (lb)       http://{}/api/products/1", ep.lb);
        say_fmt!(
            "  supervisor API      http://{}/api/v1/processes   ({token_note})",
            ep.supervisor
        );
        for p in &ep.processes {
            say_fmt!(
                "  {:<19} http://{}/metrics   pid {}",
                p.name,
                p.addr,
                p.pid.map(|p| p.to_string()).unwrap_or_default()
            );
        }
        say_fmt!("  logs                {}", ep.log_dir.display());
        say_fmt!("Press Ctrl-C to stop.");
        keel_core::shutdown::shutdown_signal().await;
        say("keel: stopping…");
        agent.stop().await;
        sup.shutdown().await;
        say("keel: stopped");
        Ok(())
    })
}

/// The agent `keel up` runs: it ships to this collector (unless the
/// config names another); unless the config lists scrape jobs, it scrapes
/// every sample-app process listed in the supervisor's targets file
/// (`file_sd`; one job a tier: `shop-lb`, `shop-web`, …, and `instance`
/// the process's name, so instances the controller adds are scraped too)
/// as Prometheus would; and unless it lists log files, it
/// tails the sample app's JSON logs, with a log-to-metrics rule on their
/// access lines.
fn agent_for(
    mut agent: keel_agent::config::AgentConfig,
    collector: &keel_collector::server::Running,
    app_data: &Path,
) -> keel_agent::config::AgentConfig {
    if agent.collector == keel_agent::config::AgentConfig::default().collector {
        agent.collector = format!("{}://{}", collector.scheme(), collector.otlp_http);
    }
    if agent.scrape.is_empty() {
        agent.scrape = vec![keel_agent::config::ScrapeJob {
            job: "shop".into(),
            file_sd: vec![Supervisor::targets_file(app_data).display().to_string()],
            refresh_interval: std::time::Duration::from_secs(2),
            interval: SCRAPE_INTERVAL,
            timeout: SCRAPE_INTERVAL,
            // The targets file gives `tier` (so `up` has it) and the app
            // exposes it too, with the same value: honouring it keeps one
            // `tier`, not an `exported_tier` beside it.
            honor_labels: true,
            ..Default::default()
        }];
    }
    if agent.logs.is_empty() {
        agent.logs = vec![keel_agent::config::LogSource {
            path: app_data.join("logs").join("*.log").display().to_string(),
            service: String::new(),
            multiline_start: None,
            // RED from the access log, as for an app with no metrics of
            // its own: `shop_access_requests_total` and friends.
            metrics: vec![keel_agent::config::LogMetricsRule {
                name: "shop_access".into(),
                regex: None,
                filter: Some(r#""target":"access""#.into()),
                status_field: "status".into(),
                duration_field: Some("duration_ms".into()),
                duration_unit: keel_agent::config::DurationUnit::Ms,
                error_status: 500,
                labels: vec!["tier".into(), "instance".into(), "route".into()],
                buckets: keel_agent::config::LogMetricsRule::default_buckets(),
                interval: std::time::Duration::from_secs(10),
            }],
        }];
    }
    agent
}

/// A policy's actuator or a failover driver that names keel up's own
/// supervisor (no URL, or its URL) gets its URL and, unless it names a
/// token of its own, the supervisor's token.
fn point_at_own_supervisor(
    url: &mut String,
    token: &mut keel_core::secret::Secret,
    token_file: &Path,
    own_url: &str,
    supervisor_token: &str,
) {
    let given = url.trim_end_matches('/');
    let ours = given.is_empty()
        || given == own_url
        || own_url
            .rsplit_once(':')
            .is_some_and(|(_, port)| given == format!("http://localhost:{port}"));
    if !ours {
        return;
    }
    *url = own_url.to_owned();
    if token.is_empty() && token_file.as_os_str().is_empty() {
        *token = keel_core::secret::Secret::new(supervisor_token);
    }
}

/// The supervisor's token: the configured one, or a new random one
/// written to `<data_dir>/supervisor.token` (owner-only) for `keel
/// scenario` and other tools, and named in `token_file`.
fn supervisor_token(app: &mut keel_sampleapp::config::SampleAppConfig) -> anyhow::Result<String> {
    use rand::RngCore as _;
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = keel_sampleapp::supervisor::Supervisor::token_file(&app.data_dir);
    if let Some(t) = app
        .supervisor
        .token()
        .map_err(|e| anyhow::anyhow!("sampleapp.supervisor.{e}"))?
    {
        // A token an earlier start made would mislead `keel scenario`.
        if app.supervisor.token_file != path {
            let _ = std::fs::remove_file(&path);
        }
        return Ok(t);
    }
    let mut b = [0u8; 24];
    rand::rng().fill_bytes(&mut b);
    let token: String = b.iter().map(|x| format!("{x:02x}")).collect();
    std::fs::create_dir_all(&app.data_dir)
        .with_context(|| format!("creating {}", app.data_dir.display()))?;
    // Written fresh each start, readable by this user only.
    let _ = std::fs::remove_file(&path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| writeln!(f, "{token}"))
        .with_context(|| format!("writing the supervisor's token to {}", path.display()))?;
    app.supervisor.token_file = path;
    Ok(token)
}

/// How often keel up's agent scrapes the sample app: with the P0 rules
/// evaluated every second and no P0 group wait, a crossing pages within
/// about two seconds (`keel bench alerts`).
pub const SCRAPE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The failover `keel up` runs when the config names none: the sample
/// app's db members, probed every 250 ms, dead after 3 failures the
/// replicas confirm, Patroni's 1 MiB lag limit, the db's own replication
/// mode, at most one automatic failover in 5 minutes.
fn shipped_failover(
    driver: keel_controller::failover::DriverConfig,
    db: &keel_sampleapp::config::DbConfig,
) -> keel_controller::failover::FailoverConfig {
    use keel_controller::failover::{FailoverConfig, Member, Mode};
    FailoverConfig {
        name: "shop-db".into(),
        driver,
        members: (1..=db.replicas + 1)
            .map(|i| Member::named(&format!("db-{i}")))
            .collect(),
        probe_interval: std::time::Duration::from_millis(250),
        probe_timeout: std::time::Duration::from_millis(200),
        failure_threshold: 3,
        maximum_lag_on_failover: 1 << 20,
        maximum_lag_seconds_on_failover: std::time::Duration::from_secs(30),
        mode: match db.replication {
            keel_sampleapp::config::ReplicationMode::Sync => Mode::Synchronous,
            keel_sampleapp::config::ReplicationMode::Async => Mode::Asynchronous,
        },
        synchronous_replicas: db.sync_replicas,
        anti_flapping: std::time::Duration::from_secs(300),
        repoint: None,
        pause_policies: Vec::new(),
        agent_token: Default::default(),
        agent_token_file: Default::default(),
        agent_tls: Default::default(),
    }
}

/// The policy `keel up` runs when the config names none: the web tier,
/// through the supervisor, on the request rate a web instance serves
/// (100/s each: half of what one handles at the default capacity), with
/// Keel's behaviour (the HPA's defaults, no reversal inside the last
/// move's window, a 10-minute burst memory) and panic at twice the ready
/// capacity of what arrives at the lb.
fn shipped_policy(
    actuator: keel_controller::ActuatorConfig,
    min: u32,
    max: u32,
) -> keel_controller::Policy {
    let rate = r#"sum(rate(http_server_request_duration_seconds_count{tier="web"}[1m]))"#;
    // Panic reads what arrives at the lb (counted on arrival, so a burst
    // still queued shows, where finished requests lag behind it) between
    // the last two scrapes (keel up scrapes every 1 s): a burst shows at
    // the first scrape after it, where a rate over a short window
    // (Knative's is 6 s) shows a part.
    let burst = r#"sum(irate(lb_requests_received_total{tier="lb"}[5s]))"#;
    keel_controller::Policy {
        name: "web".into(),
        actuator,
        min,
        max,
        metrics: vec![keel_controller::MetricSpec {
            name: "web request rate".into(),
            query: rate.into(),
            per_instance: None,
            average: Some(100.0),
            total: None,
        }],
        behavior: keel_controller::Behavior::default(),
        warm_up: std::time::Duration::from_secs(5),
        panic: Some(keel_controller::PanicSpec {
            demand: burst.into(),
            per_instance: 100.0,
            threshold: 2.0,
            window: std::time::Duration::from_secs(60),
        }),
        // Recorded in every decision once two days of history exist.
        predictive: Some(keel_controller::PredictiveSpec {
            mode: keel_controller::PredictiveMode::ForecastOnly,
            query: rate.into(),
            per_instance: 100.0,
            step: std::time::Duration::from_secs(300),
            history: std::time::Duration::from_secs(14 * 86_400),
            refit: std::time::Duration::from_secs(3600),
            buffer: std::time::Duration::from_secs(300),
            season: std::time::Duration::from_secs(86_400),
        }),
    }
}

/// Start the controller beside `collector` (its store for metrics, its
/// state store for events) and serve its API; the API's address.
pub async fn start_controller(
    config: &keel_controller::ControllerConfig,
    collector: &keel_collector::server::Running,
    clock: keel_core::clock::SharedClock,
) -> anyhow::Result<(
    std::net::SocketAddr,
    std::sync::Arc<keel_controller::Controller>,
)> {
    let source = std::sync::Arc::new(keel_replay::StoreMetrics(
        keel_alerting::rules::source::StoreSource::new(collector.store.clone(), None),
    ));
    let writer = collector.state.as_ref().map(|(_, w)| w.clone());
    let c = keel_controller::Controller::new(config, source, clock.clone(), writer);
    c.set_marks(collector.marks.clone());
    collector
        .incidents
        // Secrets (the supervisor's and the agents' tokens) redacted: a
        // bundle is shared.
        .set_controller(
            keel_core::secret::redacted(|| serde_json::to_value(config)).unwrap_or_default(),
        );
    let mut watches: std::collections::BTreeMap<String, keel_controller::failover::Watch> =
        std::collections::BTreeMap::new();
    if let Some((st, _)) = &collector.state {
        let saved: Vec<keel_controller::Event> = st
            .load(keel_state::Table::Events)
            .await?
            .iter()
            .filter_map(|(_, d)| serde_json::from_str(d).ok())
            .collect();
        c.restore(saved);
        for (k, d) in st.load(keel_state::Table::Failover).await? {
            if let Ok(w) = serde_json::from_str(&d) {
                watches.insert(k, w);
            }
        }
    }
    // Every failover target's driver answers and knows its members, or
    // keel up stops here, changing nothing.
    for (i, f) in c.failovers().iter().enumerate() {
        f.start(
            &format!("controller.failover[{i}]"),
            watches.remove(f.name()),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    // The controller's API fails databases over: another machine reaching
    // it needs a login and TLS, whatever collector.insecure says.
    if let Ok(a) = config.listen.parse::<std::net::SocketAddr>()
        && !a.ip().is_loopback()
        && !(collector.access.login_required() && collector.api_tls.is_some())
    {
        anyhow::bail!(
            "controller.listen {} is reachable from other machines, which needs \
             collector.auth.login: true and collector.tls: listen on 127.0.0.1",
            config.listen
        );
    }
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("controller.listen {}", config.listen))?;
    let addr = listener.local_addr()?;
    let app: axum::Router = controller_routes(c.clone(), clock, &collector.access).into();
    keel_collector::server::spawn_listener(
        listener,
        app,
        collector.api_tls.clone(),
        "controller API",
    );
    tokio::spawn(c.clone().run());
    Ok((addr, c))
}

/// The controller's API behind the collector's people guard (its users,
/// sessions and audit): reading events and failover state needs a viewer,
/// a failover or switchover an admin.
pub fn controller_routes(
    c: std::sync::Arc<keel_controller::Controller>,
    clock: keel_core::clock::SharedClock,
    access: &keel_auth::Access,
) -> keel_http::Routes {
    let access = access.with_routes(controller_need);
    keel_controller::api::routes(c, clock).map(|r| {
        r.route_layer(axum::middleware::from_fn_with_state(
            access,
            keel_auth::access::guard,
        ))
    })
}

/// What each route of the controller's API needs.
pub fn controller_need(method: &axum::http::Method, _route: &str) -> keel_auth::Need {
    use axum::http::Method;
    let read = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    keel_auth::Need::Role {
        role: if read {
            keel_auth::Role::Viewer
        } else {
            keel_auth::Role::Admin
        },
        change: !read,
    }
}

/// The sample app's shipped rules (rules/shop.yml, built in).
const SHOP_RULES: &str = include_str!("../../rules/shop.yml");

/// The evaluation interval of the shipped P0 rules (group `shop-p0`).
pub fn shipped_p0_interval() -> anyhow::Result<std::time::Duration> {
    let groups = keel_alerting::rules::file::parse(
        Path::new("rules/shop.yml"),
        SHOP_RULES,
        std::time::Duration::from_secs(15),
        &keel_alerting::rules::SeverityMapping::default(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    groups
        .iter()
        .find(|g| g.name == "shop-p0")
        .map(|g| g.interval)
        .context("rules/shop.yml has no shop-p0 group")
}

/// The rules keel up runs when the config names none: `./rules` if it is
/// a directory (a checkout, or the user's own), else the built-in copy
/// of the sample app's rules, written to `<data_dir>/rules/`.
fn default_rules(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let here = PathBuf::from("rules");
    if here.is_dir() {
        return Ok(here);
    }
    let dir = data_dir.join("rules");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = dir.join("shop.yml");
    std::fs::write(&file, SHOP_RULES).with_context(|| format!("writing {}", file.display()))?;
    Ok(dir)
}

/// Print a status line; a closed stdout (`keel up | head`, a reader that
/// went away) must not turn a clean shutdown into a panic.
pub fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

fn tracing_subscriber_init() {
    // keel up's own log (restarts, scaling, promotion) goes to stderr.
    let _ = keel_sampleapp::telemetry::init_stderr_logging();
}

/// Who can reach the collector, for the banners: loopback only, or
/// (said loudly) open to the network by `collector.insecure`; whether
/// people log in; whether ingest wants a sender token.
pub fn access(c: &keel_collector::server::CollectorConfig) -> String {
    let senders = if c.auth.senders.is_empty() {
        "ingest takes data without a token".to_owned()
    } else {
        format!(
            "ingest requires one of {} sender token(s)",
            c.auth.senders.len()
        )
    };
    let login = if c.auth.login {
        "login required (keel user add, keel token create)"
    } else {
        "no login"
    };
    let loopback = c
        .host
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback());
    let tls = if c.tls.enabled() { "TLS" } else { "no TLS" };
    let missing: Vec<&str> = [
        (!c.auth.login).then_some("no login"),
        (!c.tls.enabled()).then_some("no TLS"),
        c.auth.senders.is_empty().then_some("no sender token"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if loopback {
        format!("loopback only ({}), {login}, {tls}; {senders}", c.host)
    } else if missing.is_empty() {
        format!(
            "{} reachable from other machines, {login}, TLS; {senders}",
            c.host
        )
    } else {
        format!(
            "INSECURE: {} is reachable from other machines with {} (collector.insecure: true); {senders}",
            c.host,
            missing.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    #[test]
    fn keel_ups_own_supervisor_gets_its_token_however_it_is_named() {
        let own = "http://127.0.0.1:8079";
        // (URL, token) as configured → as keel up runs them.
        let point = |url: &str, token: &str| {
            let (mut url, mut token) = (url.to_owned(), keel_core::secret::Secret::new(token));
            let none = std::path::Path::new("");
            super::point_at_own_supervisor(&mut url, &mut token, none, own, "s3cret");
            (url, token.expose().to_owned())
        };
        for named in ["", "http://127.0.0.1:8079/", "http://localhost:8079"] {
            assert_eq!(point(named, ""), (own.into(), "s3cret".into()), "{named:?}");
        }
        // Another supervisor, or a token of its own, is left alone.
        let other = "http://10.0.0.9:8079";
        assert_eq!(point(other, ""), (other.into(), String::new()));
        assert_eq!(point("", "mine"), (own.into(), "mine".into()));
    }

    use axum::http::Method;
    use keel_auth::{Access, AuthConfig, Directory, Role};

    struct NoMetrics;

    impl keel_controller::run::MetricSource for NoMetrics {
        fn instant(&self, _: &str, _: i64) -> Result<keel_controller::run::Samples, String> {
            Ok(Vec::new())
        }
    }

    /// Every route of the controller's API, walked: no token or a
    /// viewer's on a failover is refused; a viewer reads, an admin acts.
    #[tokio::test]
    async fn the_controllers_api_wants_a_viewer_to_read_and_an_admin_to_fail_over() {
        let clock: keel_core::clock::SharedClock = Arc::new(keel_core::clock::SystemClock);
        let store = Arc::new(
            keel_state::StateStore::open("sqlite::memory:")
                .await
                .expect("store"),
        );
        let dir = Directory::new(store);
        let now = clock.now_ms();
        let viewer = dir
            .create_token("v", Role::Viewer, None, "test", now)
            .await
            .expect("token")
            .0;
        let admin = dir
            .create_token("a", Role::Admin, None, "test", now)
            .await
            .expect("token")
            .0;
        let config = AuthConfig {
            login: true,
            ..Default::default()
        };
        let access = Access::new(
            &config,
            Some(dir),
            clock.clone(),
            keel_collector::access::need,
        )
        .expect("access");
        let c = keel_controller::Controller::new(
            &keel_controller::ControllerConfig::default(),
            Arc::new(NoMetrics),
            clock.clone(),
            None,
        );
        let (router, paths) = super::controller_routes(c, clock, &access).into_parts();
        assert_eq!(paths.len(), 3, "{paths:?}");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, router).await });
        let http = reqwest::Client::new();
        let send = |m: Method, path: String, token: Option<String>| {
            let mut r = http.request(m, format!("http://{addr}{path}"));
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            async move { r.send().await.expect("answer").status().as_u16() }
        };
        for path in &paths {
            for m in [Method::GET, Method::POST, Method::DELETE] {
                let s = send(m.clone(), path.clone(), None).await;
                assert!(s == 401 || s == 405, "{m} {path} with no token: {s}");
                if m != Method::GET {
                    let s = send(m.clone(), path.clone(), Some(viewer.clone())).await;
                    assert!(s == 403 || s == 405, "{m} {path} as a viewer: {s}");
                }
            }
        }
        assert_eq!(
            send(Method::GET, "/api/v1/events".into(), Some(viewer)).await,
            200
        );
        // No failover target: the admin gets through to the controller's
        // own answer, "no failover target is configured".
        let s = send(Method::POST, "/api/v1/failover".into(), Some(admin)).await;
        assert_eq!(s, 404);
    }
}
