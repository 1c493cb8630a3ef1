//! The synthetic scanner: a seeded, deterministic CEUS exam rendered the way scanners show it,
//! B-mode pane on the left, CEUS pane on the right, with text overlays and an on-screen timer.
//! It is the feed of tests and of the demo, and every frame comes with its ground truth.
//!
//! The lesion sits at the same place in both panes. On B-mode it is hypoechoic. On CEUS the
//! picture is dark until the contrast arrives (injection + transit time), then parenchyma and
//! lesion follow a time-intensity curve: a gamma-variate-like rise to a peak, then a slow
//! wash-out. The two kinds differ as Tong et al. describe them:
//! - PDAC-like: hypo-enhancing (about 40% of the parenchyma), heterogeneous (low areas next
//!   to high ones) with an irregular margin;
//! - CP-like: iso-enhancing with the parenchyma, homogeneous, smooth margin.
//!
//! Speckle is redrawn every frame from (seed, frame index), so frame n is the same whatever
//! was rendered before it. Probe-motion episodes shift the whole picture; frozen segments
//! repeat the last live frame; black segments are all-zero frames.

use serde::{Deserialize, Serialize};
use std::time::Duration;

use super::frame::{Frame, PixelFormat};
use super::input_error::InputError;
use super::source::{FrameSource, Pacer, Pacing, SourceEvent};
use crate::rng::{mix64, spread, SplitMix64};
use crate::roi::Roi;
use rayon::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LesionKind {
    Pdac,
    Cp,
}

/// In words, for people: "PDAC-like", "CP-like" (the synthetic lesion's kind).
impl std::fmt::Display for LesionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LesionKind::Pdac => "PDAC-like",
            LesionKind::Cp => "CP-like",
        })
    }
}

impl LesionKind {
    /// As written in source specs: "pdac" or "cp".
    pub fn as_str(self) -> &'static str {
        match self {
            LesionKind::Pdac => "pdac",
            LesionKind::Cp => "cp",
        }
    }
}

impl std::str::FromStr for LesionKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pdac" => Ok(LesionKind::Pdac),
            "cp" => Ok(LesionKind::Cp),
            other => Err(format!(
                "unknown lesion kind '{other}' (expected pdac or cp)"
            )),
        }
    }
}

/// A time interval of the exam, seconds from the first frame.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Span {
    pub start_s: f64,
    pub end_s: f64,
}

impl Span {
    pub fn contains(&self, t: f64) -> bool {
        t >= self.start_s && t < self.end_s
    }
}

/// What the synthetic exam looks like.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyntheticConfig {
    pub kind: LesionKind,
    pub seed: u64,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub duration_s: f64,
    /// Injection time, seconds from the first frame (the baseline before it is pre-contrast).
    pub injection_s: f64,
    /// Transit from injection to arrival in the pancreas; drawn from 10..20 s by the seed
    /// unless set.
    pub transit_s: Option<f64>,
    pub motion: Vec<Span>,
    pub frozen: Vec<Span>,
    pub black: Vec<Span>,
    /// The pixel format frames are delivered in, as a capture card would (RGB24 by default).
    #[serde(default = "default_format")]
    pub format: PixelFormat,
    /// MJPEG only: this many consecutive frames (from 35 s after injection) are rendered and
    /// encoded once, when the exam begins, and played in turn for the whole exam, so that the
    /// scanner's own encoding costs nothing while it plays (a capture card encodes in
    /// hardware). The loop replays no contrast kinetics, motion, frozen or black segments.
    #[serde(default)]
    pub jpeg_loop: Option<u32>,
}

fn default_format() -> PixelFormat {
    PixelFormat::Rgb24
}

impl SyntheticConfig {
    pub fn new(kind: LesionKind, seed: u64) -> Self {
        Self {
            kind,
            seed,
            width: 1280,
            height: 720,
            fps: 15.0,
            duration_s: 120.0,
            injection_s: 5.0,
            transit_s: None,
            motion: Vec::new(),
            frozen: Vec::new(),
            black: Vec::new(),
            format: PixelFormat::Rgb24,
            jpeg_loop: None,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.width < 320 || self.height < 240 || self.width > 4096 || self.height > 2160 {
            return Err(format!(
                "size {}x{}: expected 320x240 to 4096x2160",
                self.width, self.height
            ));
        }
        if !(self.fps.is_finite() && self.fps > 0.0 && self.fps <= 120.0) {
            return Err(format!("fps {}: expected 0 < fps <= 120", self.fps));
        }
        if !(self.duration_s.is_finite() && self.duration_s > 0.0 && self.duration_s <= 3600.0) {
            return Err(format!(
                "duration {} s: expected 0 < duration <= 3600",
                self.duration_s
            ));
        }
        if !(self.injection_s.is_finite() && self.injection_s >= 0.0) {
            return Err(format!(
                "injection at {} s: expected >= 0",
                self.injection_s
            ));
        }
        if matches!(
            self.format,
            PixelFormat::Yuyv | PixelFormat::Uyvy | PixelFormat::Nv12
        ) && self.width % 2 != 0
        {
            return Err(format!(
                "{}: width {} must be even",
                self.format, self.width
            ));
        }
        if self.format == PixelFormat::Nv12 && self.height % 2 != 0 {
            return Err(format!("NV12: height {} must be even", self.height));
        }
        if let Some(k) = self.jpeg_loop {
            if self.format != PixelFormat::Mjpeg || !(7..=600).contains(&k) {
                // Fewer than 7 could repeat frames that the exam compares (up to every sixth
                // one, at 120 fps), which would read as a frozen scanner.
                return Err(format!(
                    "loop={k}: expected 7..600 frames, with format=MJPEG"
                ));
            }
        }
        if let Some(t) = self.transit_s {
            if !(0.0..=60.0).contains(&t) {
                return Err(format!("transit {t} s: expected 0..60"));
            }
        }
        for s in self.motion.iter().chain(&self.frozen).chain(&self.black) {
            if !(s.start_s.is_finite() && s.end_s.is_finite() && s.start_s < s.end_s) {
                return Err(format!(
                    "segment {}..{} s is empty or not finite",
                    s.start_s, s.end_s
                ));
            }
        }
        Ok(())
    }
}

/// Where things are and when, for checking what the pipeline found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroundTruth {
    pub kind: LesionKind,
    pub seed: u64,
    pub injection_s: f64,
    /// When contrast reaches the pancreas: injection + transit.
    pub arrival_s: f64,
    pub bmode_pane: Roi,
    pub ceus_pane: Roi,
    /// The lesion's bounding box on each pane (when the probe is still).
    pub lesion_bmode: Roi,
    pub lesion_ceus: Roi,
    pub config: SyntheticConfig,
}

/// Time-intensity curve of the parenchyma, 0..1, `t` seconds after arrival: a gamma variate
/// (rise over ~10 s) reaching 1 at its peak, then wash-out towards ~0.35.
fn time_intensity(t: f64) -> f64 {
    if t <= 0.0 {
        return 0.0;
    }
    let peak = 12.0;
    let x = t / peak;
    let rise = (x * (1.0 - x)).exp() * x; // 1 at x = 1
    let washout = 0.35 + 0.65 * (-(t - peak).max(0.0) / 60.0).exp();
    if t < peak {
        rise
    } else {
        washout
    }
}

/// A fixed pseudo-random value in 0..1 for a pixel (speckle), from seed, frame and position.
#[inline]
fn hash01(seed: u64, frame: u64, x: u32, y: u32) -> f32 {
    let z =
        seed ^ spread(frame) ^ ((x as u64) << 32 | y as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93);
    (mix64(z) >> 40) as f32 / (1u64 << 24) as f32
}

/// 3x5 digits for the on-screen timer.
const DIGITS: [[u8; 5]; 10] = [
    [7, 5, 5, 5, 7],
    [2, 6, 2, 2, 7],
    [7, 1, 7, 4, 7],
    [7, 1, 7, 1, 7],
    [5, 5, 7, 1, 1],
    [7, 4, 7, 1, 7],
    [7, 4, 7, 5, 7],
    [7, 1, 1, 1, 1],
    [7, 5, 7, 5, 7],
    [7, 5, 7, 1, 7],
];

/// The synthetic scanner as a frame source.
pub struct SyntheticScanner {
    config: SyntheticConfig,
    truth: GroundTruth,
    pacer: Pacer,
    /// Lesion shape: centre (relative to the pane), radii and margin harmonics.
    lesion: (f64, f64, f64, f64, [f64; 4], [f64; 4]),
    /// Heterogeneity blobs inside a PDAC-like lesion: (x, y, radius) relative to the pane.
    patches: Vec<(f64, f64, f64)>,
    next: u64,
    last_live: Option<Vec<u8>>,
    /// Per-pixel lesion weight, depth attenuation and PDAC patch level of each pane while
    /// the probe is still (they depend on position only): computed once, so a frame costs
    /// the speckle alone.
    still_geometry: std::sync::OnceLock<[Vec<PixelGeometry>; 2]>,
    /// The encoded frames `jpeg_loop` plays.
    encoded_loop: std::sync::OnceLock<Vec<Vec<u8>>>,
}

/// What a pane pixel's value depends on besides time and speckle.
#[derive(Debug, Clone, Copy)]
struct PixelGeometry {
    lesion: f64,
    depth: f64,
    patch: f64,
}

impl SyntheticScanner {
    pub fn new(config: SyntheticConfig, pacing: Pacing) -> Result<Self, String> {
        config.validate()?;
        let mut rng = SplitMix64(config.seed ^ 0x5EED_CE05);
        let transit = config.transit_s.unwrap_or_else(|| 10.0 + 10.0 * rng.unit());
        let (w, h) = (config.width, config.height);
        // Panes: B-mode left, CEUS right, below a header band for the text overlays.
        let top = h / 8;
        let pane_h = h - top - h / 16;
        let pane_w = w * 45 / 100;
        let bmode_pane = Roi {
            x: w * 3 / 100,
            y: top,
            width: pane_w,
            height: pane_h,
        };
        let ceus_pane = Roi {
            x: w * 52 / 100,
            y: top,
            width: pane_w,
            height: pane_h,
        };
        let cx = 0.35 + 0.3 * rng.unit();
        let cy = 0.40 + 0.2 * rng.unit();
        let rx = 0.10 + 0.05 * rng.unit();
        let ry = rx * (0.7 + 0.3 * rng.unit());
        let irregular = if config.kind == LesionKind::Pdac {
            0.18
        } else {
            0.03
        };
        let amp = [
            irregular * rng.unit(),
            irregular * rng.unit(),
            irregular * 0.6 * rng.unit(),
            irregular * 0.4 * rng.unit(),
        ];
        let phase = [
            6.3 * rng.unit(),
            6.3 * rng.unit(),
            6.3 * rng.unit(),
            6.3 * rng.unit(),
        ];
        let max_r = 1.0 + amp.iter().sum::<f64>();
        let to_box = |pane: &Roi| {
            let bx = ((cx - rx * max_r) * pane.width as f64).floor().max(0.0) as u32;
            let by = ((cy - ry * max_r) * pane.height as f64).floor().max(0.0) as u32;
            let bw = ((2.0 * rx * max_r) * pane.width as f64).ceil() as u32 + 1;
            let bh = ((2.0 * ry * max_r) * pane.height as f64).ceil() as u32 + 1;
            Roi {
                x: pane.x + bx,
                y: pane.y + by,
                width: bw.min(pane.width - bx),
                height: bh.min(pane.height - by),
            }
        };
        let patches = (0..6)
            .map(|_| {
                let a = std::f64::consts::TAU * rng.unit();
                let r = 0.6 * rng.unit();
                (
                    cx + r * rx * a.cos(),
                    cy + r * ry * a.sin(),
                    0.15 * rx + 0.15 * rx * rng.unit(),
                )
            })
            .collect();
        let truth = GroundTruth {
            kind: config.kind,
            seed: config.seed,
            injection_s: config.injection_s,
            arrival_s: config.injection_s + transit,
            bmode_pane,
            ceus_pane,
            lesion_bmode: to_box(&bmode_pane),
            lesion_ceus: to_box(&ceus_pane),
            config: config.clone(),
        };
        Ok(Self {
            config,
            truth,
            pacer: Pacer::new(pacing),
            lesion: (cx, cy, rx, ry, amp, phase),
            patches,
            next: 0,
            last_live: None,
            still_geometry: std::sync::OnceLock::new(),
            encoded_loop: std::sync::OnceLock::new(),
        })
    }

    /// The `jpeg_loop` frames, rendered and encoded on the first frame, before any is
    /// delivered (none without the option).
    fn encoded_loop(&self) -> &[Vec<u8>] {
        self.encoded_loop.get_or_init(|| self.encode_loop())
    }

    fn encode_loop(&self) -> Vec<Vec<u8>> {
        let Some(k) = self.config.jpeg_loop else {
            return Vec::new();
        };
        let c = &self.config;
        let last = self.frame_count().saturating_sub(k as u64);
        let first = (((self.truth.injection_s + 35.0) * c.fps) as u64).min(last);
        in_scanner_threads(|| {
            (first..first + k as u64)
                .into_par_iter()
                .map(|i| encode(&self.render(i), c.width, c.height, PixelFormat::Mjpeg).1)
                .collect()
        })
    }

    pub fn truth(&self) -> &GroundTruth {
        &self.truth
    }

    /// Plays on from the frame after `index` (a session switching its output mid-exam).
    pub fn resume_after(&mut self, index: u64) {
        self.next = index + 1;
    }

    pub fn frame_count(&self) -> u64 {
        (self.config.duration_s * self.config.fps).floor() as u64
    }

    /// Probe displacement in pixels at time `t`: a slow sway during motion episodes.
    fn displacement(&self, t: f64) -> (f64, f64) {
        match self.config.motion.iter().find(|s| s.contains(t)) {
            None => (0.0, 0.0),
            Some(s) => {
                let u = t - s.start_s;
                let amp = self.config.width as f64 * 0.02;
                (
                    amp * (u * 2.1).sin(),
                    0.6 * amp * (u * 1.3).cos() - 0.6 * amp,
                )
            }
        }
    }

    /// Inside-lesion weight at pane-relative (u, v): 1 inside, 0 outside, soft at the margin.
    fn lesion_weight(&self, u: f64, v: f64) -> f64 {
        let (cx, cy, rx, ry, amp, phase) = &self.lesion;
        let (dx, dy) = ((u - cx) / rx, (v - cy) / ry);
        let angle = dy.atan2(dx);
        let mut radius = 1.0;
        for k in 0..4 {
            radius += amp[k] * ((k as f64 + 2.0) * angle + phase[k]).sin();
        }
        let d = (dx * dx + dy * dy).sqrt() / radius;
        (1.0 - (d - 0.95) / 0.1).clamp(0.0, 1.0)
    }

    /// Lesion weight, depth and patch level at pane pixel (px, py) with the tissue shifted
    /// by (shift_x, shift_y).
    fn geometry(
        &self,
        pane: &Roi,
        px: u32,
        py: u32,
        shift: (f64, f64),
        ceus: bool,
    ) -> PixelGeometry {
        // The tissue moves with the probe; the pane stays where it is.
        let u = (px as f64 - shift.0) / pane.width as f64;
        let v = (py as f64 - shift.1) / pane.height as f64;
        let lesion = self.lesion_weight(u, v);
        let depth = 1.0 - 0.5 * v.clamp(0.0, 1.0); // attenuation with depth
        let mut patch = 0.0f64;
        if ceus && self.config.kind == LesionKind::Pdac {
            for (x0, y0, r) in &self.patches {
                let d = ((u - x0).powi(2) + (v - y0).powi(2)).sqrt() / r;
                patch = patch.max((1.0 - d).clamp(0.0, 1.0));
            }
        }
        PixelGeometry {
            lesion,
            depth,
            patch,
        }
    }

    fn still_geometry(&self) -> &[Vec<PixelGeometry>; 2] {
        self.still_geometry.get_or_init(|| {
            in_scanner_threads(|| {
                let panes = [(self.truth.bmode_pane, false), (self.truth.ceus_pane, true)];
                panes.map(|(pane, ceus)| {
                    (0..pane.height)
                        .into_par_iter()
                        .flat_map_iter(|py| {
                            (0..pane.width)
                                .map(move |px| self.geometry(&pane, px, py, (0.0, 0.0), ceus))
                        })
                        .collect()
                })
            })
        })
    }

    /// Renders frame `index` as RGB24 (rows in parallel).
    pub fn render(&self, index: u64) -> Vec<u8> {
        let (w, h) = (self.config.width, self.config.height);
        let t = index as f64 / self.config.fps;
        let mut rgb = vec![12u8; (w * h * 3) as usize];
        let since_arrival = t - self.truth.arrival_s;
        let tic = time_intensity(since_arrival);
        let shift = self.displacement(t);
        let still = (shift == (0.0, 0.0)).then(|| self.still_geometry());
        let pdac = self.config.kind == LesionKind::Pdac;
        let panes = [(self.truth.bmode_pane, false), (self.truth.ceus_pane, true)];
        in_scanner_threads(|| {
            rgb.par_chunks_mut((w * 3) as usize)
                .enumerate()
                .for_each(|(y, row)| {
                    let y = y as u32;
                    for (k, (pane, ceus)) in panes.iter().enumerate() {
                        if y < pane.y || y >= pane.y + pane.height {
                            continue;
                        }
                        let py = y - pane.y;
                        for px in 0..pane.width {
                            let g = match still {
                                Some(cache) => cache[k][(py * pane.width + px) as usize],
                                None => self.geometry(pane, px, py, shift, *ceus),
                            };
                            let (lesion, depth) = (g.lesion, g.depth);
                            // Speckle grains span about 2x2 pixels, as a real probe's do.
                            let speckle = hash01(self.config.seed, index, px / 2, py / 2);
                            // Rayleigh-like speckle: -ln(1 - s) has mean 1.
                            let grain = (-(1.0 - speckle as f64).ln()).min(4.0);
                            let value = if !ceus {
                                let tissue = 95.0 * depth * (1.0 - 0.55 * lesion);
                                tissue * grain
                            } else {
                                let parenchyma = 170.0 * tic * depth;
                                let inside = if pdac {
                                    // Hypo-enhancing with patches of high enhancement.
                                    parenchyma * (0.25 + 0.6 * g.patch)
                                } else {
                                    parenchyma * 0.97
                                };
                                let base = 6.0; // tissue signal the contrast mode does not fully cancel
                                (base + parenchyma * (1.0 - lesion) + inside * lesion) * grain
                            };
                            let v = value.round().clamp(0.0, 255.0) as u8;
                            let at = ((pane.x + px) * 3) as usize;
                            row[at..at + 3].copy_from_slice(&[v, v, v]);
                        }
                    }
                })
        });
        self.draw_overlays(&mut rgb, t);
        rgb
    }

    /// Header text bars (vendor, preset, mechanical index) and the timer since injection.
    fn draw_overlays(&self, rgb: &mut [u8], t: f64) {
        let (w, h) = (self.config.width, self.config.height);
        let mut put = |x: u32, y: u32, c: [u8; 3]| {
            if x < w && y < h {
                let at = ((y * w + x) * 3) as usize;
                rgb[at..at + 3].copy_from_slice(&c);
            }
        };
        // Text-like bars in the header band.
        let band = h / 8;
        for (i, len) in [0.18, 0.10, 0.14, 0.07].iter().enumerate() {
            let y0 = band / 5 + i as u32 * band / 6;
            for y in y0..y0 + band / 12 {
                for x in (w / 40)..(w / 40 + (*len * w as f64) as u32) {
                    if (x / 3) % 4 != 3 {
                        put(x, y, [200, 200, 200]);
                    }
                }
            }
        }
        // The timer (mm:ss since injection; 00:00 before it), in yellow at the top right.
        let since = (t - self.truth.injection_s).max(0.0) as u32;
        let text = [
            since / 600 % 10,
            since / 60 % 10,
            10,
            since % 60 / 10,
            since % 10,
        ];
        let scale = (h / 120).max(2);
        let mut x0 = w - w / 6;
        for d in text {
            if d == 10 {
                for dy in [1u32, 3] {
                    for sy in 0..scale {
                        for sx in 0..scale {
                            put(x0 + sx, band / 4 + dy * scale + sy, [230, 200, 40]);
                        }
                    }
                }
                x0 += 2 * scale;
                continue;
            }
            for (row, bits) in DIGITS[d as usize].iter().enumerate() {
                for col in 0..3 {
                    if bits & (4 >> col) != 0 {
                        for sy in 0..scale {
                            for sx in 0..scale {
                                put(
                                    x0 + col * scale + sx,
                                    band / 4 + row as u32 * scale + sy,
                                    [230, 200, 40],
                                );
                            }
                        }
                    }
                }
            }
            x0 += 4 * scale;
        }
    }

    /// Frame `index` as the scanner would send it, after frozen/black segments.
    pub fn frame(&mut self, index: u64) -> Frame {
        let t = index as f64 / self.config.fps;
        let (w, h) = (self.config.width, self.config.height);
        let encoded_loop = self.encoded_loop();
        if !encoded_loop.is_empty() {
            let data = encoded_loop[(index % encoded_loop.len() as u64) as usize].clone();
            return Frame {
                sequence: index,
                timestamp: Duration::from_secs_f64(t),
                width: w,
                height: h,
                format: PixelFormat::Mjpeg,
                stride: 0,
                data,
            };
        }
        let data = if self.config.black.iter().any(|s| s.contains(t)) {
            vec![0u8; (w * h * 3) as usize]
        } else if self.config.frozen.iter().any(|s| s.contains(t)) {
            match &self.last_live {
                Some(d) => d.clone(),
                None => {
                    let d = self.render(index);
                    self.last_live = Some(d.clone());
                    d
                }
            }
        } else {
            let d = self.render(index);
            self.last_live = Some(d.clone());
            d
        };
        let (stride, data) = encode(&data, w, h, self.config.format);
        Frame {
            sequence: index,
            timestamp: Duration::from_secs_f64(t),
            width: w,
            height: h,
            format: self.config.format,
            stride,
            data,
        }
    }
}

/// BT.601 limited-range Y'CbCr of one RGB pixel, as capture cards send HDMI video.
#[inline]
fn ycbcr(r: u8, g: u8, b: u8) -> (i32, i32, i32) {
    let (r, g, b) = (r as i32, g as i32, b as i32);
    let y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16;
    let cb = ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128;
    let cr = ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128;
    (y, cb, cr)
}

/// Packs an RGB24 picture in `format`: (stride of the first plane, bytes).
pub fn encode(rgb: &[u8], w: u32, h: u32, format: PixelFormat) -> (usize, Vec<u8>) {
    let (w, h) = (w as usize, h as usize);
    let px = |x: usize, y: usize| {
        let at = (y * w + x) * 3;
        (rgb[at], rgb[at + 1], rgb[at + 2])
    };
    match format {
        PixelFormat::Rgb24 => (3 * w, rgb.to_vec()),
        PixelFormat::Bgr24 => (
            3 * w,
            rgb.chunks_exact(3)
                .flat_map(|p| [p[2], p[1], p[0]])
                .collect(),
        ),
        PixelFormat::Grey => (
            w,
            rgb.chunks_exact(3)
                .map(|p| crate::pixels::pillow_luma(p[0], p[1], p[2]))
                .collect(),
        ),
        PixelFormat::Yuyv | PixelFormat::Uyvy => {
            let mut out = Vec::with_capacity(2 * w * h);
            for y in 0..h {
                for x in (0..w).step_by(2) {
                    let (y0, cb0, cr0) = {
                        let (r, g, b) = px(x, y);
                        ycbcr(r, g, b)
                    };
                    let (y1, cb1, cr1) = {
                        let (r, g, b) = px(x + 1, y);
                        ycbcr(r, g, b)
                    };
                    let (cb, cr) = ((cb0 + cb1 + 1) / 2, (cr0 + cr1 + 1) / 2);
                    let q = |v: i32| v.clamp(0, 255) as u8;
                    if format == PixelFormat::Yuyv {
                        out.extend_from_slice(&[q(y0), q(cb), q(y1), q(cr)]);
                    } else {
                        out.extend_from_slice(&[q(cb), q(y0), q(cr), q(y1)]);
                    }
                }
            }
            (2 * w, out)
        }
        PixelFormat::Nv12 => {
            let mut out = vec![0u8; w * h + w * h / 2];
            for y in 0..h {
                for x in 0..w {
                    let (r, g, b) = px(x, y);
                    out[y * w + x] = ycbcr(r, g, b).0.clamp(0, 255) as u8;
                }
            }
            for y in (0..h).step_by(2) {
                for x in (0..w).step_by(2) {
                    let (mut cb, mut cr) = (0, 0);
                    for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                        let (r, g, b) = px(x + dx, y + dy);
                        let (_, u, v) = ycbcr(r, g, b);
                        cb += u;
                        cr += v;
                    }
                    let at = w * h + (y / 2) * w + x;
                    out[at] = ((cb + 2) / 4).clamp(0, 255) as u8;
                    out[at + 1] = ((cr + 2) / 4).clamp(0, 255) as u8;
                }
            }
            (w, out)
        }
        PixelFormat::Mjpeg => {
            let mut jpeg = Vec::new();
            let encoded = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90).encode(
                rgb,
                w as u32,
                h as u32,
                image::ExtendedColorType::Rgb8,
            );
            // Encoding an in-memory buffer of the right size cannot fail; an empty frame would
            // be refused downstream with a decode error if it ever did.
            if encoded.is_err() {
                jpeg.clear();
            }
            (0, jpeg)
        }
    }
}

impl FrameSource for SyntheticScanner {
    fn describe(&self) -> String {
        let c = &self.config;
        format!(
            "synthetic:{} (seed {}, {}x{} at {} fps, {} s, injection at {} s)",
            c.kind.as_str(),
            c.seed,
            c.width,
            c.height,
            c.fps,
            c.duration_s,
            c.injection_s
        )
    }

    fn next_event(&mut self) -> Result<SourceEvent, InputError> {
        if self.next >= self.frame_count() {
            return Ok(SourceEvent::End);
        }
        let index = self.next;
        let frame = self.frame(index);
        self.pacer.wait(frame.timestamp);
        self.next += 1;
        Ok(SourceEvent::Frame(frame))
    }

    fn recorded_exam(&self) -> Option<u64> {
        Some(0)
    }

    fn injection_offset_s(&self) -> Option<f64> {
        Some(self.truth.injection_s)
    }
}

/// Parses `pdac?seed=7&size=960x540&fps=15&duration=60&injection=5&transit=14&motion=20-24,40-41&frozen=..&black=..&format=YUYV`
/// (and `format=MJPEG&loop=K`).
pub fn parse_spec(spec: &str) -> Result<SyntheticConfig, String> {
    let (kind, query) = spec.split_once('?').unwrap_or((spec, ""));
    let mut c = SyntheticConfig::new(kind.parse()?, 0);
    let spans = |v: &str| -> Result<Vec<Span>, String> {
        v.split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                let (a, b) = s
                    .split_once('-')
                    .ok_or_else(|| format!("segment '{s}': expected START-END seconds"))?;
                let start_s = a
                    .parse::<f64>()
                    .map_err(|_| format!("segment '{s}': '{a}' is not a number"))?;
                let end_s = b
                    .parse::<f64>()
                    .map_err(|_| format!("segment '{s}': '{b}' is not a number"))?;
                Ok(Span { start_s, end_s })
            })
            .collect()
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("'{pair}': expected key=value"))?;
        let num = |v: &str| {
            v.parse::<f64>()
                .map_err(|_| format!("{key}={v}: not a number"))
        };
        match key {
            "seed" => c.seed = value.parse().map_err(|_| format!("seed={value}: not a whole number"))?,
            "size" => {
                (c.width, c.height) = super::source::parse_frame_size(value)
                    .ok_or_else(|| format!("size={value}: expected WxH"))?;
            }
            "fps" => c.fps = num(value)?,
            "duration" => c.duration_s = num(value)?,
            "injection" => c.injection_s = num(value)?,
            "transit" => c.transit_s = Some(num(value)?),
            "motion" => c.motion = spans(value)?,
            "frozen" => c.frozen = spans(value)?,
            "black" => c.black = spans(value)?,
            "format" => c.format = value.parse()?,
            "loop" => {
                c.jpeg_loop = Some(
                    value
                        .parse()
                        .map_err(|_| format!("loop={value}: not a whole number"))?,
                )
            }
            other => {
                return Err(format!(
                    "unknown option '{other}' (expected seed, size, fps, duration, injection, transit, motion, frozen, black, format, loop)"
                ))
            }
        }
    }
    c.validate()?;
    Ok(c)
}

/// Runs `work` (rendering) on the synthetic scanner's own threads. The simulator stands for the
/// scanner, another machine: its rendering must not hold up the daemon's work (scoring a window
/// while frames keep coming). On rayon's global pool, which the network's parallel sections
/// also use, each of those sections queued behind frame rendering; on a pool of its own the
/// scanner only shares the cores, as the kernel shares them between any two programs.
fn in_scanner_threads<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    let pool = POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("scanner-{i}"))
            .build()
            .ok()
    });
    match pool {
        Some(pool) => pool.install(work),
        None => work(),
    }
}
