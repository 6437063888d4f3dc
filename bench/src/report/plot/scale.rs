//! Value axes: where a number lands between an axis's ends, which ticks it gets and how they read.
//! Kept apart from the drawing so the tick choice (1, 2, 5 per decade on log axes; round steps on
//! linear ones) can be tested without an SVG.

/// How a panel's value axis should be scaled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Choice {
    /// Linear, from zero.
    Linear,
    /// Logarithmic (falls back to linear when a value is not positive).
    Log,
    /// Logarithmic when the values span more than [`AUTO_LOG_RATIO`], else linear.
    Auto,
}

/// Above this ratio of largest to smallest value, [`Choice::Auto`] picks a log axis.
pub(super) const AUTO_LOG_RATIO: f64 = 20.0;

/// An axis: `lo` at one end, `hi` at the other, linear or logarithmic.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Scale {
    log: bool,
    lo: f64,
    hi: f64,
}

impl Scale {
    /// A value axis for data between `min` and `max`, leaving `headroom` (a fraction of the axis)
    /// free above the largest value for its label. Linear axes include zero.
    pub fn fit(choice: Choice, min: f64, max: f64, headroom: f64) -> Scale {
        let (min, max) = if min <= max { (min, max) } else { (max, min) };
        let log = match choice {
            Choice::Linear => false,
            Choice::Log => min > 0.0,
            Choice::Auto => min > 0.0 && max / min > AUTO_LOG_RATIO,
        };
        let headroom = headroom.clamp(0.0, 0.5);
        if log {
            let (mut lo, mut hi) = (min.log10(), max.log10());
            // At least one decade, so there are ticks to read; then a little below the
            // smallest value, so that its bar still shows.
            if hi - lo < 1.0 {
                let mid = (lo + hi) / 2.0;
                (lo, hi) = (mid - 0.5, mid + 0.5);
            }
            lo -= (hi - lo) * 0.08;
            hi += (hi - lo) * headroom / (1.0 - headroom);
            Scale {
                log,
                lo: 10f64.powf(lo),
                hi: 10f64.powf(hi),
            }
        } else {
            let mut lo = min.min(0.0);
            let mut hi = max.max(0.0);
            if hi <= lo {
                hi = lo + 1.0;
            }
            // Negative values (a VMM touching less than its guest's RAM) get room below, too.
            if lo < 0.0 {
                lo -= (hi - lo) * 0.05;
            }
            hi += (hi - lo) * headroom / (1.0 - headroom);
            Scale { log, lo, hi }
        }
    }

    /// A linear axis from `lo` to `hi` exactly (for the K axis of the density plots).
    pub fn span(lo: f64, hi: f64) -> Scale {
        let hi = if hi > lo { hi } else { lo + 1.0 };
        Scale { log: false, lo, hi }
    }

    /// Whether the axis is logarithmic.
    pub fn is_log(&self) -> bool {
        self.log
    }

    /// Where `v` lies: 0 at `lo`, 1 at `hi` (outside for values beyond them).
    pub fn fraction(&self, v: f64) -> f64 {
        if self.log {
            let v = v.max(self.lo * 1e-3);
            (v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        }
    }

    /// Where bars start: zero on linear axes, the bottom of a log axis.
    pub fn baseline(&self) -> f64 {
        if self.log { self.lo } else { 0.0 }
    }

    /// The tick values inside the axis, ascending.
    pub fn ticks(&self) -> Vec<f64> {
        if self.log {
            log_ticks(self.lo, self.hi)
        } else {
            linear_ticks(self.lo, self.hi)
        }
    }
}

/// Round steps (1, 2 or 5 times a power of ten) giving about five ticks.
fn linear_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let raw = (hi - lo) / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// Decades, with 2 and 5 (or 2, 3 and 5) between them when the axis spans few decades.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let decades = hi.log10() - lo.log10();
    let mantissas: &[f64] = if decades <= 1.3 {
        &[1.0, 2.0, 3.0, 5.0]
    } else if decades <= 3.5 {
        &[1.0, 2.0, 5.0]
    } else {
        &[1.0]
    };
    let within = |m: &[f64]| -> Vec<f64> {
        let mut v = Vec::new();
        for d in (lo.log10().floor() as i32)..=(hi.log10().ceil() as i32) {
            for m in m {
                let t = m * 10f64.powi(d);
                // A hair of slack, so that a tick at an end is not lost to rounding.
                if t >= lo * (1.0 - 1e-9) && t <= hi * (1.0 + 1e-9) {
                    v.push(t);
                }
            }
        }
        v
    };
    let v = within(mantissas);
    if v.len() >= 2 {
        v
    } else {
        within(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
    }
}

/// A number as a label: three significant digits (all digits from 100 on), `k` from 10 000 and
/// `M` from a million on, no trailing zeros.
pub(super) fn format(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return if v.is_finite() {
            "0".into()
        } else {
            "–".into()
        };
    }
    let a = v.abs();
    let (scaled, suffix) = if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e4 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let decimals = (2 - scaled.abs().log10().floor() as i32).clamp(0, 6) as usize;
    let mut s = format!("{scaled:.decimals$}");
    if s.contains('.') {
        let t = s.trim_end_matches('0').trim_end_matches('.').len();
        s.truncate(t);
    }
    s + suffix
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_short() {
        let cases = [
            (0.0, "0"),
            (0.25, "0.25"),
            (0.1 + 0.2, "0.3"),
            (1.234, "1.23"),
            (12.0, "12"),
            (12.34, "12.3"),
            (123.4, "123"),
            (1234.6, "1235"),
            (20_000.0, "20k"),
            (12_345.0, "12.3k"),
            (999_000.0, "999k"),
            (2_500_000.0, "2.5M"),
            (-3.5, "-3.5"),
        ];
        for (v, s) in cases {
            assert_eq!(format(v), s, "{v}");
        }
    }

    #[test]
    fn linear_axes_start_at_zero_with_round_ticks() {
        let s = Scale::fit(Choice::Linear, 12.0, 97.0, 0.0);
        assert_eq!(s.ticks(), [0.0, 20.0, 40.0, 60.0, 80.0]);
        assert_eq!(s.fraction(0.0), 0.0);
        assert!((s.fraction(97.0) - 1.0).abs() < 1e-9);
        let with_room = Scale::fit(Choice::Linear, 12.0, 97.0, 0.1);
        assert!(with_room.fraction(97.0) < 0.91);
    }

    #[test]
    fn auto_goes_log_only_for_wide_positive_spans() {
        assert!(!Scale::fit(Choice::Auto, 40.0, 200.0, 0.0).is_log());
        assert!(Scale::fit(Choice::Auto, 40.0, 9000.0, 0.0).is_log());
        assert!(!Scale::fit(Choice::Auto, -1.0, 9000.0, 0.0).is_log());
        assert!(!Scale::fit(Choice::Log, 0.0, 9000.0, 0.0).is_log());
    }

    #[test]
    fn log_ticks_suit_the_span() {
        let wide = Scale::fit(Choice::Log, 50.0, 2e5, 0.05);
        let t = wide.ticks();
        assert!(
            t.contains(&100.0) && t.contains(&1e5) && !t.contains(&200.0),
            "{t:?}"
        );
        let few = Scale::fit(Choice::Log, 60.0, 900.0, 0.05);
        let t = few.ticks();
        assert!(
            t.contains(&100.0) && t.contains(&200.0) && t.contains(&500.0),
            "{t:?}"
        );
        // A narrow span still gets a decade and ticks to read.
        let narrow = Scale::fit(Choice::Log, 51.0, 58.0, 0.0);
        assert!(narrow.ticks().len() >= 2, "{:?}", narrow.ticks());
        assert!(narrow.fraction(51.0) > 0.0 && narrow.fraction(58.0) < 1.0);
    }
}
