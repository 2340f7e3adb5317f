//! The targets: each decodes or parses what its generator makes and goes
//! on as the collector would (convert, limit, store, evaluate, validate).

use std::path::Path;
use std::time::Duration;

use keel_collector::ingest::{otlp, remote_write};
use keel_metricstore::{SeriesLimits, Store, StoreConfig, wal};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use prost::Message;

use crate::inputs;
use crate::{Outcome, Target, check};
use keel_core::config::Validate as _;

/// Every target, in the order the bench reports them.
pub const ALL: &[Target] = &[
    Target {
        name: "otlp_metrics",
        run: otlp_metrics,
    },
    Target {
        name: "otlp_logs",
        run: otlp_logs,
    },
    Target {
        name: "otlp_traces",
        run: otlp_traces,
    },
    Target {
        name: "remote_write",
        run: remote_write_target,
    },
    Target {
        name: "json_lines",
        run: json_lines,
    },
    Target {
        name: "promql",
        run: promql,
    },
    Target {
        name: "rule_yaml",
        run: rule_yaml,
    },
    Target {
        name: "dashboard_yaml",
        run: dashboard_yaml,
    },
    Target {
        name: "metric_wal",
        run: metric_wal,
    },
];

/// A store with small limits, so the limits' paths run too.
fn store() -> Store {
    Store::in_memory(StoreConfig {
        limits: SeriesLimits {
            max_series: 50,
            max_labels_per_series: 12,
            max_label_name_bytes: 64,
            max_label_value_bytes: 64,
        },
        ..StoreConfig::default()
    })
}

fn fail(why: impl Into<String>) -> TestCaseError {
    TestCaseError::fail(why.into())
}

/// OTLP metrics, as protobuf and as JSON: decoded, converted (every
/// translation), stored; every stored label set is a valid one.
fn otlp_metrics(cases: u32) -> Outcome {
    check("otlp_metrics", cases, inputs::metrics_request(), |req| {
        let bytes = req.encode_to_vec();
        let decoded = opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest::decode(&bytes[..])
            .map_err(|e| fail(format!("own encoding does not decode: {e}")))?;
        let all = otlp::Translation {
            promote_all_resource_attributes: true,
            keep_identifying_resource_attributes: true,
            promote_scope_metadata: true,
            ..otlp::Translation::default()
        };
        for translation in [otlp::Translation::default(), all] {
            let store = store();
            let converted =
                otlp::convert(&decoded, &translation, &|l| store.last(l).map(|(_, v)| v));
            for (labels, _) in &converted.batch {
                for (k, _) in labels.pairs() {
                    if !keel_core::names::is_label_name(k) {
                        return Err(fail(format!("stored an invalid label name {k:?}")));
                    }
                }
            }
            store
                .append(converted.batch)
                .map_err(|e| fail(e.to_string()))?;
            let _ = store.append(converted.target_info);
        }
        if let Ok(json) = serde_json::to_vec(&req) {
            let _ = serde_json::from_slice::<
                opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest,
            >(&json);
        }
        Ok(())
    })
}

/// OTLP logs: records, limited, each writable to the log WAL.
fn otlp_logs(cases: u32) -> Outcome {
    check("otlp_logs", cases, inputs::logs_request(), |req| {
        let (records, _) = keel_logindex::logs::record::from_otlp(&req, 1_800_000_000_000_000_000);
        let limits = keel_logindex::limits::RecordLimits::default();
        let (records, _) = limits.logs(records, |i| i.to_string());
        for r in &records {
            serde_json::to_vec(r)
                .map_err(|e| fail(format!("a record the WAL cannot hold: {e}")))?;
        }
        Ok(())
    })
}

/// OTLP traces: spans, limited, their RED metrics stored.
fn otlp_traces(cases: u32) -> Outcome {
    check("otlp_traces", cases, inputs::traces_request(), |req| {
        let (mut spans, _) = keel_logindex::traces::from_otlp(&req);
        keel_logindex::limits::RecordLimits::default().spans(&mut spans);
        for s in &spans {
            serde_json::to_vec(s).map_err(|e| fail(format!("a span the WAL cannot hold: {e}")))?;
        }
        let metrics = keel_logindex::traces::red::SpanMetrics::default();
        metrics
            .record(&spans, &store(), 1_800_000_000_000)
            .map_err(|e| fail(e.to_string()))?;
        Ok(())
    })
}

/// Remote write with labels in any order, repeated, invalid; NaN, ±Inf
/// and staleness markers: decoded, stored; a staleness marker stays one.
fn remote_write_target(cases: u32) -> Outcome {
    use keel_collector::ingest::remote_write::{Label, Sample, TimeSeries, WriteRequest};
    let label = (
        prop_oneof![Just("__name__".to_owned()), "[a-c]", inputs::name()],
        prop_oneof!["[a-z]{1,3}", inputs::name()],
    );
    let series = (
        vec(label, 0..6),
        vec((any::<i64>(), inputs::hostile_f64()), 0..4),
    );
    check("remote_write", cases, vec(series, 0..6), |series| {
        let req = WriteRequest {
            timeseries: series
                .iter()
                .map(|(labels, samples)| TimeSeries {
                    labels: labels
                        .iter()
                        .map(|(n, v)| Label {
                            name: n.clone(),
                            value: v.clone(),
                        })
                        .collect(),
                    samples: samples
                        .iter()
                        .map(|(t, v)| Sample {
                            value: *v,
                            timestamp: *t,
                        })
                        .collect(),
                })
                .collect(),
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&req.encode_to_vec())
            .map_err(|e| fail(e.to_string()))?;
        let decoded = remote_write::decode(&body, 1 << 20).map_err(fail)?;
        let batch = decoded.into_batch(|keys| {
            keys.map(keel_series::labels::Labels::from_encoded)
                .collect()
        });
        let stale_in = batch
            .iter()
            .flat_map(|(_, s)| s)
            .filter(|(_, v)| keel_core::stale::is_stale(*v))
            .count();
        let stored = store();
        stored
            .append(batch.clone())
            .map_err(|e| fail(e.to_string()))?;
        let stale_out: usize = stored
            .select(&[], i64::MIN, i64::MAX)
            .iter()
            .flat_map(|(_, s)| s)
            .filter(|(_, v)| keel_core::stale::is_stale(*v))
            .count();
        if stale_out > stale_in {
            return Err(fail("more staleness markers stored than sent"));
        }
        Ok(())
    })
}

/// JSON lines: every bad line named by its number, every record limited
/// and writable to the WAL.
fn json_lines(cases: u32) -> Outcome {
    check("json_lines", cases, inputs::json_lines(), |body| {
        let (good, bad) =
            keel_logindex::logs::record::parse_json_lines_numbered(body.as_bytes(), 1);
        for b in &bad {
            if !b.starts_with("line ") {
                return Err(fail(format!("a problem without its line: {b}")));
            }
        }
        let (kept, _) = keel_logindex::limits::RecordLimits::default()
            .logs(good.into_iter().map(|(_, r)| r).collect(), |i| {
                i.to_string()
            });
        for r in &kept {
            serde_json::to_vec(r)
                .map_err(|e| fail(format!("a record the WAL cannot hold: {e}")))?;
        }
        Ok(())
    })
}

/// PromQL from its grammar: a selector, number or string; unary minus;
/// binary operators with their modifiers; aggregations; functions (any
/// arity); ranges, subqueries, offsets and `@`.
fn expr() -> impl Strategy<Value = String> {
    let duration = prop_oneof![
        Just("0s"),
        Just("1ms"),
        Just("1s"),
        Just("5m"),
        Just("1h"),
        Just("1000d"),
        Just("1y"),
        Just("292y"),
    ];
    let selector = prop_oneof![
        Just("m".to_owned()),
        Just("m{a=\"1\"}".to_owned()),
        Just("m{a=~\".+\"}".to_owned()),
        Just("{__name__=~\"m|h_bucket\"}".to_owned()),
        Just("h_bucket".to_owned()),
        Just("nothing".to_owned()),
    ];
    let number = prop_oneof![
        Just("0"),
        Just("1"),
        Just("-1"),
        Just("NaN"),
        Just("Inf"),
        Just("-Inf"),
        Just("1e308"),
        Just("0x1f"),
        Just("0.5"),
    ]
    .prop_map(str::to_owned);
    let leaf = prop_oneof![4 => selector, 2 => number, 1 => Just("\"s\"".to_owned())];
    leaf.prop_recursive(4, 32, 3, move |inner| {
        let binop = prop_oneof![
            Just("+"),
            Just("-"),
            Just("*"),
            Just("/"),
            Just("%"),
            Just("^"),
            Just("=="),
            Just("!="),
            Just(">"),
            Just("<"),
            Just(">= bool"),
            Just("and"),
            Just("or"),
            Just("unless"),
            Just("atan2"),
            Just("+ on(a)"),
            Just("* ignoring(le) group_left"),
            Just("/ on() group_right"),
        ];
        let agg = prop_oneof![
            Just("sum"),
            Just("avg"),
            Just("min"),
            Just("max"),
            Just("count"),
            Just("stddev"),
            Just("stdvar"),
            Just("group"),
            Just("sum by (a)"),
            Just("max without (le)"),
        ];
        let param_agg = prop_oneof![
            Just("topk"),
            Just("bottomk"),
            Just("quantile"),
            Just("count_values"),
            Just("limitk")
        ];
        let func = prop_oneof![
            Just("rate"),
            Just("irate"),
            Just("increase"),
            Just("delta"),
            Just("deriv"),
            Just("predict_linear"),
            Just("histogram_quantile"),
            Just("abs"),
            Just("ceil"),
            Just("clamp"),
            Just("clamp_min"),
            Just("exp"),
            Just("ln"),
            Just("sqrt"),
            Just("round"),
            Just("scalar"),
            Just("vector"),
            Just("time"),
            Just("timestamp"),
            Just("absent"),
            Just("absent_over_time"),
            Just("sort"),
            Just("sort_desc"),
            Just("label_replace"),
            Just("label_join"),
            Just("max_over_time"),
            Just("quantile_over_time"),
            Just("count_over_time"),
            Just("last_over_time"),
            Just("changes"),
            Just("resets"),
            Just("holt_winters"),
            Just("day_of_week"),
        ];
        let d = duration.clone();
        prop_oneof![
            inner.clone().prop_map(|e| format!("-({e})")),
            (inner.clone(), binop, inner.clone())
                .prop_map(|(a, op, b)| format!("({a}) {op} ({b})")),
            (agg, inner.clone()).prop_map(|(a, e)| format!("{a}({e})")),
            (param_agg, inner.clone(), inner.clone())
                .prop_map(|(a, p, e)| format!("{a}({p}, {e})")),
            (func, vec(inner.clone(), 0..4))
                .prop_map(|(f, args)| format!("{f}({})", args.join(", "))),
            (inner.clone(), d.clone()).prop_map(|(e, r)| format!("({e})[{r}]")),
            (inner.clone(), d.clone(), d.clone()).prop_map(|(e, r, s)| format!("({e})[{r}:{s}]")),
            (inner.clone(), d.clone()).prop_map(|(e, o)| format!("({e}) offset {o}")),
            (
                inner,
                prop_oneof![
                    Just("0"),
                    Just("1e15"),
                    Just("-1e15"),
                    Just("start()"),
                    Just("end()")
                ]
            )
                .prop_map(|(e, at)| format!("({e}) @ {at}")),
            (func_over_range(), d).prop_map(|(f, r)| format!("{f}(m[{r}])")),
        ]
    })
}

fn func_over_range() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("rate"),
        Just("sum_over_time"),
        Just("stddev_over_time"),
        Just("irate"),
        Just("deriv")
    ]
}

/// A few series to evaluate against: counters, and buckets with `le`
/// spelt `+Inf` and `inf`.
fn data() -> Vec<keel_series::SeriesSamples> {
    use keel_series::labels::Labels;
    let mut out = Vec::new();
    for a in ["1", "2"] {
        out.push((
            Labels::new(vec![("__name__", "m"), ("a", a)]),
            (0..120).map(|i| (i * 15_000, (i * 3) as f64)).collect(),
        ));
    }
    for le in ["0.1", "1", "+Inf", "inf"] {
        out.push((
            Labels::new(vec![("__name__", "h_bucket"), ("le", le)]),
            (0..120).map(|i| (i * 15_000, i as f64)).collect(),
        ));
    }
    out
}

/// PromQL: parsed, then evaluated at an instant and over a range under a
/// small budget; any error is fine, a panic is not.
fn promql(cases: u32) -> Outcome {
    let data = data();
    check("promql", cases, expr(), move |q| {
        let limits = keel_promql::QueryLimits {
            max_samples: 200_000,
            timeout: Duration::from_secs(2),
            ..keel_promql::QueryLimits::default()
        };
        let engine = keel_promql::Engine::with_budget(&data, limits.budget(None));
        let _ = engine.instant(&q, 1_000_000);
        let engine = keel_promql::Engine::with_budget(&data, limits.budget(None));
        let _ = engine.range(
            &q,
            keel_promql::QueryRange {
                start: 0,
                end: 1_800_000,
                step: 60_000,
            },
        );
        Ok(())
    })
}

/// A mutation of a text: delete, insert a YAML-significant character,
/// or repeat or drop a line, at an index.
pub fn mutations() -> impl Strategy<Value = Vec<(usize, u8, char)>> {
    let chars = prop_oneof![
        Just(':'),
        Just('-'),
        Just('{'),
        Just('}'),
        Just('['),
        Just(']'),
        Just('\''),
        Just('"'),
        Just('#'),
        Just('\n'),
        Just(' '),
        Just('\t'),
        Just('|'),
        Just('>'),
        Just('&'),
        Just('*'),
        Just('!'),
        Just('%'),
        Just('@'),
        Just('`'),
        Just('é'),
        Just('\u{0}'),
        Just('x'),
        Just('1'),
    ];
    vec((any::<usize>(), 0u8..4, chars), 1..6)
}

/// `text` with `ops` (from [`mutations`]) applied.
pub fn mutate(text: &str, ops: &[(usize, u8, char)]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for &(at, kind, c) in ops {
        if chars.is_empty() {
            chars.push(c);
            continue;
        }
        let i = at % chars.len();
        match kind {
            0 => {
                chars.remove(i);
            }
            1 => chars.insert(i, c),
            _ => {
                // The line around `i`, repeated (2) or dropped (3).
                let start = chars[..i]
                    .iter()
                    .rposition(|x| *x == '\n')
                    .map_or(0, |p| p + 1);
                let end = chars[i..]
                    .iter()
                    .position(|x| *x == '\n')
                    .map_or(chars.len(), |p| i + p + 1);
                let line: Vec<char> = chars[start..end].to_vec();
                if kind == 2 {
                    chars.splice(end..end, line);
                } else {
                    chars.drain(start..end);
                }
            }
        }
    }
    chars.into_iter().collect()
}

const RULES: &str = include_str!("../../rules/shop.yml");

/// Rule files mutated from the shipped one: a parse error names the file.
fn rule_yaml(cases: u32) -> Outcome {
    check("rule_yaml", cases, mutations(), |ops| {
        let text = mutate(RULES, &ops);
        let parsed = keel_alerting::rules::file::parse(
            Path::new("r.yml"),
            &text,
            Duration::from_secs(15),
            &keel_alerting::rules::file::SeverityMapping::default(),
        );
        if let Err(e) = parsed {
            let e = e.to_string();
            if !e.contains("r.yml") {
                return Err(fail(format!("an error that does not name the file: {e}")));
            }
        }
        Ok(())
    })
}

const DASHBOARD: &str = include_str!("../../dashboards/overview.yaml");

/// Dashboard files mutated from a shipped one: parsed, validated.
fn dashboard_yaml(cases: u32) -> Outcome {
    check("dashboard_yaml", cases, mutations(), |ops| {
        let text = mutate(DASHBOARD, &ops);
        match keel_core::config::parse_yaml::<keel_dashboards::model::Dashboard>("d.yaml", &text) {
            Ok(d) => {
                let mut problems = Vec::new();
                d.validate(&mut problems);
            }
            Err(e) => {
                let e = e.to_string();
                if !e.contains("d.yaml") {
                    return Err(fail(format!("an error that does not name the file: {e}")));
                }
            }
        }
        Ok(())
    })
}

/// The metric WAL: a valid image whose payloads are mutated and framed
/// again with their CRCs (so replay parses them), then cut anywhere;
/// replay reads a prefix and never more than there is.
fn metric_wal(cases: u32) -> Outcome {
    let strategy = (
        vec(
            (
                "[a-z]{1,6}",
                vec((any::<i64>(), inputs::hostile_f64()), 0..6),
            ),
            0..6,
        ),
        vec((any::<usize>(), any::<u8>()), 0..6),
        any::<usize>(),
    );
    check("metric_wal", cases, strategy, |(series, flips, cut)| {
        let batch: wal::Batch = series
            .into_iter()
            .map(|(n, s)| (keel_series::labels::Labels::new(vec![("__name__", n)]), s))
            .collect();
        let image =
            wal::encode_log(std::slice::from_ref(&batch), 256).map_err(|e| fail(e.to_string()))?;
        let mut payloads: Vec<Vec<u8>> = wal::frames(&image)
            .into_iter()
            .map(|(_, p)| p.to_vec())
            .collect();
        let total: usize = payloads.iter().map(Vec::len).sum();
        if total > 0 {
            for (at, b) in flips {
                let mut i = at % total;
                for p in &mut payloads {
                    if i < p.len() {
                        p[i] = b;
                        break;
                    }
                    i -= p.len();
                }
            }
        }
        let mut image = Vec::new();
        for p in &payloads {
            wal::frame(&mut image, p).map_err(|e| fail(e.to_string()))?;
        }
        image.truncate(cut % (image.len() + 1));
        let (_, valid) = wal::decode_log(&image);
        if valid > image.len() {
            return Err(fail("replay read past the end"));
        }
        Ok(())
    })
}
