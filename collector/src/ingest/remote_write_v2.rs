//! Prometheus remote write 2.0 on `POST /api/v1/write`, chosen by the
//! content type `application/x-protobuf;proto=io.prometheus.write.v2.Request`
//! (1.0 is `proto=prometheus.WriteRequest`, or no `proto`): a symbol
//! table, and series whose labels, help and unit are references into it.
//! Read in place with remote write 1.0's reader, errors naming the byte;
//! each series' metadata kept as metadata, its native histograms stored
//! as native histograms (custom-bucket ones are named in the 400).

use super::remote_write::{
    Decoded, HistogramSample, TYPES, Wire, decompress, exemplar, histogram, sample,
};
use keel_metricstore::exemplars::{Exemplar, too_long};
use keel_series::labels::Labels;

/// The `proto` parameter of remote write 2.0's content type.
pub const PROTO: &str = "io.prometheus.write.v2.Request";

/// Which remote write a `Content-Type` asks for: `Ok(true)` for 2.0,
/// `Ok(false)` for 1.0 (also when absent), an error for anything else.
pub fn is_v2(content_type: Option<&str>) -> Result<bool, String> {
    let Some(ct) = content_type else {
        return Ok(false);
    };
    let mut parts = ct.split(';').map(str::trim);
    let media = parts.next().unwrap_or_default();
    if !media.is_empty() && !media.eq_ignore_ascii_case("application/x-protobuf") {
        return Err(format!(
            "content type {ct:?}: remote write takes application/x-protobuf"
        ));
    }
    for p in parts {
        if let Some((k, v)) = p.split_once('=')
            && k.trim().eq_ignore_ascii_case("proto")
        {
            return match v.trim().trim_matches('"') {
                PROTO => Ok(true),
                "prometheus.WriteRequest" => Ok(false),
                other => Err(format!(
                    "content type {ct:?}: proto {other:?} is neither prometheus.WriteRequest nor {PROTO}"
                )),
            };
        }
    }
    Ok(false)
}

/// Decode a snappy-compressed remote write 2.0 `Request` without copying
/// its strings: every storable series, the problem of each other one,
/// and each series' metadata.
pub fn decode(body: &[u8], max_decoded: usize) -> Result<Decoded, String> {
    let raw = decompress(body, max_decoded)?;
    // The symbols first: a sender may write them after the series.
    let mut symbols: Vec<&str> = Vec::new();
    let mut w = Wire::new(&raw);
    while !w.done() {
        match w.key()? {
            (4, 2) => symbols.push(w.string()?),
            (_, wire) => w.skip(wire)?,
        }
    }
    if symbols.first().is_some_and(|s| !s.is_empty()) {
        return Err(
            "malformed remote write 2.0 request: symbols[0] must be the empty string".into(),
        );
    }
    let mut out = Decoded::default();
    let mut w = Wire::new(&raw);
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    let mut i = 0usize;
    while !w.done() {
        match w.key()? {
            (5, 2) => {
                pairs.clear();
                match series(w.message()?, &symbols, &mut pairs)? {
                    Ok((samples, meta, exemplars, histograms)) => {
                        if let Some(mut meta) = meta {
                            let name = pairs
                                .iter()
                                .find(|(k, _)| *k == keel_series::labels::NAME)
                                .map(|(_, v)| (*v).to_owned())
                                .unwrap_or_default();
                            meta.0 = family(&name, &meta.1.kind).to_owned();
                            out.metadata.push(meta);
                        }
                        out.add(i, &mut pairs, samples, exemplars, histograms);
                    }
                    Err(problem) => out.problems.push(format!("timeseries[{i}]: {problem}")),
                }
                i += 1;
            }
            (_, wire) => w.skip(wire)?,
        }
    }
    Ok(out)
}

/// The family a series belongs to: remote write 2.0 states metadata per
/// series, so a histogram's comes on `x_bucket`, `x_sum` and `x_count`,
/// all of family `x`, as `/api/v1/metadata` lists it.
fn family<'a>(series: &'a str, kind: &str) -> &'a str {
    let suffixes: &[&str] = match kind {
        "histogram" => &["_bucket", "_sum", "_count"],
        "gaugehistogram" => &["_bucket", "_gsum", "_gcount"],
        "summary" => &["_sum", "_count"],
        "info" => &["_info"],
        _ => &[],
    };
    suffixes
        .iter()
        .find_map(|s| series.strip_suffix(s))
        .filter(|f| !f.is_empty())
        .unwrap_or(series)
}

/// A series' metadata as (family, meta) with the family filled by the
/// caller.
type Stated = (String, keel_metricstore::metadata::Meta);

/// A series' samples, metadata, exemplars and histogram samples.
type SeriesParts = (
    Vec<(i64, f64)>,
    Option<Stated>,
    Vec<Exemplar>,
    Vec<HistogramSample>,
);

/// One `TimeSeries`: its label pairs into `pairs`, and its samples and
/// metadata, or (inner error) why it cannot be stored; the outer error
/// is a malformed request.
#[allow(clippy::type_complexity)]
fn series<'a>(
    mut w: Wire<'a>,
    symbols: &[&'a str],
    pairs: &mut Vec<(&'a str, &'a str)>,
) -> Result<Result<SeriesParts, String>, String> {
    let mut refs: Vec<u64> = Vec::new();
    let mut samples = Vec::new();
    // Exemplars with their label references, resolved once all is read.
    let mut exemplar_refs: Vec<(Vec<u64>, f64, i64)> = Vec::new();
    let mut meta: Option<Stated> = None;
    let mut histograms = Vec::new();
    while !w.done() {
        match w.key()? {
            // Packed, as senders write them, or one at a time.
            (1, 2) => {
                let mut packed = w.message()?;
                while !packed.done() {
                    refs.push(packed.varint()?);
                }
            }
            (1, 0) => refs.push(w.varint()?),
            (2, 2) => samples.push(sample(w.message()?)?),
            (4, 2) => {
                let mut lrefs = Vec::new();
                let (v, t) = exemplar(w.message()?, |e, field, wire| match (field, wire) {
                    (1, 2) => {
                        let mut packed = e.message()?;
                        while !packed.done() {
                            lrefs.push(packed.varint()?);
                        }
                        Ok(true)
                    }
                    (1, 0) => {
                        lrefs.push(e.varint()?);
                        Ok(true)
                    }
                    _ => Ok(false),
                })?;
                exemplar_refs.push((lrefs, v, t));
            }
            (3, 2) => histograms.push(histogram(w.message()?)?),
            (5, 2) => {
                let mut m = w.message()?;
                let (mut kind, mut help, mut unit) = (0u64, 0u64, 0u64);
                while !m.done() {
                    match m.key()? {
                        (1, 0) => kind = m.varint()?,
                        (3, 0) => help = m.varint()?,
                        (4, 0) => unit = m.varint()?,
                        (_, wire) => m.skip(wire)?,
                    }
                }
                let text = |r: u64| {
                    symbols
                        .get(usize::try_from(r).unwrap_or(usize::MAX))
                        .copied()
                };
                match (text(help), text(unit)) {
                    (Some(help), Some(unit)) => {
                        meta = Some((
                            String::new(),
                            keel_metricstore::metadata::Meta {
                                kind: TYPES
                                    .get(usize::try_from(kind).unwrap_or(usize::MAX))
                                    .unwrap_or(&TYPES[0])
                                    .to_string(),
                                help: help.to_owned(),
                                unit: unit.to_owned(),
                            },
                        ));
                    }
                    _ => {
                        return Ok(Err(format!(
                            "metadata refers past the {} symbols",
                            symbols.len()
                        )));
                    }
                }
            }
            (_, wire) => w.skip(wire)?,
        }
    }
    if !refs.len().is_multiple_of(2) {
        return Ok(Err(format!(
            "an odd number of label references ({})",
            refs.len()
        )));
    }
    let get = |r: u64| {
        symbols
            .get(usize::try_from(r).unwrap_or(usize::MAX))
            .copied()
    };
    for pair in refs.chunks(2) {
        match (get(pair[0]), get(pair[1])) {
            (Some(k), Some(v)) => pairs.push((k, v)),
            _ => {
                return Ok(Err(format!(
                    "label reference {} or {} is past the {} symbols",
                    pair[0],
                    pair[1],
                    symbols.len()
                )));
            }
        }
    }
    // An exemplar whose references are odd in number or past the symbols,
    // or whose labels are too long, is dropped: never its series' samples.
    let mut exemplars = Vec::with_capacity(exemplar_refs.len());
    for (lrefs, value, t) in exemplar_refs {
        let labels: Option<Vec<(&str, &str)>> = lrefs
            .chunks(2)
            .map(|p| Some((get(*p.first()?)?, get(*p.get(1)?)?)))
            .collect();
        if let Some(ls) = labels.filter(|ls| !too_long(ls.iter().copied())) {
            exemplars.push(Exemplar {
                labels: Labels::new(ls),
                value,
                t,
            });
        }
    }
    Ok(Ok((samples, meta, exemplars, histograms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histograms_series_state_the_family_metadata() {
        assert_eq!(family("lat_seconds_bucket", "histogram"), "lat_seconds");
        assert_eq!(family("lat_seconds_count", "summary"), "lat_seconds");
        assert_eq!(family("queue_gcount", "gaugehistogram"), "queue");
        assert_eq!(family("reqs_total", "counter"), "reqs_total");
        assert_eq!(family("up_count", "gauge"), "up_count");
        assert_eq!(family("_bucket", "histogram"), "_bucket");
    }

    /// Protobuf writers for hand-built requests.
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn field(tag: u64, bytes: &[u8], out: &mut Vec<u8>) {
        varint(tag << 3 | 2, out);
        varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }

    fn sample_bytes(v: f64, t: i64) -> Vec<u8> {
        let mut s = vec![(1 << 3) | 1];
        s.extend_from_slice(&v.to_bits().to_le_bytes());
        varint(2 << 3, &mut s);
        varint(t as u64, &mut s);
        s
    }

    fn request(symbols: &[&str], series: &[Vec<u8>]) -> Vec<u8> {
        let mut r = Vec::new();
        // Series before symbols: a reader must not depend on the order.
        for s in series {
            field(5, s, &mut r);
        }
        for s in symbols {
            field(4, s.as_bytes(), &mut r);
        }
        snap::raw::Encoder::new().compress_vec(&r).expect("snappy")
    }

    fn one_series(refs: &[u64], samples: &[(f64, i64)], meta: Option<(u64, u64, u64)>) -> Vec<u8> {
        let mut s = Vec::new();
        let mut packed = Vec::new();
        for r in refs {
            varint(*r, &mut packed);
        }
        field(1, &packed, &mut s);
        for (v, t) in samples {
            field(2, &sample_bytes(*v, *t), &mut s);
        }
        if let Some((kind, help, unit)) = meta {
            let mut m = Vec::new();
            varint(1 << 3, &mut m);
            varint(kind, &mut m);
            varint(3 << 3, &mut m);
            varint(help, &mut m);
            varint(4 << 3, &mut m);
            varint(unit, &mut m);
            field(5, &m, &mut s);
        }
        s
    }

    #[test]
    fn the_content_type_chooses_the_version() {
        assert_eq!(is_v2(None), Ok(false));
        assert_eq!(is_v2(Some("application/x-protobuf")), Ok(false));
        assert_eq!(
            is_v2(Some("application/x-protobuf;proto=prometheus.WriteRequest")),
            Ok(false)
        );
        assert_eq!(
            is_v2(Some(
                "application/x-protobuf; proto=io.prometheus.write.v2.Request"
            )),
            Ok(true)
        );
        assert!(
            is_v2(Some(
                "application/x-protobuf;proto=io.prometheus.write.v3.Request"
            ))
            .is_err()
        );
        assert!(is_v2(Some("application/json")).is_err());
    }

    #[test]
    fn symbols_labels_samples_and_metadata_are_read_and_bad_series_named() {
        let symbols = [
            "",
            "__name__",
            "http_requests_total",
            "job",
            "api",
            "Requests.",
            "bad",
        ];
        let body = request(
            &symbols,
            &[
                one_series(&[1, 2, 3, 4], &[(1.0, 1000), (2.0, 2000)], Some((1, 5, 0))),
                one_series(&[1, 2, 3], &[(1.0, 1000)], None),
                one_series(&[1, 2, 3, 99], &[(1.0, 1000)], None),
            ],
        );
        let d = decode(&body, 1 << 20).expect("decodes");
        assert_eq!(d.len(), 1);
        assert_eq!(d.problems.len(), 2, "{:?}", d.problems);
        assert!(
            d.problems[0].starts_with("timeseries[1]: an odd number"),
            "{:?}",
            d.problems
        );
        assert!(
            d.problems[1].starts_with("timeseries[2]: label reference"),
            "{:?}",
            d.problems
        );
        assert_eq!(d.metadata.len(), 1);
        assert_eq!(d.metadata[0].0, "http_requests_total");
        assert_eq!(
            (d.metadata[0].1.kind.as_str(), d.metadata[0].1.help.as_str()),
            ("counter", "Requests.")
        );
        let batch = d.into_batch(|keys| {
            keys.map(keel_series::labels::Labels::from_encoded)
                .collect()
        });
        assert_eq!(batch[0].0.get("job"), "api");
        assert_eq!(batch[0].1, [(1000, 1.0), (2000, 2.0)]);
        let no_empty_first = request(&["x"], &[]);
        assert!(
            decode(&no_empty_first, 1 << 20)
                .unwrap_err()
                .contains("symbols[0]")
        );
    }
}
