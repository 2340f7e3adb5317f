//! Making recorded samples visible when they arrived: each sample's
//! visibility time is the arrival of the first batch from its source
//! (`job`, `instance`) whose newest sample is at least as new. A series
//! whose source no arrival names (derived series, remote write from
//! elsewhere) follows every arrival; with no arrivals at all, a sample is
//! visible at its own time.

use std::collections::BTreeMap;

use keel_core::marks::Mark;
use keel_incident::bundle::Series;
use keel_series::labels::Labels;

/// Arrival times with the newest sample time seen by then, rising.
#[derive(Default)]
struct Steps(Vec<(i64, i64)>);

impl Steps {
    fn from(mut arrivals: Vec<(i64, i64)>) -> Self {
        arrivals.sort();
        let mut newest = i64::MIN;
        Steps(
            arrivals
                .into_iter()
                .map(|(at, t)| {
                    newest = newest.max(t);
                    (at, newest)
                })
                .collect(),
        )
    }

    /// When a sample at `t` had arrived.
    fn visible(&self, t: i64) -> i64 {
        let i = self.0.partition_point(|(_, newest)| *newest < t);
        self.0.get(i).map_or(t, |(at, _)| *at)
    }
}

/// The recorded samples, in the order they become visible.
pub struct Feed {
    labels: Vec<Labels>,
    /// (visible at, series, time, value), sorted.
    items: Vec<(i64, u32, i64, f64)>,
    next: usize,
}

impl Feed {
    /// The feed of `series` (those `skip` keeps out are left out) timed by
    /// the arrivals among `marks`.
    pub fn new(series: &[Series], marks: &[Mark], skip: impl Fn(&Series) -> bool) -> Self {
        let mut per_source: BTreeMap<(&str, &str), Vec<(i64, i64)>> = BTreeMap::new();
        let mut all = Vec::new();
        for m in marks {
            if let Mark::Arrival { at_ms, sources } = m {
                for (job, instance, newest) in sources {
                    per_source
                        .entry((job, instance))
                        .or_default()
                        .push((*at_ms, *newest));
                    all.push((*at_ms, *newest));
                }
            }
        }
        let global = Steps::from(all);
        let steps: BTreeMap<(&str, &str), Steps> = per_source
            .into_iter()
            .map(|(k, v)| (k, Steps::from(v)))
            .collect();
        let mut labels = Vec::new();
        let mut items = Vec::new();
        for s in series.iter().filter(|s| !skip(s)) {
            let i = labels.len() as u32;
            let job = s.labels.get("job").map_or("", String::as_str);
            let instance = s.labels.get("instance").map_or("", String::as_str);
            let st = steps.get(&(job, instance)).unwrap_or(&global);
            labels.push(Labels::new(s.labels.iter().collect()));
            items.extend(s.samples.iter().map(|(t, v)| (st.visible(*t), i, *t, *v)));
        }
        items.sort_unstable_by_key(|a| (a.0, a.1, a.2));
        Self {
            labels,
            items,
            next: 0,
        }
    }

    /// Samples in the feed.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when it holds no sample.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Every sample visible by `t` not handed out yet, as a store batch.
    pub fn until(&mut self, t: i64) -> Vec<(Labels, Vec<(i64, f64)>)> {
        let end = self.next + self.items[self.next..].partition_point(|it| it.0 <= t);
        let mut due: Vec<(u32, i64, f64)> = self.items[self.next..end]
            .iter()
            .map(|(_, s, t, v)| (*s, *t, *v))
            .collect();
        self.next = end;
        due.sort_unstable_by_key(|(s, t, _)| (*s, *t));
        let mut out: Vec<(Labels, Vec<(i64, f64)>)> = Vec::new();
        let mut last = None;
        for (s, t, v) in due {
            if last != Some(s) {
                out.push((self.labels[s as usize].clone(), Vec::new()));
                last = Some(s);
            }
            if let Some((_, samples)) = out.last_mut() {
                samples.push((t, v));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(job: &str, instance: &str, ts: &[i64]) -> Series {
        Series {
            labels: [
                ("__name__".to_owned(), "x".to_owned()),
                ("job".to_owned(), job.to_owned()),
                ("instance".to_owned(), instance.to_owned()),
            ]
            .into(),
            samples: ts.iter().map(|t| (*t, 1.0)).collect(),
        }
    }

    #[test]
    fn a_sample_is_visible_when_its_sources_batch_arrived() {
        let marks = vec![
            Mark::Arrival {
                at_ms: 1_300,
                sources: vec![("a".into(), "1".into(), 1_000)],
            },
            Mark::Arrival {
                at_ms: 1_050,
                sources: vec![("b".into(), "1".into(), 1_000)],
            },
        ];
        let s = [
            series("a", "1", &[1_000, 2_000]),
            series("b", "1", &[1_000]),
        ];
        let mut f = Feed::new(&s, &marks, |_| false);
        assert_eq!(f.len(), 3);
        // b's batch arrived at 1.05 s, a's at 1.3 s.
        assert_eq!(f.until(1_100).len(), 1);
        assert_eq!(f.until(1_100)[..], []);
        let at = f.until(1_300);
        assert_eq!(at.len(), 1);
        assert_eq!(at[0].0.get("job"), "a");
        // a's 2 s sample: no arrival covers it; visible at its own time.
        assert!(f.until(1_999).is_empty());
        assert_eq!(f.until(2_000).len(), 1);
    }
}
