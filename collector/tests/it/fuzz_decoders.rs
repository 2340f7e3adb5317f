//! Property tests (bounded, on the stable toolchain) of everything that
//! decodes outside input: no input panics, and valid input is conserved.

use crate::common::{gauge, kv, point, request};
use keel_collector::ingest::{otlp, remote_write};
use keel_metricstore::{Store, StoreConfig, wal};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use proptest::prelude::*;
use prost::Message;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic_any_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(req) = ExportMetricsServiceRequest::decode(&bytes[..]) {
            let all = otlp::Translation {
                promote_all_resource_attributes: true,
                keep_identifying_resource_attributes: true,
                promote_scope_metadata: true,
                ..otlp::Translation::default()
            };
            let _ = otlp::convert(&req, &all, &|_| None);
        }
        let _ = serde_json::from_slice::<ExportMetricsServiceRequest>(&bytes);
        let _ = remote_write::decode(&bytes, 1 << 20);
        let _ = remote_write::decode(&snap::raw::Encoder::new().compress_vec(&bytes).unwrap_or_default(), 1 << 20);
        let _ = wal::decode_log(&bytes);
    }

    #[test]
    fn mutated_valid_requests_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut bytes = request("svc", vec![
            gauge("a.b", "s", vec![point(1_000, 1.5, vec![kv("k", "v")])]),
            crate::common::counter("c", true, vec![point(2_000, 2.0, vec![])]),
            crate::common::histogram("h", "By", 3_000, vec![1.0, 2.0], vec![1, 2, 3], 4.0),
        ]).encode_to_vec();
        for (i, b) in flips {
            let at = i.index(bytes.len());
            bytes[at] = b;
        }
        if let Ok(req) = ExportMetricsServiceRequest::decode(&bytes[..]) {
            let converted = otlp::convert(&req, &otlp::Translation::default(), &|_| None);
            let store = Store::in_memory(StoreConfig::default());
            let _ = store.append(converted.batch);
        }
    }

    #[test]
    fn every_valid_point_is_stored_or_counted_as_rejected(
        points in proptest::collection::vec((0u8..4, 1u64..100_000, -1e9f64..1e9), 1..60)
    ) {
        let metrics: Vec<_> = points
            .iter()
            .map(|(series, t, v)| gauge("m", "", vec![point(1_700_000_000_000 + t * 1000, *v, vec![kv("s", &series.to_string())])]))
            .collect();
        let req = request("svc", metrics);
        let converted = otlp::convert(&req, &otlp::Translation::default(), &|_| None);
        prop_assert_eq!(converted.rejected, 0);
        let store = Store::in_memory(StoreConfig { out_of_order_window_ms: i64::MAX / 4, ..StoreConfig::default() });
        let appended = store.append(converted.batch).expect("in-memory append");
        prop_assert_eq!(appended.accepted + appended.too_old + appended.duplicate + dup_same(&points), points.len() as u64);
        // target_info, for the request's host.name attribute: a sample
        // every 150 s from the earliest point, and one at the newest.
        let times = points.iter().map(|(_, t, _)| t * 1000);
        // (at most an hour back from the newest)
        let span = (times.clone().max().unwrap_or(0) - times.min().unwrap_or(0)).min(3_600_000);
        let info: usize = converted.target_info.iter().map(|(_, s)| s.len()).sum();
        prop_assert_eq!(info as u64, span.div_ceil(150_000) + 1);
        let stored: usize = store
            .select(&[keel_metricstore::Matcher::Equal("__name__".into(), "m".into())], 0, i64::MAX)
            .iter()
            .map(|(_, s)| s.len())
            .sum();
        prop_assert_eq!(stored as u64, appended.accepted);
    }

    #[test]
    fn wal_records_roundtrip(series in proptest::collection::vec(("[a-z]{1,8}", proptest::collection::vec((any::<i64>(), any::<f64>()), 0..20)), 0..10)) {
        let batch: wal::Batch = series
            .into_iter()
            .map(|(n, s)| (keel_series::labels::Labels::new(vec![("__name__", n)]), s))
            .collect();
        let (replayed, valid) = wal::decode_log(&wal::encode_log(std::slice::from_ref(&batch), wal::MAX_RECORD).expect("encodes"));
        let decoded: wal::Batch = replayed.into_iter().flatten().collect();
        prop_assert_eq!(valid, wal::encode_log(std::slice::from_ref(&batch), wal::MAX_RECORD).expect("encodes").len(), "own encoding decodes whole");
        prop_assert_eq!(decoded.len(), batch.len());
        for ((l1, s1), (l2, s2)) in decoded.iter().zip(&batch) {
            prop_assert_eq!(l1, l2);
            prop_assert_eq!(s1.iter().map(|x| (x.0, x.1.to_bits())).collect::<Vec<_>>(), s2.iter().map(|x| (x.0, x.1.to_bits())).collect::<Vec<_>>());
        }
    }
}

/// Points that repeat an earlier (series, time) with the same value: stored
/// once, counted neither as accepted twice nor as rejected.
fn dup_same(points: &[(u8, u64, f64)]) -> u64 {
    let mut seen = std::collections::HashMap::new();
    let mut n = 0;
    for (s, t, v) in points {
        match seen.get(&(s, t)) {
            Some(first) if *first == v.to_bits() => n += 1,
            Some(_) => {}
            None => {
                seen.insert((s, t), v.to_bits());
            }
        }
    }
    n
}

proptest! {
    #![proptest_config(config())]

    /// Keel's zero-copy remote-write decoder reads exactly what prost's
    /// generated decoder reads, for series valid or not, labels sorted or not.
    #[test]
    fn remote_write_decoder_agrees_with_prost(
        series in proptest::collection::vec(
            (
                proptest::collection::vec(("(__name__|[a-c]|[a-c]_x|9bad)", "[a-zé\u{0}]{0,3}"), 0..5),
                proptest::collection::vec((any::<i64>(), any::<f64>()), 0..4),
            ),
            0..8,
        )
    ) {
        use keel_collector::ingest::remote_write::{Label, Sample, TimeSeries, WriteRequest};
        use keel_series::labels::Labels;
        let req = WriteRequest {
            timeseries: series.iter().map(|(labels, samples)| TimeSeries {
                labels: labels.iter().map(|(n, v)| Label { name: n.clone(), value: v.clone() }).collect(),
                samples: samples.iter().map(|(t, v)| Sample { value: *v, timestamp: *t }).collect(),
            }).collect(),
        };
        let body = req.to_snappy();
        let decoded = remote_write::decode(&body, 1 << 20).map_err(TestCaseError::fail)?;
        let problems = decoded.problems.len();
        let batch = decoded.into_batch(|keys| keys.map(Labels::from_encoded).collect());
        // What prost reads back (proto3 drops defaults such as -0.0 on encode).
        let via_prost = WriteRequest::decode(&req.encode_to_vec()[..]).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut expected = Vec::new();
        let mut bad = 0;
        for ts in &via_prost.timeseries {
            let mut names: Vec<&str> = ts.labels.iter().map(|l| l.name.as_str()).collect();
            names.sort_unstable();
            let valid = ts.labels.iter().all(|l| l.name != "9bad")
                && names.windows(2).all(|w| w[0] != w[1])
                && ts.labels.iter().any(|l| l.name == "__name__" && !l.value.is_empty());
            if !valid {
                bad += 1;
                continue;
            }
            let labels = Labels::new(ts.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect());
            let samples: Vec<(i64, u64)> = ts.samples.iter().map(|s| (s.timestamp, s.value.to_bits())).collect();
            expected.push((labels, samples));
        }
        prop_assert_eq!(problems, bad);
        let got: Vec<(Labels, Vec<(i64, u64)>)> = batch
            .into_iter()
            .map(|(l, s)| (l, s.into_iter().map(|(t, v)| (t, v.to_bits())).collect()))
            .collect();
        prop_assert_eq!(got, expected);
    }
}
