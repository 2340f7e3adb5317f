//! Each tier's own telemetry: RED metrics in Prometheus text, JSON logs with
//! trace ids, and OTLP spans with W3C trace-context propagation.
//!
//! Metric names follow the OpenTelemetry HTTP semantic conventions as
//! Prometheus spells them: `http_server_request_duration_seconds` with
//! `http_request_method`, `http_route`, `http_response_status_code`, and
//! every series carries `service`, `tier` and `instance`.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{LineWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use opentelemetry::trace::{FutureExt, SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue, global};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The instrumentation scope name of every span the sample app makes.
pub const TRACER: &str = "keel-sampleapp";

/// Buckets recommended by the OpenTelemetry HTTP semantic conventions.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Labels of the RED histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// `GET`, `POST`, …
    pub http_request_method: String,
    /// Route template, e.g. `/api/products/{id}`.
    pub http_route: String,
    /// Status code of the answer.
    pub http_response_status_code: u16,
}

/// An exemplar's labels: the request's trace, so a latency bucket links
/// to one request that fell in it (OpenMetrics exemplars; the agent
/// carries them to the collector, Grafana and the dashboard link them).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TraceLabels {
    /// W3C trace id, 32 hex digits.
    pub trace_id: String,
    /// W3C span id of the server span, 16 hex digits.
    pub span_id: String,
}

type DurationHistogram = HistogramWithExemplars<TraceLabels>;
type HistogramFamily = Family<HttpLabels, DurationHistogram, fn() -> DurationHistogram>;

fn new_duration_histogram() -> DurationHistogram {
    HistogramWithExemplars::new(DURATION_BUCKETS.into_iter())
}

/// Who this process is, as labels and resource attributes say it.
#[derive(Debug, Clone)]
pub struct Identity {
    /// e.g. `shop-web`.
    pub service: String,
    /// `lb`, `web`, `cache` or `db`.
    pub tier: String,
    /// e.g. `web-2`.
    pub instance: String,
}

impl Identity {
    /// Identity of instance `name` of `tier`.
    pub fn new(tier: &str, name: &str) -> Self {
        Self {
            service: format!("shop-{tier}"),
            tier: tier.to_owned(),
            instance: name.to_owned(),
        }
    }
}

/// A tier's metric registry plus its RED histogram.
pub struct Metrics {
    registry: Registry,
    http: HistogramFamily,
    refresh: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A registry whose every series carries `tier`; `job` and `instance`
    /// are the scraper's to add (the supervisor's targets file names
    /// them), as for any Prometheus target. `register` adds the tier's
    /// own metrics.
    pub fn new(id: &Identity, register: impl FnOnce(&mut Registry)) -> Arc<Self> {
        let labels: Vec<(Cow<'static, str>, Cow<'static, str>)> =
            vec![("tier".into(), id.tier.clone().into())];
        let mut registry = Registry::with_labels(labels.into_iter());
        let http: HistogramFamily = Family::new_with_constructor(new_duration_histogram);
        registry.register_with_unit(
            "http_server_request_duration",
            "Duration of HTTP server requests",
            prometheus_client::registry::Unit::Seconds,
            http.clone(),
        );
        register(&mut registry);
        Arc::new(Self {
            registry,
            http,
            refresh: Mutex::new(None),
        })
    }

    /// Run `f` before every scrape, to bring gauges up to date.
    pub fn on_scrape(&self, f: impl Fn() + Send + Sync + 'static) {
        *self.refresh.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(f));
    }

    /// Record one served request, with its trace as the exemplar when
    /// it was sampled.
    pub fn observe(
        &self,
        method: &Method,
        route: &str,
        status: u16,
        elapsed: Duration,
        trace: Option<TraceLabels>,
    ) {
        self.http
            .get_or_create(&HttpLabels {
                http_request_method: method.as_str().to_owned(),
                http_route: route.to_owned(),
                http_response_status_code: status,
            })
            .observe(elapsed.as_secs_f64(), trace, Some(SystemTime::now()));
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        if let Some(f) = self
            .refresh
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            f();
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The `/metrics` response.
    pub fn response(&self) -> Response {
        (
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            self.render(),
        )
            .into_response()
    }
}

/// Start the OpenTelemetry tracer for this process and install the W3C
/// trace-context propagator. With no endpoint, spans still get ids and
/// propagate, but are not exported.
pub fn init_tracing(
    id: &Identity,
    endpoint: Option<&str>,
    flush: Duration,
) -> anyhow::Result<SdkTracerProvider> {
    let resource = Resource::builder()
        .with_service_name(id.service.clone())
        .with_attributes([
            KeyValue::new("service.instance.id", id.instance.clone()),
            KeyValue::new("keel.tier", id.tier.clone()),
        ])
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if let Some(base) = endpoint {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{}/v1/traces", base.trim_end_matches('/')))
            .with_timeout(Duration::from_secs(5))
            .build()?;
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(flush)
                    .build(),
            )
            .build();
        builder = builder.with_span_processor(processor);
    }
    let provider = builder.build();
    global::set_tracer_provider(provider.clone());
    global::set_text_map_propagator(TraceContextPropagator::new());
    Ok(provider)
}

/// Serve one request inside a server span continued from the caller's
/// `traceparent`, and record it in the RED histogram.
pub async fn serve_traced<F>(
    metrics: &Metrics,
    method: Method,
    route: &str,
    headers: &HeaderMap,
    handler: F,
) -> Response
where
    F: Future<Output = Response>,
{
    let start = Instant::now();
    let parent = global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    let tracer = global::tracer(TRACER);
    let span = tracer
        .span_builder(format!("{method} {route}"))
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.request.method", method.to_string()),
            KeyValue::new("http.route", route.to_owned()),
        ])
        .start_with_context(&tracer, &parent);
    let cx = parent.with_span(span);
    let response = handler.with_context(cx.clone()).await;
    let status = response.status().as_u16();
    let span = cx.span();
    span.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(status),
    ));
    if status >= 500 {
        span.set_status(Status::error(format!("HTTP {status}")));
    }
    span.end();
    let elapsed = start.elapsed();
    let sc = span.span_context();
    let trace = sc.is_sampled().then(|| TraceLabels {
        trace_id: sc.trace_id().to_string(),
        span_id: sc.span_id().to_string(),
    });
    metrics.observe(&method, route, status, elapsed, trace);
    // One access-log line a request, under the request's trace (the
    // agent's log-to-metrics rule turns these into RED series).
    let _in_trace = cx.attach();
    let duration_ms = elapsed.as_secs_f64() * 1e3;
    if status >= 500 {
        tracing::error!(target: "access", method = %method, route, status, duration_ms, "request");
    } else {
        tracing::info!(target: "access", method = %method, route, status, duration_ms, "request");
    }
    response
}

/// Send `request` inside a client span named `name`, with the W3C
/// `traceparent` of that span in its headers.
pub async fn send_traced(
    request: reqwest::RequestBuilder,
    name: &str,
    peer: &str,
) -> Result<reqwest::Response, reqwest::Error> {
    let tracer = global::tracer(TRACER);
    let parent = Context::current();
    let span = tracer
        .span_builder(name.to_owned())
        .with_kind(SpanKind::Client)
        .with_attributes([KeyValue::new("server.address", peer.to_owned())])
        .start_with_context(&tracer, &parent);
    let cx = parent.with_span(span);
    let mut headers = HeaderMap::new();
    global::get_text_map_propagator(|p| p.inject_context(&cx, &mut HeaderInjector(&mut headers)));
    let result = request
        .headers(headers)
        .send()
        .with_context(cx.clone())
        .await;
    let span = cx.span();
    match &result {
        Ok(r) => {
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(r.status().as_u16()),
            ));
            if r.status().is_server_error() {
                span.set_status(Status::error(format!("HTTP {}", r.status().as_u16())));
            }
        }
        Err(e) => span.set_status(Status::error(e.to_string())),
    }
    span.end();
    result
}

/// Write JSON logs for this process to `path`, one object per line, with
/// `timestamp`, `level`, `service`, `tier`, `instance`, `message`, the event's
/// fields, and the current `trace_id`/`span_id` when inside a span.
pub fn init_logging(id: &Identity, path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let layer = JsonLogLayer {
        out: Mutex::new(LineWriter::new(file)),
        id: id.clone(),
    };
    let filter = EnvFilter::try_from_env("KEEL_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .try_init()?;
    Ok(())
}

struct JsonLogLayer {
    out: Mutex<LineWriter<File>>,
    id: Identity,
}

struct FieldVisitor<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl Visit for FieldVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
}

impl<S: tracing::Subscriber> Layer<S> for JsonLogLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: LayerContext<'_, S>) {
        let mut fields = serde_json::Map::new();
        event.record(&mut FieldVisitor(&mut fields));
        let mut line = serde_json::Map::new();
        line.insert(
            "timestamp".into(),
            humantime::format_rfc3339_millis(SystemTime::now())
                .to_string()
                .into(),
        );
        line.insert(
            "level".into(),
            event
                .metadata()
                .level()
                .as_str()
                .to_ascii_lowercase()
                .into(),
        );
        line.insert("service".into(), self.id.service.clone().into());
        line.insert("tier".into(), self.id.tier.clone().into());
        line.insert("instance".into(), self.id.instance.clone().into());
        line.insert("target".into(), event.metadata().target().into());
        let cx = Context::current();
        let sc = cx.span().span_context().clone();
        if sc.is_valid() {
            line.insert("trace_id".into(), sc.trace_id().to_string().into());
            line.insert("span_id".into(), sc.span_id().to_string().into());
        }
        line.insert(
            "message".into(),
            fields.remove("message").unwrap_or_default(),
        );
        line.extend(fields);
        let mut text = serde_json::Value::Object(line).to_string();
        text.push('\n');
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        // A log line that cannot be written must not take the process down.
        let _ = out.write_all(text.as_bytes());
    }
}

/// Middleware for routed handlers: a server span plus the RED histogram,
/// labelled with the matched route template. Use with `route_layer`.
pub async fn traced_route(
    axum::extract::State(metrics): axum::extract::State<Arc<Metrics>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default();
    let (method, headers) = (req.method().clone(), req.headers().clone());
    serve_traced(&metrics, method, &route, &headers, next.run(req)).await
}

/// Human-readable logs on stderr for the supervisor process (`keel up`),
/// filtered by `KEEL_LOG` (default `info`).
pub fn init_stderr_logging() -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_env("KEEL_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(filter),
        )
        .try_init()?;
    Ok(())
}
