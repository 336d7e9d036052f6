//! Rate limiting for repeated log lines: on flash, a warning printed every 2 s forever costs
//! more than the fault it reports.

use std::fmt;
use std::time::{Duration, Instant};

/// How often a throttled warning may be printed by default.
pub const LOG_EVERY: Duration = Duration::from_secs(60);

/// Lets one event through per period and counts the rest, so the next line that is printed
/// says how many were left out. One per warning site (or per site and object, e.g. per pod).
#[derive(Clone, Debug)]
pub struct Throttle {
    period: Duration,
    next: Option<Instant>,
    suppressed: u64,
}

/// How many events a [`Throttle`] held back before the one let through; displays as
/// `" (N more since the last)"`, or nothing when none were.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Suppressed(pub u64);

impl fmt::Display for Suppressed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => Ok(()),
            n => write!(f, " ({n} more since the last)"),
        }
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new(LOG_EVERY)
    }
}

impl Throttle {
    pub const fn new(period: Duration) -> Self {
        Throttle {
            period,
            next: None,
            suppressed: 0,
        }
    }

    /// Whether to print now: `Some` with the count held back since the last print, or `None`
    /// (counted) inside the period.
    pub fn allow(&mut self, now: Instant) -> Option<Suppressed> {
        match self.next {
            Some(t) if now < t => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.next = Some(now + self.period);
                Some(Suppressed(std::mem::take(&mut self.suppressed)))
            }
        }
    }

    /// The condition cleared: the next event prints at once (with the count still owed).
    pub fn reset(&mut self) {
        self.next = None;
    }

    /// Events held back since the last print.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_period_and_the_next_line_counts_the_rest() {
        let t0 = Instant::now();
        let mut t = Throttle::new(Duration::from_secs(60));
        assert_eq!(t.allow(t0), Some(Suppressed(0)), "the first prints");
        // A failing image every 2 s for a minute: 29 held back, counted.
        for i in 1..30 {
            assert_eq!(t.allow(t0 + Duration::from_secs(2 * i)), None);
        }
        assert_eq!(t.suppressed(), 29);
        let next = t.allow(t0 + Duration::from_secs(60));
        assert_eq!(next, Some(Suppressed(29)));
        assert_eq!(next.unwrap().to_string(), " (29 more since the last)");
        assert_eq!(Suppressed(0).to_string(), "");
        assert_eq!(t.allow(t0 + Duration::from_secs(61)), None);
        t.reset();
        assert_eq!(
            t.allow(t0 + Duration::from_secs(62)),
            Some(Suppressed(1)),
            "after a reset the next event prints at once"
        );
    }
}
