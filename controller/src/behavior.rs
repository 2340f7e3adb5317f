//! The HPA's `behavior`: per direction a stabilization window, rate
//! policies (`Pods` or `Percent` per period, measured from the count at
//! the start of each period) combined by `selectPolicy` (`Max`, `Min`,
//! `Disabled`), and a tolerance. Defaults are Kubernetes': scale up at
//! once by the larger of 4 instances or 100 % per 15 s; scale down after
//! a 300 s window by up to 100 % per 15 s; tolerance 0.1. Keel adds two
//! rules the HPA lacks (`Behavior::hpa` turns them off): no reversal of
//! direction inside the last move's stabilization window, and a
//! scale-down `burst_memory`.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a rate policy counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyKind {
    /// A number of instances.
    Pods,
    /// A percentage of the count at the period's start.
    Percent,
}

/// One rate policy: at most `value` change per `period`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatePolicy {
    /// `Pods` or `Percent`.
    #[serde(rename = "type")]
    pub kind: PolicyKind,
    /// How many instances, or what percentage.
    pub value: u32,
    /// Over how long.
    #[serde(with = "keel_core::duration")]
    pub period: Duration,
}

/// Which policy wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SelectPolicy {
    /// The one allowing the largest change (the default).
    #[default]
    Max,
    /// The one allowing the smallest change.
    Min,
    /// No change in this direction.
    Disabled,
}

/// One direction's rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// Recommendations over this window are considered: scaling up
    /// takes their minimum, scaling down their maximum.
    #[serde(with = "keel_core::duration")]
    pub stabilization_window: Duration,
    /// How the policies combine.
    #[serde(default)]
    pub select_policy: SelectPolicy,
    /// The rate policies.
    pub policies: Vec<RatePolicy>,
    /// A usage ratio within this of 1 changes nothing.
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
    /// Scale-down only (Keel's, not the HPA's): never below what the
    /// last burst (panic) needed within this long, so that a burst
    /// shortly after a quiet minute meets capacity. 0 turns it off.
    #[serde(default = "default_burst_memory", with = "keel_core::duration")]
    pub burst_memory: Duration,
}

fn default_tolerance() -> f64 {
    0.1
}

/// Keel's default memory of bursts when scaling down.
pub const DEFAULT_BURST_MEMORY: Duration = Duration::from_secs(600);

fn default_burst_memory() -> Duration {
    DEFAULT_BURST_MEMORY
}

impl Rules {
    /// Kubernetes' scale-up default.
    pub fn default_up() -> Self {
        Self {
            stabilization_window: Duration::ZERO,
            select_policy: SelectPolicy::Max,
            policies: vec![
                RatePolicy {
                    kind: PolicyKind::Pods,
                    value: 4,
                    period: Duration::from_secs(15),
                },
                RatePolicy {
                    kind: PolicyKind::Percent,
                    value: 100,
                    period: Duration::from_secs(15),
                },
            ],
            tolerance: default_tolerance(),
            burst_memory: DEFAULT_BURST_MEMORY,
        }
    }

    /// Kubernetes' scale-down default.
    pub fn default_down() -> Self {
        Self {
            stabilization_window: Duration::from_secs(300),
            select_policy: SelectPolicy::Max,
            policies: vec![RatePolicy {
                kind: PolicyKind::Percent,
                value: 100,
                period: Duration::from_secs(15),
            }],
            tolerance: default_tolerance(),
            burst_memory: DEFAULT_BURST_MEMORY,
        }
    }

    fn validate(&self, at: &str, problems: &mut Vec<String>) {
        if !(0.0..1.0).contains(&self.tolerance) {
            problems.push(format!("{at}.tolerance: must be in [0, 1)"));
        }
        if self.policies.is_empty() && self.select_policy != SelectPolicy::Disabled {
            problems.push(format!(
                "{at}.policies: at least one is needed (or select_policy: Disabled)"
            ));
        }
        for (i, p) in self.policies.iter().enumerate() {
            if p.value == 0 {
                problems.push(format!("{at}.policies[{i}].value: must be positive"));
            }
            if p.period.is_zero() || p.period > Duration::from_secs(1800) {
                problems.push(format!("{at}.policies[{i}].period: must be in (0, 30m]"));
            }
        }
        if self.stabilization_window > Duration::from_secs(3600) {
            problems.push(format!("{at}.stabilization_window: at most 1h"));
        }
        if self.burst_memory > Duration::from_secs(86_400) {
            problems.push(format!("{at}.burst_memory: at most 1d"));
        }
    }
}

/// `behavior`: both directions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Behavior {
    /// Scaling up.
    pub scale_up: Rules,
    /// Scaling down.
    pub scale_down: Rules,
    /// Allow reversing direction inside the stabilization window of the
    /// last move, as the HPA does. Keel's default (false) holds the count
    /// instead; only panic reverses a scale-down, and says so.
    pub allow_reversal: bool,
}

impl Default for Behavior {
    fn default() -> Self {
        Self {
            scale_up: Rules::default_up(),
            scale_down: Rules::default_down(),
            allow_reversal: false,
        }
    }
}

impl Behavior {
    /// Exactly the HPA's behaviour: its defaults, reversals allowed, no
    /// burst memory.
    pub fn hpa() -> Self {
        let mut b = Self {
            allow_reversal: true,
            ..Self::default()
        };
        b.scale_up.burst_memory = Duration::ZERO;
        b.scale_down.burst_memory = Duration::ZERO;
        b
    }
}

impl Behavior {
    /// Push one message per problem, each naming its field under `at`.
    pub fn validate(&self, at: &str, problems: &mut Vec<String>) {
        self.scale_up.validate(&format!("{at}.scale_up"), problems);
        self.scale_down
            .validate(&format!("{at}.scale_down"), problems);
    }
}

/// What the behaviour remembers between evaluations: past
/// recommendations (for stabilization) and past scale events (for the
/// rate policies' period starts).
#[derive(Debug, Clone, Default)]
pub struct History {
    recommendations: VecDeque<(i64, u32)>,
    /// (when, instances added (+) or removed (−)).
    events: VecDeque<(i64, i64)>,
}

/// Why a proposal was changed on the way to the result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Clamp {
    /// The rule, as a user would name it.
    pub rule: String,
    /// The count before.
    pub from: u32,
    /// The count after.
    pub to: u32,
}

fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}

impl History {
    /// Record that the count went `from` → `to` at `now_ms` (after the
    /// actuator confirmed it).
    pub fn scaled(&mut self, now_ms: i64, from: u32, to: u32) {
        if from != to {
            self.events
                .push_back((now_ms, i64::from(to) - i64::from(from)));
        }
    }

    /// Stabilize `desired` against the recommendations in each
    /// direction's window (Kubernetes' `stabilizeRecommendationWithBehaviors`),
    /// and remember `desired`.
    pub fn stabilize(
        &mut self,
        b: &Behavior,
        now_ms: i64,
        current: u32,
        desired: u32,
        clamps: &mut Vec<Clamp>,
    ) -> u32 {
        let up_cutoff = now_ms - ms(b.scale_up.stabilization_window);
        let down_cutoff = now_ms - ms(b.scale_down.stabilization_window);
        let (mut up, mut down) = (desired, desired);
        for &(t, r) in &self.recommendations {
            if t > up_cutoff {
                up = up.min(r);
            }
            if t > down_cutoff {
                down = down.max(r);
            }
        }
        let mut out = current;
        if out < up {
            out = up;
        }
        if out > down {
            out = down;
        }
        if out != desired {
            let (dir, w) = if out > desired {
                ("scale-down", b.scale_down.stabilization_window)
            } else {
                ("scale-up", b.scale_up.stabilization_window)
            };
            clamps.push(Clamp {
                rule: format!(
                    "{dir} stabilization window {}",
                    humantime::format_duration(w)
                ),
                from: desired,
                to: out,
            });
        }
        self.recommendations.push_back((now_ms, desired));
        let keep = ms(b
            .scale_up
            .stabilization_window
            .max(b.scale_down.stabilization_window));
        while self
            .recommendations
            .front()
            .is_some_and(|(t, _)| *t <= now_ms - keep)
        {
            self.recommendations.pop_front();
        }
        out
    }

    /// Count `n`, applied for another reason (predictive scaling), as a
    /// recommendation at `now_ms`: scaling down from it then waits the
    /// scale-down window like any other.
    pub fn note(&mut self, now_ms: i64, n: u32) {
        self.recommendations.push_back((now_ms, n));
    }

    /// Instances added (+) or removed (−, as a positive number) within
    /// `period` before `now_ms`.
    fn changed_within(&self, now_ms: i64, period: Duration, up: bool) -> i64 {
        let cutoff = now_ms - ms(period);
        self.events
            .iter()
            .filter(|(t, d)| *t > cutoff && (*d > 0) == up)
            .map(|(_, d)| d.abs())
            .sum()
    }

    /// The most instances the scale-up policies allow now from `current`
    /// (`calculateScaleUpLimitWithScalingRules`).
    pub fn up_limit(&self, r: &Rules, now_ms: i64, current: u32) -> u32 {
        if r.select_policy == SelectPolicy::Disabled {
            return current;
        }
        let mut out: Option<i64> = None;
        for p in &r.policies {
            let start = i64::from(current) - self.changed_within(now_ms, p.period, true);
            let proposed = match p.kind {
                PolicyKind::Pods => start + i64::from(p.value),
                PolicyKind::Percent => {
                    (start as f64 * (1.0 + f64::from(p.value) / 100.0)).ceil() as i64
                }
            };
            out = Some(match (out, r.select_policy) {
                (None, _) => proposed,
                (Some(o), SelectPolicy::Min) => o.min(proposed),
                (Some(o), _) => o.max(proposed),
            });
        }
        out.map_or(current, |o| o.clamp(0, i64::from(u32::MAX)) as u32)
    }

    /// The fewest instances the scale-down policies allow now from
    /// `current` (`calculateScaleDownLimitWithBehaviors`).
    pub fn down_limit(&self, r: &Rules, now_ms: i64, current: u32) -> u32 {
        if r.select_policy == SelectPolicy::Disabled {
            return current;
        }
        let mut out: Option<i64> = None;
        for p in &r.policies {
            let start = i64::from(current) + self.changed_within(now_ms, p.period, false);
            let proposed = match p.kind {
                PolicyKind::Pods => start - i64::from(p.value),
                PolicyKind::Percent => (start as f64 * (1.0 - f64::from(p.value) / 100.0)) as i64,
            };
            out = Some(match (out, r.select_policy) {
                (None, _) => proposed,
                (Some(o), SelectPolicy::Min) => o.max(proposed),
                (Some(o), _) => o.min(proposed),
            });
        }
        out.map_or(current, |o| o.clamp(0, i64::from(u32::MAX)) as u32)
    }

    /// Forget events older than every policy's period.
    pub fn prune(&mut self, b: &Behavior, now_ms: i64) {
        let longest = b
            .scale_up
            .policies
            .iter()
            .chain(&b.scale_down.policies)
            .map(|p| ms(p.period))
            .max()
            .unwrap_or(0);
        while self
            .events
            .front()
            .is_some_and(|(t, _)| *t <= now_ms - longest)
        {
            self.events.pop_front();
        }
    }
}
