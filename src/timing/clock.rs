//! The contrast clock: seconds since the contrast injection, on the frame source's monotonic
//! timeline (frame timestamps), so dropped frames change nothing.
//!
//! The injection time comes from the best source available, in this order:
//! 1. a mark from the operator (optionally back-dated: "injected 4 s ago");
//! 2. the Contrast/Bolus Start Time of a replayed DICOM cine;
//! 3. automatic detection of contrast arrival in the CEUS pane, minus a transit delay
//!    (flagged "estimated" wherever it is reported).
//!
//! A better source replaces a worse one, and a new operator mark replaces an earlier mark; a
//! worse source never replaces a better one. Each replacement is recorded as a switch.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockSource {
    /// Contrast arrival detected in the CEUS pane, minus the transit delay.
    Automatic,
    /// Recorded with the exam: a DICOM cine's Contrast/Bolus Start Time, a frame folder's
    /// manifest, the synthetic scanner's script.
    Recorded,
    /// The operator's mark.
    Manual,
}

impl ClockSource {
    pub fn estimated(self) -> bool {
        self == ClockSource::Automatic
    }
}

/// In words, for people: "injection recorded by the scanner".
impl std::fmt::Display for ClockSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClockSource::Automatic => "estimated from contrast arrival",
            ClockSource::Recorded => "recorded by the scanner",
            ClockSource::Manual => "marked by the operator",
        })
    }
}

/// When the contrast was injected, seconds on the source's timeline.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Injection {
    pub at_s: f64,
    pub source: ClockSource,
    pub estimated: bool,
}

/// A change of the injection time, as reported to the operator.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClockSwitch {
    /// When the switch happened (source timeline).
    pub at_s: f64,
    pub from: Option<Injection>,
    pub to: Injection,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ContrastClock {
    injection: Option<Injection>,
    pub switches: Vec<ClockSwitch>,
}

impl ContrastClock {
    pub fn injection(&self) -> Option<Injection> {
        self.injection
    }

    /// Offers an injection time from `source`, at source time `now_s`. Taken when no time is
    /// known yet, when `source` ranks above the current one, or when it is a new operator
    /// mark; otherwise ignored. Returns the switch when taken.
    pub fn offer(&mut self, now_s: f64, at_s: f64, source: ClockSource) -> Option<ClockSwitch> {
        let take = match self.injection {
            None => true,
            Some(current) => {
                source > current.source
                    || (source == ClockSource::Manual && current.source == ClockSource::Manual)
            }
        };
        if !take {
            return None;
        }
        let to = Injection {
            at_s,
            source,
            estimated: source.estimated(),
        };
        let switch = ClockSwitch {
            at_s: now_s,
            from: self.injection,
            to,
        };
        if let Some(from) = self.injection {
            log::info!(
                "contrast clock: injection at {1:.2} s ({0}) replaces {3:.2} s ({2})",
                source,
                at_s,
                from.source,
                from.at_s
            );
        }
        self.injection = Some(to);
        self.switches.push(switch);
        Some(switch)
    }

    /// The operator marks the injection at `now_s`, `seconds_ago` seconds back (0 for now).
    pub fn mark(&mut self, now_s: f64, seconds_ago: f64) -> Option<ClockSwitch> {
        self.offer(now_s, now_s - seconds_ago.max(0.0), ClockSource::Manual)
    }

    /// Seconds since the injection at source time `t`.
    pub fn elapsed(&self, t: f64) -> Option<f64> {
        self.injection.map(|i| t - i.at_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn better_sources_replace_worse_ones_and_marks_replace_marks() {
        let mut c = ContrastClock::default();
        assert!(c.offer(20.0, 7.5, ClockSource::Automatic).is_some());
        assert!(c.injection().unwrap().estimated);
        let s = c.offer(21.0, 5.0, ClockSource::Recorded).unwrap();
        assert_eq!(s.from.unwrap().source, ClockSource::Automatic);
        assert!(c.offer(22.0, 9.0, ClockSource::Automatic).is_none());
        c.mark(30.0, 4.0).unwrap();
        assert_eq!(c.injection().unwrap().at_s, 26.0);
        assert!(!c.injection().unwrap().estimated);
        assert!(c.offer(31.0, 5.0, ClockSource::Recorded).is_none());
        c.mark(32.0, 0.0).unwrap();
        assert_eq!(c.elapsed(40.0), Some(8.0));
        assert_eq!(c.switches.len(), 4);
    }
}
