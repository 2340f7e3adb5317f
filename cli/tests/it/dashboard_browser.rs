//! The dashboard in a real headless browser (Debian's `chromium`, driven
//! through `chromedriver` over the W3C WebDriver protocol), against
//! `keel up` under load: the overview shows data for every tier, a log
//! line leads to its trace, an alert is silenced from the alerts page,
//! and a scaling decision is an annotation on the charts. Screenshots of
//! each page go to `target/tmp/screenshots/`. The browser's console must
//! stay free of errors.
//!
//! Runs with `KEEL_TEST_BROWSER=1` (`.ci/run` installs `chromium` and
//! `chromium-driver` and sets it).

use std::time::Duration;

use crate::common::*;
use serde_json::Value;

const RULES: &str = r#"groups:
  - name: browser
    interval: 1s
    rules:
      - alert: BrowserTestAlert
        expr: vector(1)
        severity: P1
        labels: {job: shop-web}
        annotations: {summary: "always firing, for the browser test"}
      - alert: BrowserRatioAlert
        expr: vector(0.12098194269142905)
        severity: P2
        annotations: {summary: "fails {{ $value | humanizePercentage }} of requests"}
      - alert: BrowserLatencyAlert
        expr: vector(2.2134)
        severity: P2
        annotations: {summary: "p95 is {{ $value | humanizeDuration }}"}
"#;

use keel_testkit::webdriver;

/// A dashboard with a query that fails at run time, one with no data,
/// and one Prometheus 3 would annotate (`rate` over a gauge's name).
const EXTRA: &str = r#"title: Extra
rows:
  - title: Bad input
    panels:
      - title: Fails
        type: timeseries
        queries:
          - expr: up + ignoring(instance, job, tier) up
      - title: Empty
        type: stat
        queries:
          - expr: no_such_metric_anywhere
      - title: Not a counter
        type: timeseries
        queries:
          - expr: sum(rate(up[1m]))
"#;

/// The browser, failing the test on a protocol error.
struct Page(webdriver::Browser);

impl Page {
    async fn goto(&self, url: &str) {
        self.0.goto(url).await.expect("navigate");
    }

    async fn js(&self, script: &str) -> Value {
        self.0.js(script).await.expect("script")
    }

    async fn until(&self, what: &str, script: &str) -> Value {
        self.0
            .until(what, script, Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    async fn screenshot(&self, name: &str) {
        let png = self.0.screenshot().await.expect("screenshot");
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
    }

    async fn console_errors(&self) -> Vec<String> {
        self.0.console_errors().await.expect("console log")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_in_a_real_browser() {
    if std::env::var_os("KEEL_TEST_BROWSER").is_none() {
        eprintln!("KEEL_TEST_BROWSER unset: the headless browser test is skipped");
        return;
    }
    let _turn = heavy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("overlay.yaml"),
        format!(
            "collector:\n  rules:\n    files: [rules.yml]\n{}",
            fast_web_policy("30s")
        ),
    )
    .expect("write");
    std::fs::write(dir.path().join("rules.yml"), RULES).expect("write");
    let (mut child, lines) = keel_up(dir.path(), &["--config", "overlay.yaml"]).await;
    let _stop = StopOnDrop(child.id() as i32);
    let ui = printed_url(&lines, "dashboard");
    let origin = ui.trim_end_matches("/ui/").to_owned();
    let events = printed_url(&lines, "controller events");
    // A steady 20/s, and after the overview a burst of 80/s more that is
    // held until the controller has scaled for it (see the autoscale test).
    let mut load = spawn_load(&lines, dir.path(), "steady", "20", "300s");
    let load_stop = StopOnDrop(load.id() as i32);
    let browser = Page(
        webdriver::Browser::start(1440, 1000)
            .await
            .expect("chromium and chromedriver (Debian's chromium-driver) must be installed"),
    );

    // The overview: every tier has data in the request-rate panel.
    // Live: the panels redraw every 5 s as the first samples arrive.
    browser
        .goto(&format!("{origin}/ui/d/overview?range=5m&live=1"))
        .await;
    let legend = browser
        .until(
            "the overview's request rate shows every tier",
            r#"const p = document.querySelector('[data-panel="1.0"] .legend');
               const t = p ? p.textContent : '';
               return ['lb', 'web', 'cache', 'db'].every(x => t.includes(x)) && document.querySelector('[data-panel="1.0"] canvas') ? t : null;"#,
        )
        .await;
    assert!(
        legend.as_str().is_some_and(|t| t.contains("/s")),
        "{legend}"
    );
    // Stats and the latency panels have numbers, not "No data".
    let stat = browser
        .until(
            "the lb request rate stat shows a number",
            r#"const s = document.querySelector('[data-panel="0.0"] .stat'); return s ? s.textContent : null;"#,
        )
        .await;
    assert!(stat.as_str().is_some_and(|t| t.ends_with("/s")), "{stat}");
    browser
        .until(
            "p95 latency per tier is drawn",
            r#"return document.querySelector('[data-panel="2.1"] canvas') ? 1 : null;"#,
        )
        .await;
    // The database topology: a primary and two replicas, with epoch and lag.
    let topology = browser
        .until(
            "the database topology shows one primary and two replicas",
            r#"const p = [...document.querySelectorAll('[data-panel]')].find(p => p.textContent.includes('Database topology'));
               const rows = p ? [...p.querySelectorAll('table.pivot tr[data-row]')] : [];
               const cell = (r, c) => { const td = r.querySelector(`td[data-col="${c}"]`); return td ? td.textContent : ''; };
               const seen = rows.map(r => `${r.dataset.row}=${cell(r, 'role')}@${cell(r, 'epoch')}`);
               return seen.length === 3 && seen.filter(x => x.includes('=primary@1')).length === 1
                 && seen.filter(x => x.includes('=replica@1')).length === 2 ? seen.join(' ') : null;"#,
        )
        .await;
    assert!(
        topology
            .as_str()
            .is_some_and(|t| t.contains("db-1=primary@1")),
        "{topology}"
    );
    browser.screenshot("overview").await;
    native_histogram_heatmap(&browser, &lines, &origin).await;
    let mut burst = spawn_load(&lines, dir.path(), "steady", "80", "300s");
    let burst_stop = StopOnDrop(burst.id() as i32);

    // Logs: search, then from a line with a trace id to its trace.
    browser
        .goto(&format!("{origin}/ui/logs?q=*&range=5m"))
        .await;
    let href = browser
        .until(
            "a log line links to its trace",
            r#"const a = document.querySelector('#log-results a.trace-link'); return a ? a.getAttribute('href') : null;"#,
        )
        .await;
    browser
        .until(
            "the histogram is drawn",
            "return document.querySelector('#log-histogram canvas') ? 1 : null;",
        )
        .await;
    browser.screenshot("logs").await;
    // A log line can be indexed before its spans are: wait until the
    // collector has the trace, then follow the link.
    let id = href
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("/ui/trace/")
        .to_owned();
    eventually(
        "the linked trace is stored",
        Duration::from_secs(30),
        || {
            let url = format!("{origin}/api/v1/traces/{id}");
            async move { (get_json(&url).await.0 == 200).then_some(()) }
        },
    )
    .await;
    browser
        .js("document.querySelector('#log-results a.trace-link').click(); return 1;")
        .await;
    let spans = browser
        .until(
            "the trace's waterfall is drawn",
            r#"const n = document.querySelectorAll('#waterfall .span-row').length;
               return location.pathname.startsWith('/ui/trace/') && n > 0 ? n : null;"#,
        )
        .await;
    assert!(spans.as_u64() >= Some(1), "{spans} spans for {href}");
    browser.screenshot("trace").await;

    // Exemplars: the overview's p99 latency chart has dots at single
    // requests (the sample app's OpenMetrics exemplars, scraped by the
    // agent), each a link to its trace; follow one.
    browser
        .goto(&format!("{origin}/ui/d/overview?range=5m"))
        .await;
    let trace = browser
        .until(
            "the p99 latency chart links an exemplar to its trace",
            r#"const a = document.querySelector('[data-panel="2.2"] a.exemplar[data-trace]');
               return a && a.getAttribute('href') === '/ui/trace/' + a.dataset.trace ? a.dataset.trace : null;"#,
        )
        .await;
    let trace = trace.as_str().unwrap_or_default().to_owned();
    assert!(
        trace.len() == 32 && trace.bytes().all(|b| b.is_ascii_hexdigit()),
        "{trace}"
    );
    eventually(
        "the exemplar's trace is stored",
        Duration::from_secs(30),
        || {
            let url = format!("{origin}/api/v1/traces/{trace}");
            async move { (get_json(&url).await.0 == 200).then_some(()) }
        },
    )
    .await;
    browser.screenshot("exemplars").await;
    browser
        .js(&format!(
            r#"document.querySelector('[data-panel="2.2"] a.exemplar[data-trace="{trace}"]').click(); return 1;"#
        ))
        .await;
    browser
        .until(
            "the exemplar's trace opens as a waterfall",
            &format!(
                r#"return location.pathname === '/ui/trace/{trace}' && document.querySelectorAll('#waterfall .span-row').length > 0 ? 1 : null;"#
            ),
        )
        .await;

    // Span links: a span of one trace that links to a span of another
    // (sent as OTLP/JSON) shows the link in the waterfall, and the link
    // opens the other trace.
    let otlp = printed_url(&lines, "collector OTLP/HTTP").replace("/v1/metrics", "/v1/traces");
    let (linked, linking) = (
        "5b8efff798038103d269b633813fc60c",
        "5b8efff798038103d269b633813fc70d",
    );
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let span = |trace: &str, id: &str, name: &str, links: serde_json::Value| {
        serde_json::json!({
            "traceId": trace, "spanId": id, "name": name, "kind": 2,
            "startTimeUnixNano": (now_ns - 2_000_000).to_string(),
            "endTimeUnixNano": now_ns.to_string(),
            "links": links,
        })
    };
    let body = serde_json::json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "batcher"}}]},
        "scopeSpans": [{"scope": {"name": "io.batcher", "version": "3.0"}, "spans": [
            span(linked, "eee19b7ec3c1b174", "enqueue", serde_json::json!([])),
            span(linking, "eee19b7ec3c1b175", "process batch", serde_json::json!([
                {"traceId": linked, "spanId": "eee19b7ec3c1b174"}
            ])),
        ]}],
    }]});
    let sent = reqwest::Client::new()
        .post(&otlp)
        .json(&body)
        .send()
        .await
        .expect("otlp");
    assert!(sent.status().is_success(), "{}", sent.status());
    eventually(
        "the linking trace is stored",
        Duration::from_secs(30),
        || {
            let url = format!("{origin}/api/v1/traces/{linking}");
            async move { (get_json(&url).await.0 == 200).then_some(()) }
        },
    )
    .await;
    browser.goto(&format!("{origin}/ui/trace/{linking}")).await;
    let scope = browser
        .until(
            "the waterfall shows the span's link and scope",
            &format!(
                r#"const a = document.querySelector('#waterfall a.span-link[data-trace="{linked}"]');
                   const s = document.querySelector('#waterfall .span-scope');
                   return a && s ? s.textContent : null;"#
            ),
        )
        .await;
    assert!(
        scope.as_str().is_some_and(|s| s.contains("io.batcher")),
        "{scope}"
    );
    browser.screenshot("span-link").await;
    browser
        .js(&format!(
            r#"document.querySelector('#waterfall a.span-link[data-trace="{linked}"]').click(); return 1;"#
        ))
        .await;
    browser
        .until(
            "the link opens the linked trace",
            &format!(
                r#"const rows = [...document.querySelectorAll('#waterfall .span-row')];
                   return location.pathname === '/ui/trace/{linked}' && rows.some(r => r.textContent.includes('enqueue')) ? 1 : null;"#
            ),
        )
        .await;

    // Alerts: silence the always-firing one.
    browser.goto(&format!("{origin}/ui/alerts")).await;
    browser
        .until(
            "the test alert is listed as firing",
            r#"const r = document.querySelector('tr[data-alert="BrowserTestAlert"]'); return r && r.textContent.includes('firing') ? 1 : null;"#,
        )
        .await;
    browser
        .js(r#"document.querySelector('tr[data-alert="BrowserTestAlert"] button.silence').click(); return 1;"#)
        .await;
    browser
        .until(
            "the alert shows as silenced",
            r#"const r = document.querySelector('tr[data-alert="BrowserTestAlert"]'); return r && r.querySelector('.silenced') ? 1 : null;"#,
        )
        .await;
    let (_, silences) = get_json(&format!("{origin}/api/v1/silences")).await;
    assert!(
        silences["data"]
            .as_array()
            .is_some_and(|s| s.iter().any(|x| x["created_by"] == "dashboard")),
        "the silence is in the collector: {silences}"
    );
    // Values read in the rule's unit, and no stray "null" on the page.
    let values = browser
        .until(
            "the alerts' values are shown in their units",
            r#"const v = (n) => { const r = document.querySelector(`tr[data-alert="${n}"] td.num`); return r ? r.textContent : null; };
               const a = v('BrowserRatioAlert'), b = v('BrowserLatencyAlert');
               return a && b ? [a, b, document.querySelector('main').textContent.includes('null')] : null;"#,
        )
        .await;
    assert_eq!(values, serde_json::json!(["12.1%", "2.21 s", false]));
    browser.screenshot("alerts").await;

    // The burst's scaling decision is an annotation on the charts.
    controller_event(&events, "scale", "the burst scales web up", |e| {
        e["read_back"].as_u64() > Some(2)
    })
    .await;
    drop(burst_stop);
    let _ = burst.wait();
    // (Live mode redraws every 5 s, so a decision made after the page
    // loaded appears too.)
    browser
        .goto(&format!("{origin}/ui/d/overview?range=5m&live=1"))
        .await;
    let title = browser
        .until(
            "a scaling annotation on the request-rate chart",
            r#"const a = document.querySelector('[data-panel="1.0"] .annotation[data-kind="scale"]');
               return a ? a.getAttribute('title') : null;"#,
        )
        .await;
    assert!(
        title.as_str().is_some_and(|t| t.starts_with("web: scale ")),
        "{title}"
    );
    browser
        .js(r#"document.querySelector('[data-panel="1.0"] .annotation[data-kind="scale"]').click(); return 1;"#)
        .await;
    let modal = browser
        .until(
            "the decision's inputs open",
            r#"const m = document.getElementById('modal'); return m && !m.hidden ? m.textContent : null;"#,
        )
        .await;
    assert!(
        modal.as_str().is_some_and(|t| t.contains("\"decision\"")),
        "the event's inputs are shown: {modal}"
    );
    browser.screenshot("annotation").await;
    browser.goto(&format!("{origin}/ui/events?range=15m")).await;
    browser
        .until(
            "the events page lists the scaling",
            r#"return document.querySelector('#events tr.event-row[data-kind="scale"]') ? 1 : null;"#,
        )
        .await;
    browser.screenshot("events").await;
    // The cardinality view: the head's totals and the names holding the
    // most series, drawn as bars.
    browser.goto(&format!("{origin}/ui/tsdb")).await;
    let top = browser
        .until(
            "the cardinality page draws its bars",
            r#"const rows = document.querySelectorAll('#tsdb .panel tr.card-row');
               const bar = document.querySelector('#tsdb .panel tr.card-row .bar');
               return rows.length >= 4 && bar && bar.style.width === '100%' ? rows[0].textContent : null;"#,
        )
        .await;
    assert!(
        top.as_str().is_some_and(|t| !t.is_empty()),
        "the largest metric name is listed: {top}"
    );
    browser.screenshot("cardinality").await;

    // Record the overview's range as an incident from the page, open it
    // in replay mode: its panels over the bundle's data, the recorded and
    // replayed timelines, a time slider, and a what-if side by side.
    // (15 minutes: the test's whole run, the alert's first firing included.)
    browser
        .goto(&format!("{origin}/ui/d/overview?range=15m"))
        .await;
    browser
        .until(
            "the record button",
            r#"const n = document.getElementById('incident-name'); if (!n) return null;
               n.value = 'browser-spike'; document.getElementById('record-incident').click(); return 1;"#,
        )
        .await;
    browser
        .until(
            "the incident is recorded",
            r#"const a = document.getElementById('recorded-link'); if (!a) return null; a.click(); return 1;"#,
        )
        .await;
    let drawn = browser
        .until(
            "replay mode draws the bundle's request rates",
            r#"const p = document.querySelector('[data-panel="1.0"] .legend');
               return p && document.querySelector('[data-panel="1.0"] canvas') && location.pathname === '/ui/incidents/browser-spike' ? p.textContent : null;"#,
        )
        .await;
    assert!(drawn.as_str().is_some_and(|t| t.contains("web")), "{drawn}");
    let recorded = browser
        .until(
            "the recorded timeline lists the alert and the scaling",
            r#"const r = document.getElementById('recorded-events');
               return r && r.querySelector('[data-kind="alert"]') && r.querySelector('[data-kind="scale"]') ? r.textContent : null;"#,
        )
        .await;
    assert!(
        recorded
            .as_str()
            .is_some_and(|t| t.contains("BrowserTestAlert") && t.contains("web: scale")),
        "{recorded}"
    );
    let replayed = browser
        .js(r#"const r = document.getElementById('replayed-events'); return r ? r.textContent : null;"#)
        .await;
    assert!(
        replayed
            .as_str()
            .is_some_and(|t| t.contains("BrowserTestAlert")),
        "{replayed}"
    );
    // The slider moves the replay's time: events after it dim.
    let at = browser
        .js(r#"const s = document.getElementById('replay-slider');
               s.value = s.min; s.dispatchEvent(new Event('input'));
               return [document.getElementById('replay-at').textContent,
                       document.querySelectorAll('#recorded-events .event.future').length,
                       document.querySelectorAll('#recorded-events .event').length];"#)
        .await;
    assert_eq!(at[0], "+00:00.0", "{at}");
    assert!(at[1] == at[2] && at[2].as_u64() > Some(0), "{at}");
    // The alerts panel shows what the replay had firing then: nothing yet.
    let firing = browser
        .until(
            "the alerts panel follows the slider",
            r#"const p = document.querySelector('.panel[data-type="alerts"] .panel-body'); return p && p.textContent ? p.textContent : null;"#,
        )
        .await;
    assert!(
        firing.as_str().is_some_and(|t| t.contains("none firing")),
        "{firing}"
    );
    browser.screenshot("incident-replay").await;
    // A what-if whose rule never fires: the diff says the alert is gone.
    browser
        .js(r#"document.getElementById('whatif-rules').value = `groups:
  - name: browser
    interval: 1s
    rules:
      - alert: BrowserTestAlert
        expr: vector(1) > 2
        severity: P1
        labels: {job: shop-web}
`;
               document.getElementById('whatif-run').click(); return 1;"#)
        .await;
    let diff = browser
        .until(
            "the what-if diff",
            r#"const d = document.querySelector('#whatif-diff table'); return d ? d.textContent : null;"#,
        )
        .await;
    assert!(
        diff.as_str()
            .is_some_and(|t| t.contains("alert BrowserTestAlert fired")
                && t.contains("missing (no longer fires)")),
        "{diff}"
    );
    browser
        .until(
            "the what-if timeline beside the recorded one",
            r#"return document.getElementById('whatif-events') && document.getElementById('recorded-events') ? 1 : null;"#,
        )
        .await;
    browser.screenshot("incident-whatif").await;
    // A collector alone (no collector.ha) shows no leader badge.
    assert_eq!(
        browser
            .js("return document.getElementById('leader').hidden;")
            .await,
        Value::Bool(true)
    );

    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:?}");

    // Bad input: a panel whose query fails and one with no data say so;
    // a file broken after it loaded keeps its last good version, with the
    // error on the page.
    let extra = dir.path().join("collector/dashboards/extra.yaml");
    std::fs::write(&extra, EXTRA).expect("write");
    browser.goto(&format!("{origin}/ui/d/extra?range=5m")).await;
    let failed = browser
        .until(
            "the failing panel says why",
            r#"const p = document.querySelector('[data-panel="0.0"] .status.error'); return p ? p.textContent : null;"#,
        )
        .await;
    assert!(
        failed
            .as_str()
            .is_some_and(|t| t.starts_with("Query failed")),
        "{failed}"
    );
    browser
        .until(
            "the empty panel says so",
            r#"const p = document.querySelector('[data-panel="0.1"]'); return p && p.textContent.includes('No data in this range') ? 1 : null;"#,
        )
        .await;
    let info = browser
        .until(
            "the annotated panel shows Prometheus' info",
            r#"const p = document.querySelector('[data-panel="0.2"] .status.annotation.info'); return p ? p.textContent : null;"#,
        )
        .await;
    assert!(
        info.as_str().is_some_and(|t| t.contains(
            "PromQL info: metric might not be a counter, name does not end in _total/_sum/_count/_bucket: \"up\""
        )),
        "{info}"
    );
    std::fs::write(&extra, EXTRA.replace("type: stat", "type: pie")).expect("write");
    let f = std::fs::File::options()
        .write(true)
        .open(&extra)
        .expect("open");
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .expect("mtime");
    browser.goto(&format!("{origin}/ui/d/extra?range=5m")).await;
    let banner = browser
        .until(
            "the file's error is on the page",
            r#"const b = document.getElementById('dashboard-error'); return b ? b.textContent : null;"#,
        )
        .await;
    assert!(
        banner.as_str().is_some_and(|t| t.contains("extra.yaml:")
            && t.contains("pie")
            && t.contains("last version that loaded")),
        "{banner}"
    );
    browser
        .until(
            "the last good version is still drawn",
            r#"return document.querySelector('[data-panel="0.1"]') ? 1 : null;"#,
        )
        .await;
    browser.screenshot("broken-dashboard").await;
    // The failing query's 422 is the only thing the console may report.
    let errors = browser.console_errors().await;
    assert!(
        errors.iter().all(|e| e.contains("status of 422")),
        "console errors: {errors:?}"
    );
    drop(load_stop);
    let _ = load.wait();
    child.kill().ok();
}

/// An OTLP exponential histogram sent to the collector is one native
/// histogram series; the panel builder draws it as a heatmap: one row a
/// bucket bound (three buckets and `+Inf`), cells painted.
async fn native_histogram_heatmap(browser: &Page, lines: &[String], origin: &str) {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
    use opentelemetry_proto::tonic::metrics::v1::{
        ExponentialHistogram, ExponentialHistogramDataPoint, Metric, ResourceMetrics, ScopeMetrics,
        metric::Data,
    };
    use prost::Message;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    let point = |ago_s: u64, counts: Vec<u64>| ExponentialHistogramDataPoint {
        time_unix_nano: now - ago_s * 1_000_000_000,
        count: counts.iter().sum(),
        sum: Some(10.0),
        scale: 0,
        positive: Some(Buckets {
            offset: 3,
            bucket_counts: counts,
        }),
        ..Default::default()
    };
    let req = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "upload.size".into(),
                    unit: "By".into(),
                    data: Some(Data::ExponentialHistogram(ExponentialHistogram {
                        data_points: vec![point(60, vec![1, 2, 1]), point(0, vec![2, 5, 3])],
                        aggregation_temporality: 2,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let r = reqwest::Client::new()
        .post(printed_url(lines, "collector OTLP/HTTP"))
        .header("content-type", "application/x-protobuf")
        .body(req.encode_to_vec())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    browser
        .goto(&format!(
            "{origin}/ui/build?type=heatmap&unit=bytes&range=5m&title=Uploads&expr=upload_size_bytes"
        ))
        .await;
    let drawn = browser
        .until(
            "the native histogram is drawn as a heatmap",
            r#"const c = document.querySelector('#b-preview canvas.heat');
               if (!c) return null;
               const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
               let painted = 0;
               for (let i = 3; i < d.length; i += 4) if (d[i] > 0) painted++;
               return painted > 0 ? [Number(c.dataset.buckets), painted] : null;"#,
        )
        .await;
    assert_eq!(drawn[0], 4, "{drawn}");
    browser.screenshot("native-heatmap").await;
}
