//! Per-frame quality, cheap enough for every frame of a 60 fps feed: sharpness of the CEUS
//! pane, frozen and black frames, probe motion, and (in `timing`) enhancement over the
//! pre-contrast baseline.
//!
//! - Frozen and black frames are judged on a thumbnail of the CEUS pane (8x8-pixel block
//!   means): a frozen scanner repeats the same image, so the blocks do not change at all.
//! - Motion is measured on the B-mode pane, whose gray scale does not change with the contrast
//!   kinetics (on the CEUS pane, enhancement alone changes the picture during wash-in). The
//!   pane's column and row means are profiles in which speckle averages out but the tissue's
//!   structure (the lesion, depth attenuation) remains; the shift that best aligns the profile
//!   with the one a second earlier is the probe's displacement; the median of the last seven
//!   such speeds is the measure. Held still means below 2.5% of the pane's width per second,
//!   and below three times the exam's median speed (the estimate's noise floor, which matters
//!   on small panes).
//! - Sharpness is the variance of the Laplacian of the CEUS pane, on every second pixel.

use image::GrayImage;
use serde::Serialize;

/// Side of the averaged blocks, in pixels.
pub const BLOCK: u32 = 8;

/// Block means of a gray image (partial blocks at the right and bottom edges are dropped).
#[derive(Debug, Clone, PartialEq)]
pub struct Thumbnail {
    pub width: usize,
    pub height: usize,
    pub values: Vec<f32>,
}

impl Thumbnail {
    pub fn of(gray: &GrayImage) -> Self {
        let (bw, bh) = (
            (gray.width() / BLOCK) as usize,
            (gray.height() / BLOCK) as usize,
        );
        let stride = gray.width() as usize;
        let raw = gray.as_raw();
        let mut sums = vec![0u32; bw * bh];
        for by in 0..bh {
            for row in 0..BLOCK as usize {
                let line = &raw[(by * BLOCK as usize + row) * stride..][..bw * BLOCK as usize];
                for (bx, chunk) in line.chunks_exact(BLOCK as usize).enumerate() {
                    sums[by * bw + bx] += chunk.iter().map(|&v| v as u32).sum::<u32>();
                }
            }
        }
        let n = (BLOCK * BLOCK) as f32;
        Thumbnail {
            width: bw,
            height: bh,
            values: sums.into_iter().map(|s| s as f32 / n).collect(),
        }
    }

    pub fn mean(&self) -> f32 {
        self.values.iter().sum::<f32>() / self.values.len().max(1) as f32
    }
}

/// Thresholds of the quality flags.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct QualityLimits {
    /// A frame whose CEUS pane mean is below this (gray levels, 0..255) and whose brightest
    /// block is below `black_max` is black.
    pub black_mean: f32,
    pub black_max: f32,
    /// Mean absolute block change below this (gray levels): the image is frozen. Digital
    /// captures of a frozen scanner are bit-exact; analogue captures add a little noise.
    pub frozen_change: f32,
    /// Probe speed above this fraction of the B-mode pane's width per second: moving (on a
    /// 40 mm wide pane, 1 mm/s).
    pub motion_speed: f32,
    /// Window mean less than this many gray levels over the baseline: low enhancement.
    pub low_enhancement: f32,
}

impl Default for QualityLimits {
    fn default() -> Self {
        Self {
            black_mean: 4.0,
            black_max: 16.0,
            frozen_change: 0.05,
            motion_speed: 0.025,
            low_enhancement: 15.0,
        }
    }
}

/// One frame's quality.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FrameQuality {
    /// Mean gray of the CEUS pane.
    pub mean: f32,
    /// Variance of the Laplacian of the CEUS pane (every second pixel): higher is sharper.
    pub sharpness: f32,
    /// Probe speed, in B-mode pane widths per second; `None` until half a second of frames.
    pub motion_speed: Option<f32>,
    pub black: bool,
    pub frozen: bool,
    pub moving: bool,
}

impl FrameQuality {
    /// Usable for arrival detection and key-frame choice.
    pub fn clean(&self) -> bool {
        !(self.black || self.frozen || self.moving)
    }

    /// Why a frame is not clean, in words.
    pub fn problems(&self) -> Vec<&'static str> {
        let mut p = Vec::new();
        if self.black {
            p.push("black");
        }
        if self.frozen {
            p.push("frozen");
        }
        if self.moving {
            p.push("probe moving");
        }
        p
    }
}

/// Variance of the 4-neighbour Laplacian, on every second row and column.
pub fn sharpness(gray: &GrayImage) -> f32 {
    let (w, h) = (gray.width() as usize, gray.height() as usize);
    if w < 3 || h < 3 {
        return 0.0;
    }
    let raw = gray.as_raw();
    let (mut sum, mut sum_sq, mut n) = (0f64, 0f64, 0u64);
    for y in (1..h - 1).step_by(2) {
        let (up, row, down) = (&raw[(y - 1) * w..], &raw[y * w..], &raw[(y + 1) * w..]);
        for x in (1..w - 1).step_by(2) {
            let lap = up[x] as i32 + down[x] as i32 + row[x - 1] as i32 + row[x + 1] as i32
                - 4 * row[x] as i32;
            sum += lap as f64;
            sum_sq += (lap * lap) as f64;
            n += 1;
        }
    }
    let mean = sum / n as f64;
    (sum_sq / n as f64 - mean * mean) as f32
}

/// Column and row means of a pane, box-smoothed over 9 pixels.
#[derive(Debug, Clone)]
struct Profiles {
    columns: Vec<f32>,
    rows: Vec<f32>,
}

fn smooth(v: &[f32]) -> Vec<f32> {
    const R: usize = 16;
    (0..v.len())
        .map(|i| {
            let (a, b) = (i.saturating_sub(R), (i + R + 1).min(v.len()));
            v[a..b].iter().sum::<f32>() / (b - a) as f32
        })
        .collect()
}

impl Profiles {
    fn of(gray: &GrayImage) -> Self {
        let (w, h) = (gray.width() as usize, gray.height() as usize);
        let mut columns = vec![0f32; w];
        let mut rows = vec![0f32; h];
        for (y, line) in gray.as_raw().chunks_exact(w.max(1)).enumerate() {
            let mut row_sum = 0u32;
            for (x, &v) in line.iter().enumerate() {
                columns[x] += v as f32;
                row_sum += v as u32;
            }
            rows[y] = row_sum as f32 / w as f32;
        }
        columns.iter_mut().for_each(|c| *c /= h.max(1) as f32);
        Profiles {
            columns: smooth(&columns),
            rows: smooth(&rows),
        }
    }
}

/// The shift of `b` against `a` (pixels, with sub-pixel refinement) that minimises the mean
/// absolute difference over the overlap, searched within ±`max_shift`.
fn best_shift(a: &[f32], b: &[f32], max_shift: usize) -> f32 {
    let n = a.len().min(b.len());
    if n < 4 * max_shift {
        return 0.0;
    }
    let cost = |s: i64| -> f32 {
        let range = max_shift..n - max_shift;
        let shifted = (max_shift as i64 + s) as usize..(n as i64 - max_shift as i64 + s) as usize;
        let count = range.len();
        a[range]
            .iter()
            .zip(&b[shifted])
            .map(|(x, y)| (x - y).abs())
            .sum::<f32>()
            / count.max(1) as f32
    };
    let m = max_shift as i64;
    let costs: Vec<f32> = (-m..=m).map(cost).collect();
    let (best, _) =
        costs.iter().enumerate().fold(
            (0, f32::INFINITY),
            |(bi, bc), (i, &c)| if c < bc { (i, c) } else { (bi, bc) },
        );
    let mut shift = best as f32 - m as f32;
    if best > 0 && best + 1 < costs.len() {
        let (l, c, r) = (costs[best - 1], costs[best], costs[best + 1]);
        let denom = l - 2.0 * c + r;
        if denom > 0.0 {
            shift += 0.5 * (l - r) / denom;
        }
    }
    shift
}

/// Assesses each frame against the frames before it.
#[derive(Debug, Clone, Default)]
pub struct QualityTracker {
    pub limits: QualityLimits,
    previous: Option<Thumbnail>,
    /// B-mode profiles of the last 1.4 s, with their times.
    recent: std::collections::VecDeque<(f64, Profiles)>,
    /// The last few raw speeds: their median is the frame's speed.
    speeds: std::collections::VecDeque<f32>,
    /// Every frame's speed so far, sorted: their median is the exam's noise floor.
    history: Vec<f32>,
}

/// A frame moves when its speed exceeds this multiple of the exam's median speed (and the
/// absolute limit): on small panes the shift estimate's noise alone can pass the limit.
const NOISE_FLOOR_FACTOR: f32 = 3.0;

/// Raw speeds in the median (about half a second at 15 fps).
const SPEED_MEDIAN_OF: usize = 7;

/// How far back motion is measured.
const MOTION_SPAN_S: f64 = 1.0;
/// Profiles are averaged over this long at each end of the span.
const AVERAGE_S: f64 = 0.4;

impl QualityTracker {
    pub fn new(limits: QualityLimits) -> Self {
        Self {
            limits,
            ..Default::default()
        }
    }

    /// The quality of the frame at `t` seconds, from its CEUS and B-mode panes.
    pub fn assess(&mut self, t: f64, ceus: &GrayImage, bmode: &GrayImage) -> FrameQuality {
        let quality = self.assess_without_sharpness(t, ceus, bmode);
        FrameQuality {
            sharpness: sharpness(ceus),
            ..quality
        }
    }

    /// The same, with sharpness 0: for panes at the detail of block means (MJPEG frames outside
    /// the key-frame window), whose Laplacian would mean nothing and which no window keeps.
    pub fn assess_without_sharpness(
        &mut self,
        t: f64,
        ceus: &GrayImage,
        bmode: &GrayImage,
    ) -> FrameQuality {
        let (mean, black, frozen) = self.black_or_frozen(ceus);
        // Black and frozen frames carry no motion information.
        let informative = !(black || frozen);
        let motion_speed = self.motion_speed(t, bmode, informative);
        let floor = self.noise_floor();
        let moving = !(black || frozen)
            && motion_speed.is_some_and(|v| v > self.limits.motion_speed.max(floor));
        FrameQuality {
            mean,
            sharpness: 0.0,
            motion_speed,
            black,
            frozen,
            moving,
        }
    }

    /// The CEUS pane's mean, and whether the frame is black or a repeat of the one before
    /// (judged on block means; a black frame is never frozen).
    fn black_or_frozen(&mut self, ceus: &GrayImage) -> (f32, bool, bool) {
        let thumb = Thumbnail::of(ceus);
        let mean = thumb.mean();
        let max = thumb.values.iter().cloned().fold(0.0f32, f32::max);
        let black = mean < self.limits.black_mean && max < self.limits.black_max;
        let frozen = !black
            && self.previous.as_ref().is_some_and(|prev| {
                prev.values.len() == thumb.values.len()
                    && prev
                        .values
                        .iter()
                        .zip(&thumb.values)
                        .map(|(a, b)| (a - b).abs())
                        .sum::<f32>()
                        / (thumb.values.len().max(1) as f32)
                        < self.limits.frozen_change
            });
        self.previous = Some(thumb);
        (mean, black, frozen)
    }

    /// The probe's speed at `t` (the median of the last few raw estimates), remembering the
    /// B-mode profiles of an `informative` frame and the speed for the exam's noise floor.
    fn motion_speed(&mut self, t: f64, bmode: &GrayImage, informative: bool) -> Option<f32> {
        let profiles = Profiles::of(bmode);
        while self
            .recent
            .front()
            .is_some_and(|(t0, _)| t - t0 > MOTION_SPAN_S + AVERAGE_S)
        {
            self.recent.pop_front();
        }
        let raw_speed = if informative {
            self.raw_speed(t, &profiles, bmode)
        } else {
            None
        };
        // A black or frozen stretch breaks the sequence: speeds from before it say nothing
        // about the frames after it.
        if !informative {
            self.speeds.clear();
        }
        // Speckle makes single estimates noisy; the median of the last few is not.
        let motion_speed = raw_speed.map(|v| {
            self.speeds.push_back(v);
            if self.speeds.len() > SPEED_MEDIAN_OF {
                self.speeds.pop_front();
            }
            let mut sorted: Vec<f32> = self.speeds.iter().copied().collect();
            sorted.sort_by(f32::total_cmp);
            sorted[sorted.len() / 2]
        });
        if informative {
            self.recent.push_back((t, profiles));
        }
        if let Some(v) = motion_speed {
            let at = self.history.partition_point(|x| *x < v);
            self.history.insert(at, v);
        }
        motion_speed
    }

    /// One estimate of the probe's speed, in pane widths per second: profiles are averaged
    /// over `AVERAGE_S` (speckle that changes between frames averages out), now and
    /// `MOTION_SPAN_S` earlier; the shift between the two averages is the displacement.
    /// `None` until the profiles kept reach that far back.
    fn raw_speed(&self, t: f64, profiles: &Profiles, bmode: &GrayImage) -> Option<f32> {
        let span_covered = self
            .recent
            .front()
            .is_some_and(|(t0, _)| t - t0 >= MOTION_SPAN_S);
        if !span_covered {
            return None;
        }
        let width = bmode.width().max(1) as f32;
        let max_shift = (bmode.width().min(bmode.height()) / 16) as usize;
        let now = self.average(t - AVERAGE_S, t, profiles, Some((t, profiles)));
        let before = self.average(
            t - MOTION_SPAN_S - AVERAGE_S,
            t - MOTION_SPAN_S,
            profiles,
            None,
        );
        match (before, now) {
            (Some((b, tb)), Some((n, tn))) if tn - tb > 0.5 * MOTION_SPAN_S => {
                let dx = best_shift(&b.columns, &n.columns, max_shift);
                let dy = best_shift(&b.rows, &n.rows, max_shift);
                Some((dx * dx + dy * dy).sqrt() / width / (tn - tb) as f32)
            }
            _ => None,
        }
    }

    /// The mean profile of the kept frames in [from, to] whose pane is as wide as `like`'s
    /// (and of `current`, when given), at their mean time.
    fn average(
        &self,
        from: f64,
        to: f64,
        like: &Profiles,
        current: Option<(f64, &Profiles)>,
    ) -> Option<(Profiles, f64)> {
        let members: Vec<(f64, &Profiles)> = self
            .recent
            .iter()
            .filter(|(ts, p)| *ts >= from && *ts <= to && p.columns.len() == like.columns.len())
            .map(|(ts, p)| (*ts, p))
            .chain(current)
            .collect();
        let mean_t = members.iter().map(|m| m.0).sum::<f64>() / members.len().max(1) as f64;
        let members: Vec<&Profiles> = members.into_iter().map(|m| m.1).collect();
        if members.is_empty() {
            return None;
        }
        let n = members.len() as f32;
        let mean = |pick: fn(&Profiles) -> &Vec<f32>| -> Vec<f32> {
            let mut acc = vec![0f32; pick(members[0]).len()];
            for m in &members {
                for (a, v) in acc.iter_mut().zip(pick(m)) {
                    *a += v / n;
                }
            }
            acc
        };
        Some((
            Profiles {
                columns: mean(|p| &p.columns),
                rows: mean(|p| &p.rows),
            },
            mean_t,
        ))
    }

    /// `NOISE_FLOOR_FACTOR` times the exam's median speed, once there are ten speeds.
    fn noise_floor(&self) -> f32 {
        if self.history.len() >= 10 {
            NOISE_FLOOR_FACTOR * self.history[self.history.len() / 2]
        } else {
            0.0
        }
    }
}
