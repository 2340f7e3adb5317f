//! Holt-Winters on synthetic seasonal load (the seeds' daily shape:
//! 08–10 +200 %, 12–13 +150 %, 18–20 +250 %), with noise, a trend and a
//! missing day: the next day's forecast is within 10 % (mean absolute
//! percentage error) of the true shape, and predictive scaling asks for
//! the morning's capacity warm-up (plus a buffer) before the ramp.

use keel_controller::forecast::{Model, NoForecast, Z80, ahead, season_for};

const STEP_S: u64 = 300;
const DAY: usize = 288;

/// The true load at point `i` (5-minute steps): base 100 (+1 a day),
/// the seeds' peaks, 60 % at night.
fn truth(i: usize) -> f64 {
    let day = (i / DAY) as f64;
    let hour = (i % DAY) as f64 * STEP_S as f64 / 3600.0;
    let base = 100.0 + day;
    let shape = match hour {
        h if (8.0..10.0).contains(&h) => 3.0,
        h if (12.0..13.0).contains(&h) => 2.5,
        h if (18.0..20.0).contains(&h) => 3.5,
        h if !(6.0..23.0).contains(&h) => 0.6,
        _ => 1.0,
    };
    base * shape
}

/// Deterministic noise in [-1, 1].
fn noise(i: usize) -> f64 {
    let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    (x % 20_001) as f64 / 10_000.0 - 1.0
}

fn history(days: usize) -> Vec<f64> {
    (0..days * DAY)
        .map(|i| {
            if i / DAY == 3 {
                f64::NAN // a missing day
            } else {
                truth(i) * (1.0 + 0.05 * noise(i))
            }
        })
        .collect()
}

#[test]
fn a_day_ahead_is_within_10_percent_despite_noise_trend_and_a_missing_day() {
    let h = history(7);
    assert_eq!(
        season_for(h.len(), STEP_S * 1000, 86_400_000),
        DAY,
        "a week of history: daily"
    );
    let model = Model::fit(&h, DAY).expect("fits");
    let f = model.forecast(DAY, Z80);
    let n = h.len();
    let mape = f
        .iter()
        .enumerate()
        .map(|(k, p)| (p.mean - truth(n + k)).abs() / truth(n + k))
        .sum::<f64>()
        / DAY as f64;
    eprintln!(
        "MAPE {:.2} % (α {}, β {}, γ {}, σ {:.1})",
        mape * 100.0,
        model.alpha,
        model.beta,
        model.gamma,
        model.sigma
    );
    assert!(
        mape <= 0.10,
        "MAPE {:.1} % (α {}, β {}, γ {})",
        mape * 100.0,
        model.alpha,
        model.beta,
        model.gamma
    );
    let covered = f
        .iter()
        .enumerate()
        .filter(|(k, p)| {
            let v = truth(n + k) * (1.0 + 0.05 * noise(n + k));
            p.low <= v && v <= p.high
        })
        .count();
    eprintln!("80 % interval held {covered} of {DAY}");
    assert!(
        covered as f64 >= 0.6 * DAY as f64,
        "the 80 % interval held {covered} of {DAY}"
    );
}

#[test]
fn predictive_scaling_asks_for_the_morning_before_the_ramp() {
    let h = history(7);
    let f = Model::fit(&h, DAY).expect("fits").forecast(DAY, Z80);
    // Warm-up 3 min + buffer 5 min = 8 min ahead: 2 points of 5 min.
    let lead = 2;
    let per_instance = 50.0;
    let ramp = 8 * 12; // 08:00
    let needed = (truth(h.len() + ramp) / per_instance).ceil() as u32;
    let first = (0..DAY)
        .find(|&j| {
            ahead(&f[j..], lead, per_instance).is_some_and(|a| a.instances * 10 >= needed * 9)
        })
        .expect("the ramp is foreseen");
    // 07:55: five minutes (≥ the 3-minute warm-up) before 08:00, not
    // hours early.
    assert_eq!(first, ramp - 1, "first asked at point {first}");
    let before = ahead(&f[ramp - 3..], lead, per_instance)
        .expect("forecast")
        .instances;
    assert!(
        before * 2 < needed,
        "night capacity until then: {before} vs {needed}"
    );
}

#[test]
fn two_seasons_of_history_are_needed() {
    assert_eq!(
        Model::fit(&history(1), DAY),
        Err(NoForecast::TooLittleHistory(DAY, 2 * DAY))
    );
    assert_eq!(
        season_for(14 * DAY, STEP_S * 1000, 86_400_000),
        7 * DAY,
        "two weeks: weekly"
    );
}

#[test]
fn a_one_off_burst_does_not_raise_the_forecasts_after_it() {
    let mut h = history(7);
    let n = h.len();
    // A 5× burst for 10 minutes at 15:00 of the last day.
    let burst = n - DAY + 15 * 12;
    for v in &mut h[burst..burst + 2] {
        *v *= 5.0;
    }
    // Fitted at 18:00 that day, the evening ahead.
    let cut = n - DAY + 18 * 12;
    let f = Model::fit(&h[..cut], DAY).expect("fits").forecast(12, Z80);
    let worst = f
        .iter()
        .enumerate()
        .map(|(k, p)| (p.mean - truth(cut + k)).abs() / truth(cut + k))
        .fold(0.0, f64::max);
    assert!(
        worst <= 0.10,
        "worst error {:.1} % after the burst",
        worst * 100.0
    );
}
