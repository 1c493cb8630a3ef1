//! Automatic detection of contrast arrival from the CEUS pane's time–intensity curve (TIC).
//!
//! Method, as in the arrival-time (AT) parameter of CEUS perfusion analysis:
//! 1. Baseline: the first `baseline_s` seconds of clean frames (before any contrast) give the
//!    level (median) and the noise (median absolute deviation, scaled to a standard
//!    deviation). Medians, because a stray bright frame must not move the baseline.
//! 2. Onset: the TIC, smoothed by a running median over `smooth_s`, must stay above
//!    baseline + max(`k` noise, `min_rise` gray levels) for `sustain_s`: a single flash or a
//!    short probe movement is not arrival.
//! 3. Arrival: wash-in is close to linear at first, so a line is fitted (least squares) to the
//!    smoothed curve from the last baseline-level sample before the onset until the rise
//!    reaches `fit_rise` over the baseline; arrival is where that line crosses the baseline.
//!    This is earlier and steadier than the moment a threshold is crossed, which depends on
//!    the noise and on how fast the agent wash-in is.
//!
//! The estimated injection time is arrival − the configured transit delay (peripheral vein to
//! pancreas, 10–20 s in adults; default 15 s). The transit delay varies between patients, so
//! timing from this source is always flagged "estimated".
//!
//! Black and frozen frames are skipped (a moving probe hardly changes the pane's mean).

use crate::median::median;
use serde::Serialize;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct ArrivalSettings {
    pub baseline_s: f64,
    pub smooth_s: f64,
    pub k: f64,
    pub min_rise: f64,
    pub sustain_s: f64,
    pub fit_rise: f64,
    pub transit_s: f64,
}

impl Default for ArrivalSettings {
    fn default() -> Self {
        Self {
            baseline_s: 3.0,
            smooth_s: 0.5,
            k: 6.0,
            min_rise: 3.0,
            sustain_s: 1.0,
            fit_rise: 25.0,
            transit_s: 15.0,
        }
    }
}

/// What the detector found.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Arrival {
    /// Contrast arrival in the CEUS pane, source seconds.
    pub arrival_s: f64,
    /// arrival − transit delay.
    pub injection_s: f64,
    pub baseline: f64,
    pub noise: f64,
}

#[derive(Debug, Clone, Default)]
pub struct ArrivalDetector {
    pub settings: ArrivalSettings,
    /// (t, pane mean) of clean frames, in time order.
    samples: Vec<(f64, f64)>,
    /// Running medians of the samples judged so far.
    smoothed: Vec<(f64, f64)>,
    baseline: Option<(f64, f64)>,
    /// Index in `smoothed` where the current run above the threshold began.
    run_start: Option<usize>,
    found: Option<Arrival>,
}

impl ArrivalDetector {
    pub fn new(settings: ArrivalSettings) -> Self {
        Self {
            settings,
            ..Default::default()
        }
    }

    pub fn arrival(&self) -> Option<Arrival> {
        self.found
    }

    /// The baseline level and noise, once known.
    pub fn baseline(&self) -> Option<(f64, f64)> {
        self.baseline
    }

    /// Running median around sample `i` (samples within ±smooth_s/2).
    fn smooth_at(&self, i: usize) -> f64 {
        let t = self.samples[i].0;
        let half = self.settings.smooth_s / 2.0;
        let lo = self.samples[..i].partition_point(|s| s.0 < t - half);
        let hi = i + self.samples[i..].partition_point(|s| s.0 <= t + half);
        let mut window: Vec<f64> = self.samples[lo..hi].iter().map(|s| s.1).collect();
        // The window holds sample i itself, so it is never empty.
        median(&mut window).unwrap_or(self.samples[i].1)
    }

    /// Adds a clean frame's CEUS pane mean; returns the arrival when it is first found.
    pub fn push(&mut self, t: f64, mean: f64) -> Option<Arrival> {
        if self.found.is_some() || self.samples.last().is_some_and(|s| t <= s.0) {
            return None;
        }
        self.samples.push((t, mean));
        let st = self.settings;
        if self.baseline.is_none() {
            if t - self.samples[0].0 < st.baseline_s {
                return None;
            }
            let mut values: Vec<f64> = self.samples.iter().map(|s| s.1).collect();
            let level = median(&mut values)?;
            let mut deviations: Vec<f64> = values.iter().map(|v| (v - level).abs()).collect();
            self.baseline = Some((level, 1.4826 * median(&mut deviations)?));
        }
        let (level, noise) = self.baseline?;
        let threshold = level + (st.k * noise).max(st.min_rise);
        // Smooth every sample whose median window is complete, and look for a run above the
        // threshold lasting `sustain_s`.
        let mut onset = None;
        while self.smoothed.len() < self.samples.len()
            && self.samples[self.smoothed.len()].0 <= t - st.smooth_s / 2.0
        {
            let i = self.smoothed.len();
            let point = (self.samples[i].0, self.smooth_at(i));
            self.smoothed.push(point);
            if point.1 > threshold {
                let start = *self.run_start.get_or_insert(i);
                if point.0 - self.smoothed[start].0 >= st.sustain_s {
                    onset = Some(start);
                    break;
                }
            } else {
                self.run_start = None;
            }
        }
        let onset = onset?;
        let smoothed = &self.smoothed;
        // Fit from the last sample at baseline level before the onset to where the rise
        // reaches `fit_rise` (or the end of what is smoothed).
        let from = (0..onset)
            .rev()
            .find(|&i| smoothed[i].1 <= level + noise.max(0.5))
            .unwrap_or(onset);
        let to = (onset..smoothed.len())
            .find(|&i| smoothed[i].1 >= level + st.fit_rise)
            .unwrap_or(smoothed.len() - 1);
        let points = &smoothed[from..=to];
        let arrival_s = if points.len() >= 3 {
            let n = points.len() as f64;
            let mt = points.iter().map(|p| p.0).sum::<f64>() / n;
            let mv = points.iter().map(|p| p.1).sum::<f64>() / n;
            let sxy: f64 = points.iter().map(|p| (p.0 - mt) * (p.1 - mv)).sum();
            let sxx: f64 = points.iter().map(|p| (p.0 - mt).powi(2)).sum();
            let slope = sxy / sxx.max(1e-12);
            if slope > 0.0 {
                (mt + (level - mv) / slope)
                    .clamp(smoothed[from].0 - st.sustain_s, smoothed[onset].0)
            } else {
                smoothed[onset].0
            }
        } else {
            smoothed[onset].0
        };
        let found = Arrival {
            arrival_s,
            injection_s: arrival_s - st.transit_s,
            baseline: level,
            noise,
        };
        self.found = Some(found);
        Some(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_linear_wash_in_is_found_where_it_starts() {
        let mut d = ArrivalDetector::default();
        let mut found = None;
        for i in 0..600 {
            let t = i as f64 / 15.0;
            // Baseline 10 with ±1 alternating noise, wash-in of 8 levels per second from 12 s.
            let noise = if i % 2 == 0 { 1.0 } else { -1.0 };
            let v = 10.0 + noise + (t - 12.0).max(0.0) * 8.0;
            if let Some(a) = d.push(t, v) {
                found = Some(a);
            }
        }
        let a = found.unwrap();
        assert!((a.arrival_s - 12.0).abs() < 0.3, "{a:?}");
        assert!((a.injection_s - (a.arrival_s - 15.0)).abs() < 1e-12);
    }

    #[test]
    fn a_short_flash_is_not_arrival() {
        let mut d = ArrivalDetector::default();
        for i in 0..300 {
            let t = i as f64 / 15.0;
            let v = if (8.0..8.6).contains(&t) { 80.0 } else { 10.0 };
            assert!(d.push(t, v).is_none(), "at {t}");
        }
    }
}
