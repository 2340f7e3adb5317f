//! Prometheus remote-write 1.0 receiver (`POST /api/v1/write`): a
//! snappy-compressed protobuf `WriteRequest`, so existing Prometheus
//! servers and agents can send to Keel (2.0, by its content type, in
//! [`super::remote_write_v2`]).
//!
//! Answers as Prometheus does: 204 when stored; 400 (not to be retried)
//! for malformed requests or rejected samples, naming why, with every
//! valid sample of the request stored; 503 when the write-ahead log fails.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use keel_http::workers::Workers;
use keel_metricstore::Store;
use keel_metricstore::exemplars::Exemplar;
use keel_metricstore::wal::Batch;
use keel_series::histogram::{
    CounterReset, Histogram, MAX_BUCKETS, MAX_SCHEMA, MIN_SCHEMA, from_spans, undelta,
};
use keel_series::labels::{Labels, NAME};
use keel_series::varint::unzigzag;

/// `prometheus.WriteRequest` (remote write 1.0), the fields Keel reads.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    /// Series with samples.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

impl WriteRequest {
    /// A request of float series, as Keel stores and forwards them.
    pub fn from_batch(batch: &[(Labels, Vec<(i64, f64)>)]) -> Self {
        Self {
            timeseries: batch
                .iter()
                .map(|(labels, samples)| TimeSeries {
                    labels: crate::forward::histograms::wire_labels(labels),
                    samples: samples
                        .iter()
                        .map(|&(timestamp, value)| Sample { value, timestamp })
                        .collect(),
                })
                .collect(),
        }
    }

    /// The request as a remote-write body: protobuf, snappy block format
    /// (what senders post; tests and benches build bodies with it).
    pub fn to_snappy(&self) -> Vec<u8> {
        use prost::Message as _;
        snap::raw::Encoder::new()
            .compress_vec(&self.encode_to_vec())
            .unwrap_or_default()
    }
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Labels, `__name__` included.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Samples.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// Value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

fn valid_label_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Reads protobuf wire format from a slice without copying, naming the
/// byte offset (in the decompressed request) of anything malformed.
#[derive(Clone, Copy)]
pub(super) struct Wire<'a> {
    b: &'a [u8],
    at: usize,
    /// Offset of `b` in the whole request.
    base: usize,
    /// The key read last.
    last_key: u64,
}

impl<'a> Wire<'a> {
    /// A reader of a whole decompressed request.
    pub(super) fn new(b: &'a [u8]) -> Self {
        Self {
            b,
            at: 0,
            base: 0,
            last_key: 0,
        }
    }

    pub(super) fn err(&self, what: &str) -> String {
        format!(
            "malformed protobuf WriteRequest at byte {}: {what}",
            self.base + self.at
        )
    }

    pub(super) fn done(&self) -> bool {
        self.at >= self.b.len()
    }

    pub(super) fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(b) = self.b.get(self.at) else {
                return Err(self.err("truncated varint"));
            };
            self.at += 1;
            v |= u64::from(b & 0x7f) << shift;
            if *b < 0x80 {
                return Ok(v);
            }
        }
        Err(self.err("varint longer than 10 bytes"))
    }

    /// The next field's number and wire type.
    pub(super) fn key(&mut self) -> Result<(u64, u8), String> {
        let k = self.varint()?;
        self.last_key = k;
        Ok((k >> 3, (k & 7) as u8))
    }

    /// The field number of the key read last.
    fn key_field(&self) -> u64 {
        self.last_key >> 3
    }

    fn bytes(&mut self, n: usize) -> Result<(usize, &'a [u8]), String> {
        let start = self.at;
        let b: &'a [u8] = self.b;
        let Some(s) = start.checked_add(n).and_then(|end| b.get(start..end)) else {
            return Err(self.err("length runs past the end"));
        };
        self.at += n;
        Ok((self.base + start, s))
    }

    /// A length-delimited field's contents, as a reader of its own.
    pub(super) fn message(&mut self) -> Result<Wire<'a>, String> {
        let n = usize::try_from(self.varint()?).map_err(|_| self.err("length too large"))?;
        let (base, b) = self.bytes(n)?;
        Ok(Wire {
            b,
            at: 0,
            base,
            last_key: 0,
        })
    }

    pub(super) fn string(&mut self) -> Result<&'a str, String> {
        let m = self.message()?;
        std::str::from_utf8(m.b).map_err(|e| {
            format!(
                "malformed protobuf WriteRequest at byte {}: string is not valid UTF-8",
                m.base + e.valid_up_to()
            )
        })
    }

    pub(super) fn fixed64(&mut self) -> Result<u64, String> {
        let (_, b) = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// Skip a field Keel does not read (metadata, exemplars, histograms).
    pub(super) fn skip(&mut self, wire: u8) -> Result<(), String> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => self.bytes(8).map(|_| ()),
            2 => self.message().map(|_| ()),
            5 => self.bytes(4).map(|_| ()),
            w => Err(self.err(&format!("unsupported wire type {w}"))),
        }
    }
}

/// One `Sample` (1.0 and 2.0 alike): (timestamp ms, value).
pub(super) fn sample(mut s: Wire<'_>) -> Result<(i64, f64), String> {
    let (mut v, mut t) = (0.0, 0i64);
    while !s.done() {
        match s.key()? {
            (1, 1) => v = f64::from_bits(s.fixed64()?),
            (2, 0) => t = s.varint()? as i64,
            (_, wire) => s.skip(wire)?,
        }
    }
    Ok((t, v))
}

/// A histogram sample as read: its time and histogram, or why it
/// cannot be stored.
pub(super) type HistogramSample = Result<(i64, Histogram), String>;

/// One `Histogram` (1.0 and 2.0 alike): the outer error is a malformed
/// request, the inner one a histogram Keel cannot store (a schema
/// outside -4..=8 and not -53, custom bounds that are not ascending,
/// spans that disagree with counts).
pub(super) fn histogram(mut w: Wire<'_>) -> Result<HistogramSample, String> {
    let mut h = Histogram::default();
    let mut t = 0i64;
    let (mut pos_spans, mut neg_spans) = (Vec::new(), Vec::new());
    let (mut pos_deltas, mut neg_deltas) = (Vec::new(), Vec::new());
    let (mut pos_counts, mut neg_counts) = (Vec::new(), Vec::new());
    let mut custom_values: Vec<f64> = Vec::new();
    let mut integer = false;
    while !w.done() {
        match w.key()? {
            (1, 0) => {
                h.count = w.varint()? as f64;
                integer = true;
            }
            (2, 1) => h.count = f64::from_bits(w.fixed64()?),
            (3, 1) => h.sum = f64::from_bits(w.fixed64()?),
            (4, 0) => h.schema = i32::try_from(unzigzag(w.varint()?)).unwrap_or(i32::MAX),
            (5, 1) => h.zero_threshold = f64::from_bits(w.fixed64()?),
            (6, 0) => h.zero_count = w.varint()? as f64,
            (7, 1) => h.zero_count = f64::from_bits(w.fixed64()?),
            (8, 2) => neg_spans.push(span(w.message()?)?),
            (11, 2) => pos_spans.push(span(w.message()?)?),
            (9, 2) | (12, 2) | (10, 2) | (13, 2) => {
                let field = w.key_field();
                let mut packed = w.message()?;
                while !packed.done() {
                    match field {
                        9 => neg_deltas.push(unzigzag(packed.varint()?)),
                        12 => pos_deltas.push(unzigzag(packed.varint()?)),
                        10 => neg_counts.push(f64::from_bits(packed.fixed64()?)),
                        _ => pos_counts.push(f64::from_bits(packed.fixed64()?)),
                    }
                }
            }
            (9, 0) => neg_deltas.push(unzigzag(w.varint()?)),
            (12, 0) => pos_deltas.push(unzigzag(w.varint()?)),
            (10, 1) => neg_counts.push(f64::from_bits(w.fixed64()?)),
            (13, 1) => pos_counts.push(f64::from_bits(w.fixed64()?)),
            (14, 0) => h.reset = CounterReset::from_code(w.varint()?),
            (15, 0) => t = w.varint()? as i64,
            (16, 2) => {
                let mut packed = w.message()?;
                while !packed.done() {
                    custom_values.push(f64::from_bits(packed.fixed64()?));
                }
            }
            (16, 1) => custom_values.push(f64::from_bits(w.fixed64()?)),
            (_, wire) => w.skip(wire)?,
        }
    }
    h.custom_values = custom_values.into();
    if !h.is_custom() && !(MIN_SCHEMA..=MAX_SCHEMA).contains(&h.schema) {
        return Ok(Err(format!(
            "native histogram schema {} is outside {MIN_SCHEMA}..={MAX_SCHEMA}",
            h.schema
        )));
    }
    let buckets = pos_spans
        .iter()
        .chain(&neg_spans)
        .map(|(_, n)| u64::from(*n))
        .sum::<u64>();
    if buckets > MAX_BUCKETS as u64 {
        return Ok(Err(format!(
            "native histogram with {buckets} buckets, more than {MAX_BUCKETS}"
        )));
    }
    let side = |spans: &[(i32, u32)], deltas: &[i64], counts: &[f64], which: &str| {
        let counts = if deltas.is_empty() {
            counts.to_vec()
        } else {
            undelta(deltas)
        };
        from_spans(spans, &counts).ok_or_else(|| {
            format!(
                "native histogram {which} spans hold a different number of buckets than the {} counts sent",
                counts.len()
            )
        })
    };
    h.positive = match side(&pos_spans, &pos_deltas, &pos_counts, "positive") {
        Ok(b) => b,
        Err(e) => return Ok(Err(e)),
    };
    h.negative = match side(&neg_spans, &neg_deltas, &neg_counts, "negative") {
        Ok(b) => b,
        Err(e) => return Ok(Err(e)),
    };
    // Before compacting: a bucket past the custom bounds is refused even
    // when it holds nothing, as Prometheus refuses it.
    if let Err(e) = h.validate() {
        return Ok(Err(e));
    }
    let h = h.compact();
    if integer && h.count < h.bucket_total() {
        return Ok(Err(format!(
            "native histogram count {} is below its buckets' total {}",
            h.count,
            h.bucket_total()
        )));
    }
    Ok(Ok((t, h)))
}

/// One `BucketSpan`: (offset, length).
fn span(mut w: Wire<'_>) -> Result<(i32, u32), String> {
    let (mut offset, mut len) = (0i32, 0u32);
    while !w.done() {
        match w.key()? {
            (1, 0) => offset = unzigzag(w.varint()?) as i32,
            (2, 0) => len = w.varint()? as u32,
            (_, wire) => w.skip(wire)?,
        }
    }
    Ok((offset, len))
}

/// One `Label`: (name, value).
fn label<'a>(mut l: Wire<'a>) -> Result<(&'a str, &'a str), String> {
    let (mut name, mut value) = ("", "");
    while !l.done() {
        match l.key()? {
            (1, 2) => name = l.string()?,
            (2, 2) => value = l.string()?,
            (_, wire) => l.skip(wire)?,
        }
    }
    Ok((name, value))
}

/// One `Exemplar` (1.0: its labels inline; 2.0: `labels` reads its
/// symbol references): its value and timestamp read here.
pub(super) fn exemplar<'a>(
    mut w: Wire<'a>,
    mut labels: impl FnMut(&mut Wire<'a>, u64, u8) -> Result<bool, String>,
) -> Result<(f64, i64), String> {
    let (mut v, mut t) = (0.0, 0i64);
    while !w.done() {
        match w.key()? {
            (2, 1) => v = f64::from_bits(w.fixed64()?),
            (3, 0) => t = w.varint()? as i64,
            (field, wire) => {
                if !labels(&mut w, field, wire)? {
                    w.skip(wire)?;
                }
            }
        }
    }
    Ok((v, t))
}

/// A series' samples, exemplars and histogram samples.
pub(super) type SeriesData = (Vec<(i64, f64)>, Vec<Exemplar>, Vec<HistogramSample>);

/// How a `TimeSeries`' labels were had: known by their bytes, or read
/// into the pairs (with the bytes to learn them by, when they lie in one
/// run).
enum Labelled<'a> {
    Known(Labels),
    Read(Option<&'a [u8]>),
}

/// The bytes of the `Label` fields a `TimeSeries` opens with (as every
/// sender writes it: labels first), or `None` (malformed too: reading
/// it names the first problem as it always did). `w` is a message's own
/// reader, at its start.
fn label_run(mut w: Wire<'_>) -> Option<&[u8]> {
    debug_assert_eq!(w.at, 0, "a message's reader starts at its start");
    let mut end = 0;
    while !w.done() {
        if w.key().ok()? != (1, 2) {
            break;
        }
        w.skip(2).ok()?;
        end = w.at;
    }
    (end > 0).then(|| &w.b[..end])
}

/// One `TimeSeries`: its labels (known from `known` by the bytes of the
/// run it opens with, or read into `pairs` as sent), samples and
/// exemplars.
fn time_series<'a>(
    whole: Wire<'a>,
    pairs: &mut Vec<(&'a str, &'a str)>,
    known: Option<&super::label_cache::Known>,
) -> Result<(SeriesData, Labelled<'a>), String> {
    let mut w = whole;
    let mut run = known.and_then(|_| label_run(w));
    let labelled = run.zip(known).and_then(|(r, k)| k.get(r));
    let read = labelled.is_none();
    if let (Some(r), false) = (run, read) {
        w.at = r.len();
    }
    let mut samples = Vec::new();
    let mut exemplars = Vec::new();
    let mut histograms = Vec::new();
    while !w.done() {
        let at = w.at;
        match w.key()? {
            (1, 2) if read => {
                if run.is_some_and(|r| at >= r.len()) {
                    // A label after other fields: the run is not all of
                    // them, so it is not learnt.
                    run = None;
                }
                pairs.push(label(w.message()?)?)
            }
            // A label after other fields, the run known: read it all.
            (1, 2) => return time_series(whole, pairs, None),
            (2, 2) => samples.push(sample(w.message()?)?),
            (4, 2) => histograms.push(histogram(w.message()?)?),
            (3, 2) => {
                let mut ls = Vec::new();
                let (value, t) = exemplar(w.message()?, |e, field, wire| {
                    if (field, wire) != (1, 2) {
                        return Ok(false);
                    }
                    ls.push(label(e.message()?)?);
                    Ok(true)
                })?;
                // Too long: dropped before its labels are built.
                if !keel_metricstore::exemplars::too_long(ls.iter().copied()) {
                    exemplars.push(Exemplar {
                        labels: Labels::new(ls),
                        value,
                        t,
                    });
                }
            }
            (_, wire) => w.skip(wire)?,
        }
    }
    let labelled = match labelled {
        Some(l) => Labelled::Known(l.clone()),
        None => Labelled::Read(run),
    };
    Ok(((samples, exemplars, histograms), labelled))
}

/// Why a series' labels cannot be stored, if they cannot.
fn label_problem(pairs: &[(&str, &str)]) -> Option<String> {
    if let Some((bad, _)) = pairs.iter().find(|(n, _)| !valid_label_name(n)) {
        return Some(format!("invalid label name {bad:?}"));
    }
    if pairs.windows(2).any(|w| w[0].0 == w[1].0) {
        return Some("duplicate label name".into());
    }
    if !pairs.iter().any(|(n, v)| *n == NAME && !v.is_empty()) {
        return Some("no metric name (__name__)".into());
    }
    None
}

/// A series' labels: known already, or their encoding (a range of
/// `Decoded::keys`) to be resolved by the store.
#[derive(Debug)]
enum Key {
    Known(Labels),
    Encoded(std::ops::Range<usize>),
}

/// A series' labels and samples.
type KeyedSamples = (Key, Vec<(i64, f64)>);

/// A decoded request: every storable series' label-set encoding (back to
/// back in `keys`) with its samples, and the problem of every other one.
#[derive(Debug, Default)]
pub struct Decoded {
    keys: Vec<u8>,
    /// Where in `keys` each series' label set is, and its samples.
    series: Vec<KeyedSamples>,
    /// One line for each series that cannot be stored, naming it by index.
    pub problems: Vec<String>,
    /// The request's `MetricMetadata`: each family's type, help and unit.
    pub metadata: Vec<(String, keel_metricstore::metadata::Meta)>,
    /// Exemplars, each with the index of its series in `series`.
    exemplars: Vec<(usize, Exemplar)>,
    /// Native histogram samples, each series' with its index in `series`.
    histograms: Vec<(usize, Vec<(i64, Histogram)>)>,
    /// Where read label sets are learnt, once resolved.
    cache: Option<Arc<super::label_cache::LabelCache>>,
    /// The wire bytes of label sets read here, back to back, each with
    /// its series' index in `series`.
    runs: Vec<u8>,
    learn: Vec<(std::ops::Range<usize>, usize)>,
}

/// A decoded request's parts: float series, exemplars, native histogram
/// series.
pub type Parts = (
    Batch,
    Vec<(Labels, Exemplar)>,
    Vec<(Labels, Vec<(i64, Histogram)>)>,
);

impl Decoded {
    /// Pair each series with its labels, found or made by `resolve` from
    /// the label-set encodings.
    pub fn into_batch(
        self,
        resolve: impl FnOnce(&mut dyn Iterator<Item = &[u8]>) -> Vec<Labels>,
    ) -> Batch {
        self.into_parts(resolve).0
    }

    /// As [`Self::into_batch`], with the exemplars and native histogram
    /// samples and their series.
    pub fn into_parts(
        self,
        resolve: impl FnOnce(&mut dyn Iterator<Item = &[u8]>) -> Vec<Labels>,
    ) -> Parts {
        let keys = &self.keys;
        let mut encoded = self.series.iter().filter_map(|(k, _)| match k {
            Key::Encoded(r) => Some(&keys[r.clone()]),
            Key::Known(_) => None,
        });
        let mut resolved = resolve(&mut encoded).into_iter();
        let mut labels = Vec::with_capacity(self.series.len());
        for (k, _) in &self.series {
            match k {
                Key::Known(l) => labels.push(l.clone()),
                Key::Encoded(_) => match resolved.next() {
                    Some(l) => labels.push(l),
                    None => break,
                },
            }
        }
        if let Some(cache) = &self.cache {
            let runs = &self.runs;
            cache.learn(
                self.learn
                    .iter()
                    .filter_map(|(r, i)| Some((&runs[r.clone()], labels.get(*i)?.clone()))),
            );
        }
        let exemplars = self
            .exemplars
            .into_iter()
            .filter_map(|(i, e)| Some((labels.get(i)?.clone(), e)))
            .collect();
        let histograms = self
            .histograms
            .into_iter()
            .filter_map(|(i, h)| Some((labels.get(i)?.clone(), h)))
            .collect();
        let batch = labels
            .into_iter()
            .zip(self.series)
            .map(|(l, (_, samples))| (l, samples))
            .collect();
        (batch, exemplars, histograms)
    }

    /// Take series `i` (its label `pairs`, sorted here if the sender did
    /// not, and `samples`), or its problem.
    pub(super) fn add(
        &mut self,
        i: usize,
        pairs: &mut Vec<(&str, &str)>,
        samples: Vec<(i64, f64)>,
        exemplars: Vec<Exemplar>,
        histograms: Vec<HistogramSample>,
    ) {
        self.add_read(i, pairs, (samples, exemplars, histograms), None);
    }

    /// As [`Self::add`], learning the labels by `run` (their wire bytes)
    /// once they are resolved, if this request has a cache.
    fn add_read(
        &mut self,
        i: usize,
        pairs: &mut Vec<(&str, &str)>,
        data: SeriesData,
        run: Option<&[u8]>,
    ) {
        // Remote write requires sorted labels; sort if a sender did not.
        if !pairs.is_sorted_by(|a, b| a.0 <= b.0) {
            pairs.sort_by(|a, b| a.0.cmp(b.0));
        }
        match label_problem(pairs) {
            Some(p) => self.problems.push(format!("timeseries[{i}]: {p}")),
            None => {
                // An empty value means no such label.
                pairs.retain(|(_, v)| !v.is_empty());
                let start = self.keys.len();
                keel_series::labels::encode_sorted(pairs.iter().copied(), &mut self.keys);
                if let Some(run) = run.filter(|_| self.cache.is_some()) {
                    let from = self.runs.len();
                    self.runs.extend_from_slice(run);
                    self.learn.push((from..self.runs.len(), self.series.len()));
                }
                self.push(i, Key::Encoded(start..self.keys.len()), data);
            }
        }
    }

    /// Take series `i`, its labels had.
    fn push(&mut self, i: usize, key: Key, (samples, exemplars, histograms): SeriesData) {
        let at = self.series.len();
        self.exemplars
            .extend(exemplars.into_iter().map(|e| (at, e)));
        let mut kept = Vec::with_capacity(histograms.len());
        for h in histograms {
            match h {
                Ok(h) => kept.push(h),
                Err(why) => self.problems.push(format!("timeseries[{i}]: {why}")),
            }
        }
        if !kept.is_empty() {
            self.histograms.push((at, kept));
        }
        self.series.push((key, samples));
    }

    /// Series that can be stored.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// True when no series can be stored.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }
}

/// A snappy-compressed body decompressed, at most `max_decoded` bytes.
pub(crate) fn decompress(body: &[u8], max_decoded: usize) -> Result<Vec<u8>, String> {
    let len = snap::raw::decompress_len(body)
        .map_err(|e| format!("body is not snappy-compressed: {e}"))?;
    if len > max_decoded {
        return Err(format!(
            "body decompresses to {len} bytes, more than {max_decoded}"
        ));
    }
    snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| format!("body is not snappy-compressed: {e}"))
}

/// Decode a snappy-compressed `WriteRequest` without copying its strings,
/// reporting the first problem of every series that cannot be stored.
pub fn decode(body: &[u8], max_decoded: usize) -> Result<Decoded, String> {
    decode_with(body, max_decoded, None)
}

/// As [`decode`], taking label sets seen before from `cache` by their
/// bytes, and learning the others there once they are resolved.
pub fn decode_with(
    body: &[u8],
    max_decoded: usize,
    cache: Option<&Arc<super::label_cache::LabelCache>>,
) -> Result<Decoded, String> {
    let raw = decompress(body, max_decoded)?;
    let mut w = Wire::new(&raw);
    let mut out = Decoded {
        cache: cache.cloned(),
        ..Decoded::default()
    };
    let known = cache.map(|c| c.read());
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    let mut i = 0usize;
    while !w.done() {
        match w.key()? {
            (1, 2) => {
                pairs.clear();
                let (data, labelled) = time_series(w.message()?, &mut pairs, known.as_deref())?;
                match labelled {
                    Labelled::Known(l) => out.push(i, Key::Known(l), data),
                    Labelled::Read(run) => out.add_read(i, &mut pairs, data, run),
                }
                i += 1;
            }
            (3, 2) => out.metadata.push(metric_metadata(w.message()?)?),
            (_, wire) => w.skip(wire)?,
        }
    }
    Ok(out)
}

/// Remote write's metric types, by their number (1.0 and 2.0 alike).
pub(super) const TYPES: [&str; 8] = [
    "unknown",
    "counter",
    "gauge",
    "histogram",
    "gaugehistogram",
    "summary",
    "info",
    "stateset",
];

/// One `prometheus.MetricMetadata`: (family, type, help, unit).
fn metric_metadata(mut w: Wire<'_>) -> Result<(String, keel_metricstore::metadata::Meta), String> {
    let mut family = "";
    let mut meta = keel_metricstore::metadata::Meta {
        kind: TYPES[0].into(),
        help: String::new(),
        unit: String::new(),
    };
    while !w.done() {
        match w.key()? {
            (1, 0) => {
                let t = w.varint()?;
                meta.kind = TYPES
                    .get(usize::try_from(t).unwrap_or(usize::MAX))
                    .unwrap_or(&TYPES[0])
                    .to_string();
            }
            (2, 2) => family = w.string()?,
            (4, 2) => meta.help = w.string()?.to_owned(),
            (5, 2) => meta.unit = w.string()?.to_owned(),
            (_, wire) => w.skip(wire)?,
        }
    }
    Ok((family.to_owned(), meta))
}

#[derive(Clone)]
struct Rw {
    store: Arc<Store>,
    max_decoded: usize,
    /// Requests being decoded or waiting for a worker; more wait here
    /// (Prometheus' remote-write shards retry slow requests anyway), so
    /// the bodies held stay bounded.
    queue: Arc<tokio::sync::Semaphore>,
    workers: Workers,
    stats: Arc<super::http::IngestStats>,
    /// Time for the senders' quotas.
    clock: keel_core::clock::SharedClock,
    /// Label sets sent before, by their bytes.
    labels: Arc<super::label_cache::LabelCache>,
}

/// The remote-write route (`stats` counts what the limits refuse).
pub fn routes(
    store: Arc<Store>,
    max_body: usize,
    max_decoded: usize,
    workers: Workers,
    stats: Arc<super::http::IngestStats>,
    clock: keel_core::clock::SharedClock,
) -> keel_http::Routes {
    keel_http::Routes::new()
        .route("/api/v1/write", post(write))
        .map(|r| {
            r.layer(DefaultBodyLimit::max(max_body)).with_state(Rw {
                store,
                max_decoded,
                queue: Arc::new(tokio::sync::Semaphore::new(64)),
                workers,
                stats,
                clock,
                labels: Arc::new(super::label_cache::LabelCache::new()),
            })
        })
}

async fn write(
    State(rw): State<Rw>,
    quota: Option<axum::Extension<Arc<keel_core::quota::Quota>>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let v2 = match super::remote_write_v2::is_v2(content_type) {
        Ok(v2) => v2,
        Err(e) => return (StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("{e}\n")).into_response(),
    };
    let Ok(_turn) = rw.queue.clone().acquire_owned().await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    };
    let workers = rw.workers.clone();
    let work = workers
        .run(move || {
            let decoded = if v2 {
                super::remote_write_v2::decode(&body, rw.max_decoded)
            } else {
                decode_with(&body, rw.max_decoded, Some(&rw.labels))
            };
            let mut decoded = decoded.map_err(|m| (StatusCode::BAD_REQUEST, m, 0))?;
            let mut problems = std::mem::take(&mut decoded.problems);
            let metadata = std::mem::take(&mut decoded.metadata);
            let (mut batch, exemplars, histograms) =
                decoded.into_parts(|keys| rw.store.resolve_labels(keys));
            // A series of histograms only has no float samples to store
            // (nor to count against the series limit).
            batch.retain(|(_, samples)| !samples.is_empty());
            let quota = quota.as_ref().map(|q| &*q.0);
            let too_many = |o: keel_core::quota::OverRate| {
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    o.message.clone(),
                    o.retry_after_secs(),
                )
            };
            // Native histogram samples count against the rate as samples do.
            let histogram_items = super::quota::histogram_samples(&histograms);
            super::quota::take(quota, histogram_items, rw.clock.now_ms()).map_err(too_many)?;
            let items = super::quota::samples(&batch) + histogram_items;
            let dropped = super::quota::charge(quota, &mut batch, rw.clock.now_ms(), &rw.stats)
                .map_err(|o| {
                    super::quota::refund(quota, histogram_items);
                    too_many(o)
                })?;
            problems.extend(dropped.map(|(_, why)| why));
            let arrival = rw.store.arrival(&batch);
            let appended = rw.store.append(batch).map_err(|e| {
                super::quota::refund(quota, items);
                (StatusCode::SERVICE_UNAVAILABLE, e.to_string(), 1)
            })?;
            let native = if histograms.is_empty() {
                keel_metricstore::Appended::default()
            } else {
                rw.store.append_histograms(histograms).map_err(|e| {
                    super::quota::refund(quota, histogram_items);
                    (StatusCode::SERVICE_UNAVAILABLE, e.to_string(), 1)
                })?
            };
            problems.extend(native.reasons());
            rw.store.mark_arrival(arrival);
            rw.store.metadata().record(&metadata);
            let exemplars = super::store_exemplars(&rw.store, exemplars, &rw.stats);
            rw.stats
                .samples_over_limits
                .fetch_add(appended.over_limits(), std::sync::atomic::Ordering::Relaxed);
            problems.extend(appended.reasons());
            Ok::<_, (StatusCode, String, u64)>((
                problems,
                (appended.accepted, native.accepted),
                exemplars,
            ))
        })
        .await;
    // Remote write 2.0 says what was written, so a sender can tell.
    let written = |(n, h): (u64, u64), exemplars: u64| {
        [
            ("x-prometheus-remote-write-samples-written", n.to_string()),
            (
                "x-prometheus-remote-write-histograms-written",
                h.to_string(),
            ),
            (
                "x-prometheus-remote-write-exemplars-written",
                exemplars.to_string(),
            ),
        ]
    };
    match work {
        Ok(Ok((problems, n, e))) if problems.is_empty() => {
            if v2 {
                (StatusCode::NO_CONTENT, written(n, e)).into_response()
            } else {
                StatusCode::NO_CONTENT.into_response()
            }
        }
        Ok(Ok((problems, n, e))) => {
            let msg = format!("some samples were not stored: {}\n", problems.join("; "));
            if v2 {
                (StatusCode::BAD_REQUEST, written(n, e), msg).into_response()
            } else {
                (StatusCode::BAD_REQUEST, msg).into_response()
            }
        }
        // A store that cannot write (disk full), or a sender over its
        // rate, is a retry later: Prometheus' remote write retries a 503
        // and (with retry_on_http_429) a 429.
        Ok(Err((status, msg, wait))) if wait > 0 => (
            status,
            [(axum::http::header::RETRY_AFTER, wait.to_string())],
            format!("{msg}\n"),
        )
            .into_response(),
        Ok(Err((status, msg, _))) => (status, format!("{msg}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn snappy(raw: &[u8]) -> Vec<u8> {
        snap::raw::Encoder::new()
            .compress_vec(raw)
            .unwrap_or_default()
    }

    #[test]
    fn malformed_requests_name_the_byte_offset() {
        let req = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label {
                    name: NAME.into(),
                    value: "up".into(),
                }],
                samples: vec![Sample {
                    value: 1.0,
                    timestamp: 5,
                }],
            }],
        };
        let raw = req.encode_to_vec();
        let cut = decode(&snappy(&raw[..raw.len() - 3]), 1 << 20).expect_err("truncated");
        assert!(cut.contains("at byte 2: length runs past the end"), "{cut}");
        let mut bad = raw.clone();
        let at = bad
            .windows(2)
            .position(|w| w == b"up")
            .expect("value bytes");
        bad[at] = 0xff;
        let utf8 = decode(&snappy(&bad), 1 << 20).expect_err("invalid UTF-8");
        assert_eq!(
            utf8,
            format!("malformed protobuf WriteRequest at byte {at}: string is not valid UTF-8")
        );
        let ok = decode(&snappy(&raw), 1 << 20).expect("valid");
        assert_eq!(ok.len(), 1);
        // Known labels change no error: a bad label before a field of an
        // unknown wire type is still named for its UTF-8.
        let cache = Arc::new(super::super::label_cache::LabelCache::new());
        let mut odd = bad.clone();
        odd.extend([0x1b]);
        odd[1] += 1;
        for body in [&raw[..raw.len() - 3], &bad[..], &odd[..]] {
            assert_eq!(
                decode_with(&snappy(body), 1 << 20, Some(&cache)).map(|d| d.len()),
                decode(&snappy(body), 1 << 20).map(|d| d.len())
            );
        }
        let odd = decode(&snappy(&odd), 1 << 20).expect_err("invalid UTF-8");
        assert!(odd.contains("not valid UTF-8"), "{odd}");
        // Labels known, then a field of an unknown wire type after them:
        // named at the same byte as without the cache.
        decode_with(&snappy(&raw), 1 << 20, Some(&cache))
            .expect("valid")
            .into_batch(|keys| keys.map(Labels::from_encoded).collect());
        assert_eq!(cache.read().len(), 1, "learnt");
        let mut late = raw.clone();
        late.extend([0x1b]);
        late[1] += 1;
        let want = decode(&snappy(&late), 1 << 20).expect_err("wire type 3");
        assert!(want.contains("unsupported wire type 3"), "{want}");
        assert_eq!(
            decode_with(&snappy(&late), 1 << 20, Some(&cache)).expect_err("wire type 3"),
            want
        );
    }

    /// A `TimeSeries` written field by field: `Ok` a label, `Err` a
    /// sample, in the order given.
    fn series_bytes(fields: &[Result<(&str, &str), f64>]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in fields {
            let (tag, body) = match f {
                Ok((n, v)) => (
                    0x0a,
                    Label {
                        name: (*n).into(),
                        value: (*v).into(),
                    }
                    .encode_to_vec(),
                ),
                Err(value) => (
                    0x12,
                    Sample {
                        value: *value,
                        timestamp: 1_000,
                    }
                    .encode_to_vec(),
                ),
            };
            out.push(tag);
            prost::encoding::encode_varint(body.len() as u64, &mut out);
            out.extend(body);
        }
        out
    }

    #[test]
    fn label_sets_sent_again_are_known_by_their_bytes_and_read_the_same() {
        let series = [
            // In order, first: learnt.
            series_bytes(&[Ok(("__name__", "a")), Ok(("job", "x")), Err(1.0)]),
            // Unsorted: learnt, and known sorted.
            series_bytes(&[Ok(("job", "y")), Ok(("__name__", "b")), Err(2.0)]),
            // A label after a sample: not one run, read every time.
            series_bytes(&[Ok(("__name__", "c")), Err(3.0), Ok(("job", "z"))]),
            // No name: refused every time, never learnt.
            series_bytes(&[Ok(("job", "w")), Err(4.0)]),
            // An empty value: no such label.
            series_bytes(&[Ok(("__name__", "d")), Ok(("job", "")), Err(5.0)]),
            // Opens with the first one's run, known from round 1 on, but
            // has one more label after its sample: read whole.
            series_bytes(&[
                Ok(("__name__", "a")),
                Ok(("job", "x")),
                Err(6.0),
                Ok(("zone", "q")),
            ]),
        ];
        let mut raw = Vec::new();
        for s in &series {
            raw.push(0x0a);
            prost::encoding::encode_varint(s.len() as u64, &mut raw);
            raw.extend(s);
        }
        let body = snappy(&raw);
        let resolve = |keys: &mut dyn Iterator<Item = &[u8]>| -> Vec<Labels> {
            keys.map(Labels::from_encoded).collect()
        };
        let plain = decode(&body, 1 << 20).expect("decodes");
        let want_problems = plain.problems.clone();
        let want = plain.into_batch(resolve);
        assert_eq!(want.len(), 5, "{want:?}");
        assert_eq!(
            want[4].0,
            Labels::new(vec![("__name__", "a"), ("job", "x"), ("zone", "q")])
        );
        let cache = Arc::new(super::super::label_cache::LabelCache::new());
        for round in 0..3 {
            let d = decode_with(&body, 1 << 20, Some(&cache)).expect("decodes");
            let known = d
                .series
                .iter()
                .filter(|(k, _)| matches!(k, Key::Known(_)))
                .count();
            assert_eq!(known, if round == 0 { 0 } else { 3 }, "round {round}");
            assert_eq!(d.problems, want_problems, "round {round}");
            assert_eq!(d.into_batch(resolve), want, "round {round}");
            assert_eq!(cache.read().len(), 3, "round {round}");
        }
        assert_eq!(
            want[1].0,
            Labels::new(vec![("__name__", "b"), ("job", "y")])
        );
        assert_eq!(want[3].0, Labels::new(vec![("__name__", "d")]));
    }
}
