//! The exam's phases, from the seconds since injection (Tong et al.: vascular 0–30 s,
//! pancreatic 31–60 s, delayed 61–120 s), with an exam timeout for an injection that never
//! comes.

use serde::Serialize;

use super::clock::{ClockSource, ContrastClock};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// No exam running.
    Idle,
    /// Exam started, no injection time known yet.
    Baseline,
    Vascular,
    Pancreatic,
    Delayed,
    Done,
}

/// In words, for people: "pancreatic phase".
impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Idle => "no exam",
            Phase::Baseline => "before the injection",
            Phase::Vascular => "vascular phase",
            Phase::Pancreatic => "pancreatic phase",
            Phase::Delayed => "delayed phase",
            Phase::Done => "exam over",
        })
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct PhaseBoundaries {
    /// Phase ends, seconds after injection.
    pub vascular_end_s: f64,
    pub pancreatic_end_s: f64,
    pub delayed_end_s: f64,
    /// The key-frame window, seconds after injection.
    pub window_start_s: f64,
    pub window_end_s: f64,
    pub window_target_s: f64,
    /// Without an injection time this long after the exam started, the exam is over.
    pub exam_timeout_s: f64,
}

impl Default for PhaseBoundaries {
    fn default() -> Self {
        Self {
            vascular_end_s: 30.0,
            pancreatic_end_s: 60.0,
            delayed_end_s: 120.0,
            window_start_s: 30.0,
            window_end_s: 40.0,
            window_target_s: 35.0,
            exam_timeout_s: 300.0,
        }
    }
}

impl PhaseBoundaries {
    pub fn validate(&self) -> Result<(), String> {
        let b = self;
        let ordered = 0.0 < b.vascular_end_s
            && b.vascular_end_s < b.pancreatic_end_s
            && b.pancreatic_end_s < b.delayed_end_s
            && b.window_start_s < b.window_end_s
            && (b.window_start_s..=b.window_end_s).contains(&b.window_target_s)
            && b.window_end_s <= b.delayed_end_s
            && b.exam_timeout_s > 0.0;
        if ordered {
            Ok(())
        } else {
            Err(format!(
                "phase boundaries must satisfy 0 < vascular end < pancreatic end < delayed end, \
                 window start <= target <= end <= delayed end, timeout > 0: {b:?}"
            ))
        }
    }

    /// The phase at `elapsed` seconds after injection.
    pub fn phase_at(&self, elapsed: f64) -> Phase {
        if elapsed < 0.0 {
            Phase::Baseline
        } else if elapsed <= self.vascular_end_s {
            Phase::Vascular
        } else if elapsed <= self.pancreatic_end_s {
            Phase::Pancreatic
        } else if elapsed <= self.delayed_end_s {
            Phase::Delayed
        } else {
            Phase::Done
        }
    }
}

/// The timing state published while an exam runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TimingStatus {
    /// Source time of the frame.
    pub at_s: f64,
    pub phase: Phase,
    pub elapsed_s: Option<f64>,
    pub clock_source: Option<ClockSource>,
    pub estimated: bool,
    /// Seconds until the key-frame window opens (negative once open); `None` without a clock.
    pub window_countdown_s: Option<f64>,
    pub in_window: bool,
}

#[derive(Debug, Clone)]
pub struct PhaseMachine {
    pub boundaries: PhaseBoundaries,
    started_s: Option<f64>,
    phase: Phase,
    pub timed_out: bool,
}

impl PhaseMachine {
    pub fn new(boundaries: PhaseBoundaries) -> Self {
        Self {
            boundaries,
            started_s: None,
            phase: Phase::Idle,
            timed_out: false,
        }
    }

    pub fn start(&mut self, at_s: f64) {
        self.started_s = Some(at_s);
        self.phase = Phase::Baseline;
        self.timed_out = false;
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The status at source time `t`; the second value is `Some(phase)` when the phase
    /// changed. Phases only move forward: a later clock correction cannot reopen a phase the
    /// exam has left.
    pub fn update(&mut self, t: f64, clock: &ContrastClock) -> (TimingStatus, Option<Phase>) {
        let before = self.phase;
        let injection = clock.injection();
        let elapsed = clock.elapsed(t);
        if !matches!(self.phase, Phase::Idle | Phase::Done) {
            let next = match elapsed {
                Some(e) => self.boundaries.phase_at(e),
                None => {
                    if self
                        .started_s
                        .is_some_and(|s| t - s > self.boundaries.exam_timeout_s)
                    {
                        self.timed_out = true;
                        Phase::Done
                    } else {
                        Phase::Baseline
                    }
                }
            };
            let rank = |p: Phase| p as u8;
            if rank(next) > rank(self.phase) {
                self.phase = next;
            }
        }
        let b = &self.boundaries;
        let status = TimingStatus {
            at_s: t,
            phase: self.phase,
            elapsed_s: elapsed,
            clock_source: injection.map(|i| i.source),
            estimated: injection.is_some_and(|i| i.estimated),
            window_countdown_s: elapsed.map(|e| b.window_start_s - e),
            in_window: elapsed.is_some_and(|e| e >= b.window_start_s && e <= b.window_end_s),
        };
        (status, (self.phase != before).then_some(self.phase))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_follow_the_clock_and_time_out_without_one() {
        let mut m = PhaseMachine::new(PhaseBoundaries::default());
        let mut clock = ContrastClock::default();
        m.start(0.0);
        assert_eq!(m.update(5.0, &clock).0.phase, Phase::Baseline);
        clock.mark(10.0, 0.0);
        let mut changes = Vec::new();
        for i in 0..1400 {
            let t = 10.0 + i as f64 * 0.1;
            let (status, changed) = m.update(t, &clock);
            if let Some(p) = changed {
                changes.push((p, (status.elapsed_s.unwrap() * 10.0).round() / 10.0));
            }
        }
        assert_eq!(
            changes,
            [
                (Phase::Vascular, 0.0),
                (Phase::Pancreatic, 30.1),
                (Phase::Delayed, 60.1),
                (Phase::Done, 120.1)
            ]
        );
        let mut m = PhaseMachine::new(PhaseBoundaries::default());
        m.start(0.0);
        let (s, changed) = m.update(301.0, &ContrastClock::default());
        assert_eq!(
            (s.phase, changed, m.timed_out),
            (Phase::Done, Some(Phase::Done), true)
        );
    }
}
