//! Load profiles: a request rate that is piecewise linear in time, and the
//! exact send time of every request under it.
//!
//! Request `n` (from 0) is sent at the time `t` where the integral of the
//! rate from 0 to `t` equals `n`. On a segment whose rate goes linearly
//! from `a` to `b` over `D`, the count after `x` is `a·x + (b−a)·x²/(2D)`,
//! solved here in the numerically stable form `x = 2m / (a + √(a² + 4km))`
//! with `k = (b−a)/(2D)`.

use std::path::Path;
use std::time::Duration;

use keel_core::config::{ConfigError, parse_yaml};
use serde::Deserialize;

/// One piece of a profile: the rate moves linearly from `from` to `to`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Segment {
    /// How long the piece lasts.
    pub duration: Duration,
    /// Requests per second at its start.
    pub from: f64,
    /// Requests per second at its end.
    pub to: f64,
}

impl Segment {
    /// Requests the segment contains (its rate integral).
    pub fn count(&self) -> f64 {
        (self.from + self.to) / 2.0 * self.duration.as_secs_f64()
    }
}

/// The built-in shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileKind {
    /// `rps` for the whole duration.
    Steady,
    /// Linearly from 0 to `rps` over the duration.
    Ramp,
    /// A day compressed into the duration: night at `rps/3.5`, peaks of
    /// +200 % (08–10), +150 % (12–13) and +250 % (18–20, reaching `rps`).
    Diurnal,
    /// `rps`, then 5 × `rps` for the middle fifth, then `rps` again.
    Spike,
}

/// A whole load shape, plus the read/write mix it asks for (if any).
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// The pieces, in order.
    pub segments: Vec<Segment>,
    /// Fraction of reads, when the profile file sets it.
    pub read_ratio: Option<f64>,
}

/// The diurnal shape: (hour of day, multiple of the night rate).
const DIURNAL: [(f64, f64); 12] = [
    (0.0, 1.0),
    (7.0, 1.0),
    (8.0, 3.0),
    (10.0, 3.0),
    (11.0, 1.0),
    (12.0, 2.5),
    (13.0, 2.5),
    (14.0, 1.0),
    (18.0, 3.5),
    (20.0, 3.5),
    (21.0, 1.0),
    (24.0, 1.0),
];

impl Profile {
    /// A built-in shape at `rps` over `duration`.
    pub fn builtin(kind: ProfileKind, rps: f64, duration: Duration) -> Self {
        let d = duration.as_secs_f64();
        let seg = |frac: f64, from: f64, to: f64| Segment {
            // A length beyond what a Duration holds saturates (and is
            // refused by whoever bounds it) rather than panicking.
            duration: Duration::try_from_secs_f64(d * frac).unwrap_or(Duration::MAX),
            from,
            to,
        };
        let segments = match kind {
            ProfileKind::Steady => vec![seg(1.0, rps, rps)],
            ProfileKind::Ramp => vec![seg(1.0, 0.0, rps)],
            ProfileKind::Spike => vec![
                seg(0.4, rps, rps),
                seg(0.2, 5.0 * rps, 5.0 * rps),
                seg(0.4, rps, rps),
            ],
            ProfileKind::Diurnal => {
                let night = rps / 3.5;
                DIURNAL
                    .windows(2)
                    .map(|w| seg((w[1].0 - w[0].0) / 24.0, night * w[0].1, night * w[1].1))
                    .collect()
            }
        };
        Self {
            segments,
            read_ratio: None,
        }
    }

    /// Load a profile file (see [`ProfileFile`]); errors name file:line.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::from_yaml(&shown, &text)
    }

    /// Parse a profile from YAML text that came from `path`.
    pub fn from_yaml(path: &str, text: &str) -> Result<Self, ConfigError> {
        Self::from_parsed(path, parse_yaml(path, text)?)
    }

    /// Check a parsed profile from `path`; each problem names its line.
    pub fn from_parsed(path: &str, file: ProfileFile) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let mut segments = Vec::new();
        if file.segments.is_empty() {
            problems.push("segments: at least one segment is needed".to_owned());
        }
        for (i, s) in file.segments.iter().enumerate() {
            let at = format!("line {}: segments[{i}]", s.referenced.line());
            let v = &s.value;
            let duration = match keel_core::duration::parse(&v.duration) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => {
                    problems.push(format!("{at}.duration: must be more than 0"));
                    continue;
                }
                Err(e) => {
                    problems.push(format!("{at}.duration: {e}"));
                    continue;
                }
            };
            let (from, to) = match (v.rps, v.from, v.to) {
                (Some(r), None, None) => (r, r),
                (None, Some(a), Some(b)) => (a, b),
                _ => {
                    problems.push(format!("{at}: give either rps, or both from and to"));
                    continue;
                }
            };
            for (name, x) in [("from/rps", from), ("to/rps", to)] {
                if !x.is_finite() || x < 0.0 {
                    problems.push(format!("{at}.{name}: must be a finite rate ≥ 0, got {x}"));
                }
            }
            segments.push(Segment { duration, from, to });
        }
        if let Some(r) = file.read_ratio
            && !(0.0..=1.0).contains(&r)
        {
            problems.push(format!("read_ratio: must be between 0 and 1, got {r}"));
        }
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            });
        }
        Ok(Self {
            segments,
            read_ratio: file.read_ratio,
        })
    }

    /// Total length.
    pub fn duration(&self) -> Duration {
        self.segments
            .iter()
            .fold(Duration::ZERO, |a, s| a.saturating_add(s.duration))
    }

    /// Requests the whole profile contains (the rate integral, floored at
    /// the end: a request due exactly at the end is not sent).
    pub fn expected_requests(&self) -> f64 {
        self.segments.iter().map(Segment::count).sum()
    }

    /// The rate at `t` seconds from the start.
    pub fn rate_at(&self, t: f64) -> f64 {
        let mut start = 0.0;
        for s in &self.segments {
            let d = s.duration.as_secs_f64();
            if t < start + d {
                return s.from + (s.to - s.from) * (t - start) / d;
            }
            start += d;
        }
        0.0
    }

    /// Send offsets from the start, one per request, in order.
    pub fn send_offsets(&self) -> SendOffsets<'_> {
        SendOffsets {
            segments: &self.segments,
            index: 0,
            seg_start: 0.0,
            count_before: 0.0,
            n: 0,
        }
    }
}

/// Iterator over the send offsets of a [`Profile`].
#[derive(Debug, Clone)]
pub struct SendOffsets<'a> {
    segments: &'a [Segment],
    index: usize,
    seg_start: f64,
    count_before: f64,
    n: u64,
}

impl Iterator for SendOffsets<'_> {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        loop {
            let s = self.segments.get(self.index)?;
            let m = self.n as f64 - self.count_before;
            let total = s.count();
            // Guard against rounding putting a request a hair past the end.
            if m < total - 1e-9 {
                let d = s.duration.as_secs_f64();
                let a = s.from;
                let k = (s.to - s.from) / (2.0 * d);
                let x = if m <= 0.0 {
                    0.0
                } else {
                    2.0 * m / (a + (a * a + 4.0 * k * m).max(0.0).sqrt())
                };
                self.n += 1;
                return Some(Duration::from_secs_f64(self.seg_start + x.min(d)));
            }
            self.count_before += total;
            self.seg_start += s.duration.as_secs_f64();
            self.index += 1;
        }
    }
}

/// The YAML form of a profile file:
///
/// ```yaml
/// segments:
///   - duration: 30s
///     rps: 100        # constant rate
///   - duration: 1m
///     from: 100       # linear ramp
///     to: 800
/// read_ratio: 0.8     # optional
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileFile {
    /// The pieces.
    pub segments: Vec<serde_saphyr::Spanned<SegmentFile>>,
    /// Fraction of reads.
    #[serde(default)]
    pub read_ratio: Option<f64>,
}

/// One segment as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentFile {
    /// e.g. `30s`.
    pub duration: String,
    /// Constant rate.
    #[serde(default)]
    pub rps: Option<f64>,
    /// Start rate of a ramp.
    #[serde(default)]
    pub from: Option<f64>,
    /// End rate of a ramp.
    #[serde(default)]
    pub to: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rate integral from 0 to `t`, computed directly from the segments.
    fn cumulative(p: &Profile, t: f64) -> f64 {
        let mut start = 0.0;
        let mut acc = 0.0;
        for s in &p.segments {
            let d = s.duration.as_secs_f64();
            if t >= start + d {
                acc += s.count();
                start += d;
                continue;
            }
            let x = t - start;
            return acc + s.from * x + (s.to - s.from) * x * x / (2.0 * d);
        }
        acc
    }

    fn check_exact(p: &Profile) -> Vec<f64> {
        let times: Vec<f64> = p.send_offsets().map(|d| d.as_secs_f64()).collect();
        for (n, t) in times.iter().enumerate() {
            let c = cumulative(p, *t);
            assert!(
                (c - n as f64).abs() < 1e-6,
                "request {n} at {t}: integral {c}"
            );
        }
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "send times go back");
        let expected = p.expected_requests();
        assert!(
            (times.len() as f64 - expected.ceil()).abs() <= 1.0,
            "{} requests for an integral of {expected}",
            times.len()
        );
        times
    }

    #[test]
    fn steady_sends_every_1_over_rps() {
        let p = Profile::builtin(ProfileKind::Steady, 100.0, Duration::from_secs(2));
        let t = check_exact(&p);
        assert_eq!(t.len(), 200);
        for (n, x) in t.iter().enumerate() {
            assert!((x - n as f64 / 100.0).abs() < 1e-9);
        }
    }

    #[test]
    fn ramp_follows_the_square_root_law() {
        // Rate R·t/D ⇒ count R·t²/(2D) ⇒ t_n = √(2Dn/R).
        let p = Profile::builtin(ProfileKind::Ramp, 100.0, Duration::from_secs(10));
        let t = check_exact(&p);
        assert_eq!(t.len(), 500);
        for (n, x) in t.iter().enumerate() {
            assert!((x - (2.0 * 10.0 * n as f64 / 100.0).sqrt()).abs() < 1e-9);
        }
    }

    #[test]
    fn spike_is_five_times_the_base_in_the_middle_fifth() {
        let p = Profile::builtin(ProfileKind::Spike, 10.0, Duration::from_secs(100));
        let t = check_exact(&p);
        let in_spike = t.iter().filter(|x| (40.0..60.0).contains(*x)).count();
        assert_eq!(in_spike, 1000);
        assert_eq!(t.len(), 400 + 1000 + 400);
    }

    #[test]
    fn diurnal_peaks_where_the_guides_say() {
        let p = Profile::builtin(ProfileKind::Diurnal, 35.0, Duration::from_secs(2400));
        check_exact(&p);
        let hour = 100.0; // 24 h in 2,400 s
        assert!((p.rate_at(3.0 * hour) - 10.0).abs() < 1e-9, "night");
        assert!(
            (p.rate_at(9.0 * hour) - 30.0).abs() < 1e-9,
            "+200 % at 9:00"
        );
        assert!(
            (p.rate_at(12.5 * hour) - 25.0).abs() < 1e-9,
            "+150 % at 12:30"
        );
        assert!(
            (p.rate_at(19.0 * hour) - 35.0).abs() < 1e-9,
            "+250 % at 19:00"
        );
    }

    #[test]
    fn file_profile_ramps_and_holds() {
        let p = Profile::from_yaml(
            "p.yaml",
            "segments:\n  - duration: 2s\n    rps: 5\n  - duration: 4s\n    from: 5\n    to: 15\nread_ratio: 0.5\n",
        )
        .expect("parses");
        assert_eq!(p.read_ratio, Some(0.5));
        let t = check_exact(&p);
        assert_eq!(t.len(), 10 + 40);
    }

    #[test]
    fn bad_profile_file_names_every_problem_with_its_line() {
        let err = Profile::from_yaml(
            "p.yaml",
            "segments:\n  - duration: 2s\n    rps: -5\n  - duration: soon\n    rps: 1\n  - duration: 1s\n    rps: 1\n    from: 2\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("line 2: segments[0].from/rps"), "{text}");
        assert!(text.contains("line 4: segments[1].duration"), "{text}");
        assert!(
            text.contains("line 6: segments[2]: give either rps"),
            "{text}"
        );
        let err =
            Profile::from_yaml("p.yaml", "segments:\n  - duration: 2s\n    rsp: 5\n").unwrap_err();
        assert!(err.to_string().starts_with("p.yaml:3:"), "{err}");
    }
}
