//! Scanner layouts: where the B-mode and CEUS panes sit in a captured frame, and the mapping of
//! a ROI drawn on B-mode to the same tissue on CEUS.
//!
//! Scanners in contrast mode show the two panes side by side, B-mode left and CEUS right, at
//! the same scale. A preset gives the panes for a known scanner and output resolution;
//! automatic detection finds them on a frame and is checked against the preset when there is
//! one.
//!
//! Detection method: ultrasound panes are textured (speckle) while the screen around them is
//! flat (black background, a few text overlays). For each column we measure texture as the
//! mean absolute difference between vertically adjacent pixels over the frame's middle rows
//! (where text overlays, kept to the top and bottom bands, are absent); columns above a
//! threshold relative to the busiest columns belong to a pane. The two widest runs of such
//! columns are the panes (left = B-mode, right = CEUS); they must be about as wide as each
//! other and share their rows. Before the contrast arrives the CEUS pane is nearly black and
//! only the B-mode pane passes that threshold: its partner is then a run of faint texture
//! (a few gray levels of speckle, above the flat screen's) as wide as the B-mode pane. Rows
//! are found the same way within each pane's columns (horizontal differences, relative to that
//! pane's own rows), taking the longest run. Short gaps (dark anechoic areas) are bridged by
//! requiring a minimum run length and by filling gaps narrower than 2% of the frame. A frame
//! with one image area (a single-pane display) is reported as one pane, never split; a CEUS
//! pane with no speckle at all cannot be found, and detection says so.

use std::path::Path;

use image::GrayImage;
use serde::{Deserialize, Serialize};

use crate::roi::{Roi, RoiError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub bmode: Roi,
    pub ceus: Roi,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LayoutError {
    #[error("no two side-by-side image panes found in the {width}x{height} frame ({reason})")]
    NotFound {
        width: u32,
        height: u32,
        reason: String,
    },
    #[error("ROI {roi} is not inside the B-mode pane {pane}")]
    OutsideBmode { roi: Roi, pane: Roi },
    #[error("layout presets file {path}: {reason}")]
    PresetsFile { path: String, reason: String },
    #[error("unknown layout preset '{0}' (known: {1})")]
    UnknownPreset(String, String),
    #[error(
        "one image pane at {pane} (x,y,width,height) in the {width}x{height} frame, not two \
         side-by-side panes (B-mode and CEUS)"
    )]
    OnePane { width: u32, height: u32, pane: Roi },
    #[error(transparent)]
    Roi(#[from] RoiError),
}

/// Where an exam's panes came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum LayoutSource {
    /// Fixed by the configuration (`source.layout`, `--layout`).
    Fixed,
    /// Found on the frame.
    Detected,
    /// The preset for the frame's size, because detection said `detection`.
    Preset { name: String, detection: String },
}

impl std::fmt::Display for LayoutSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LayoutSource::Fixed => f.write_str("fixed by the configuration"),
            LayoutSource::Detected => f.write_str("detected"),
            LayoutSource::Preset { name, detection } => {
                write!(f, "preset '{name}' (not detected: {detection})")
            }
        }
    }
}

/// A named layout for one scanner model and output resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preset {
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub layout: Layout,
}

/// Built-in presets. Real scanners' pane geometry depends on the model, preset and depth
/// setting: sites add theirs in a presets file (`Presets::with_site_file`); these cover the
/// synthetic scanner's default outputs.
pub fn builtin_presets() -> Vec<Preset> {
    let preset = |name: &str, width, height, bmode, ceus| Preset {
        name: name.to_string(),
        width,
        height,
        layout: Layout { bmode, ceus },
    };
    vec![
        preset(
            "synthetic-720p",
            1280,
            720,
            Roi::new(38, 90, 576, 585),
            Roi::new(665, 90, 576, 585),
        ),
        preset(
            "synthetic-1080p",
            1920,
            1080,
            Roi::new(57, 135, 864, 878),
            Roi::new(998, 135, 864, 878),
        ),
    ]
}

/// The presets a site knows: the built-ins and those of its presets file.
#[derive(Debug, Clone)]
pub struct Presets(Vec<Preset>);

/// One preset as a site writes it in TOML:
///
/// ```toml
/// [[preset]]
/// name = "logiq-e20-1080p"
/// width = 1920
/// height = 1080
/// bmode = "60,140,860,870"   # x,y,width,height in the captured frame
/// ceus = "1000,140,860,870"
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PresetEntry {
    name: String,
    width: u32,
    height: u32,
    bmode: String,
    ceus: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PresetsFile {
    #[serde(default)]
    preset: Vec<PresetEntry>,
}

impl Default for Presets {
    fn default() -> Self {
        Self(builtin_presets())
    }
}

impl Presets {
    /// The built-ins plus the presets in `path`; a site preset replaces a built-in of the same
    /// name. Every pane must lie inside its frame, and the two panes must not overlap.
    pub fn with_site_file(path: &Path) -> Result<Self, LayoutError> {
        let file_error = |reason: String| LayoutError::PresetsFile {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
        let parsed: PresetsFile = toml::from_str(&text).map_err(|e| file_error(e.to_string()))?;
        let mut presets = Self::default();
        let mut seen = std::collections::BTreeSet::new();
        for entry in parsed.preset {
            let entry_error =
                |reason: String| file_error(format!("preset '{}': {reason}", entry.name));
            if !seen.insert(entry.name.clone()) {
                return Err(entry_error("defined twice".into()));
            }
            let pane = |key: &str, value: &str| -> Result<Roi, LayoutError> {
                let roi: Roi = value
                    .parse()
                    .map_err(|e| entry_error(format!("{key} = \"{value}\": {e}")))?;
                roi.check_within(entry.width, entry.height)
                    .map_err(|e| entry_error(format!("{key} = \"{value}\": {e}")))?;
                Ok(roi)
            };
            let layout = Layout {
                bmode: pane("bmode", &entry.bmode)?,
                ceus: pane("ceus", &entry.ceus)?,
            };
            if layout.bmode.intersection_area(&layout.ceus) > 0 {
                return Err(entry_error("the B-mode and CEUS panes overlap".into()));
            }
            let preset = Preset {
                name: entry.name.clone(),
                width: entry.width,
                height: entry.height,
                layout,
            };
            match presets.0.iter_mut().find(|p| p.name == preset.name) {
                Some(existing) => *existing = preset,
                None => presets.0.push(preset),
            }
        }
        Ok(presets)
    }

    pub fn get(&self, name: &str) -> Result<&Preset, LayoutError> {
        self.0.iter().find(|p| p.name == name).ok_or_else(|| {
            LayoutError::UnknownPreset(
                name.to_string(),
                self.0
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        })
    }

    /// The presets for frames of this size: the fallback when detection fails.
    pub fn for_frame(&self, width: u32, height: u32) -> impl Iterator<Item = &Preset> {
        self.0
            .iter()
            .filter(move |p| p.width == width && p.height == height)
    }

    pub fn all(&self) -> &[Preset] {
        &self.0
    }
}

/// A built-in preset by name.
pub fn preset(name: &str) -> Result<Preset, LayoutError> {
    Presets::default().get(name).cloned()
}

impl Layout {
    /// The same tissue on the CEUS pane as `roi` on the B-mode pane. The panes show the same
    /// field of view; if the CEUS pane is scaled differently the ROI is scaled with it.
    pub fn bmode_to_ceus(&self, roi: &Roi) -> Result<Roi, LayoutError> {
        let b = self.bmode;
        if !b.contains(roi) {
            return Err(LayoutError::OutsideBmode { roi: *roi, pane: b });
        }
        let sx = self.ceus.width as f64 / b.width as f64;
        let sy = self.ceus.height as f64 / b.height as f64;
        let x = self.ceus.x + ((roi.x - b.x) as f64 * sx).round() as u32;
        let y = self.ceus.y + ((roi.y - b.y) as f64 * sy).round() as u32;
        let mapped = Roi {
            x,
            y,
            width: ((roi.width as f64 * sx).round() as u32)
                .clamp(1, self.ceus.x + self.ceus.width - x),
            height: ((roi.height as f64 * sy).round() as u32)
                .clamp(1, self.ceus.y + self.ceus.height - y),
        };
        Ok(mapped)
    }
}

/// Runs of `true` longer than `min_len`, after dropping runs narrower than `max_gap` (a scale
/// bar's ticks, a column of labels beside a pane) and then filling gaps up to `max_gap`.
fn runs(active: &[bool], min_len: usize, max_gap: usize) -> Vec<(usize, usize)> {
    let mut filled = active.to_vec();
    let mut i = 0;
    while i < filled.len() {
        let start = i;
        while i < filled.len() && filled[i] {
            i += 1;
        }
        if i - start < max_gap {
            filled[start..i].iter_mut().for_each(|v| *v = false);
        }
        i += 1;
    }
    let mut i = 0;
    while i < filled.len() {
        if !filled[i] {
            let start = i;
            while i < filled.len() && !filled[i] {
                i += 1;
            }
            let bounded = start > 0 && i < filled.len();
            if bounded && i - start <= max_gap {
                filled[start..i].iter_mut().for_each(|v| *v = true);
            }
        } else {
            i += 1;
        }
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < filled.len() {
        if filled[i] {
            let start = i;
            while i < filled.len() && filled[i] {
                i += 1;
            }
            if i - start >= min_len {
                out.push((start, i));
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Texture profile: mean |difference| between neighbours along one axis, per column (or row).
fn column_texture(gray: &GrayImage, rows: std::ops::Range<u32>) -> Vec<f64> {
    let w = gray.width() as usize;
    let raw = gray.as_raw();
    let mut acc = vec![0u64; w];
    for y in rows.start..rows.end.saturating_sub(1) {
        let (a, b) = (y as usize * w, (y as usize + 1) * w);
        for x in 0..w {
            acc[x] += (raw[a + x] as i32 - raw[b + x] as i32).unsigned_abs() as u64;
        }
    }
    let n = (rows.end - rows.start).max(2) as f64 - 1.0;
    acc.iter().map(|v| *v as f64 / n).collect()
}

fn row_texture(gray: &GrayImage, cols: std::ops::Range<u32>) -> Vec<f64> {
    let w = gray.width() as usize;
    let raw = gray.as_raw();
    (0..gray.height() as usize)
        .map(|y| {
            let line = &raw[y * w..(y + 1) * w];
            let sum: u64 = (cols.start as usize..cols.end.saturating_sub(1) as usize)
                .map(|x| (line[x] as i32 - line[x + 1] as i32).unsigned_abs() as u64)
                .sum();
            sum as f64 / (cols.end - cols.start).max(2) as f64
        })
        .collect()
}

fn active(profile: &[f64]) -> Vec<bool> {
    let mut sorted = profile.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    // A quarter of the 90th percentile: robust to a few very busy text columns.
    let busy = sorted[(sorted.len() * 9 / 10).min(sorted.len() - 1)];
    profile
        .iter()
        .map(|v| *v > (busy * 0.25).max(1.0))
        .collect()
}

/// Mean |difference| between neighbouring pixels, in gray levels, above which columns are
/// faintly textured: a CEUS pane before the contrast arrives (speckle a few levels deep on a
/// dark pane, about 3) passes; a flat screen background, even with a capture card's noise of
/// about one level, does not.
const FAINT_TEXTURE: f64 = 2.0;

/// How much the widths of a scanner's two panes may differ (as a fraction of the wider one):
/// both show the same field of view at the same scale.
const PANE_WIDTH_TOLERANCE: f64 = 0.2;

/// Columns `start..end` of one textured band.
type Band = (usize, usize);

fn band_width((a, b): Band) -> usize {
    b - a
}

fn similar_widths(a: Band, b: Band) -> bool {
    let (wa, wb) = (band_width(a) as f64, band_width(b) as f64);
    (wa - wb).abs() <= PANE_WIDTH_TOLERANCE * wa.max(wb)
}

/// The dark partner of the one strongly textured pane: a band of faint texture as wide as
/// `pane`, beside it. Before the contrast arrives a CEUS pane is nearly black, yet its speckle
/// still stands out from the flat screen around it.
fn faint_partner(cols: &[f64], pane: Band, min_len: usize, max_gap: usize) -> Option<Band> {
    let faint: Vec<bool> = cols
        .iter()
        .enumerate()
        .map(|(x, v)| *v > FAINT_TEXTURE && !(pane.0..pane.1).contains(&x))
        .collect();
    runs(&faint, min_len, max_gap)
        .into_iter()
        .filter(|band| similar_widths(*band, pane))
        .max_by_key(|band| band_width(*band))
}

/// The rows of the pane in columns `band`: the longest run of textured rows.
fn pane_rows(gray: &GrayImage, band: Band) -> Option<Roi> {
    let h = gray.height();
    let rows = row_texture(gray, band.0 as u32..band.1 as u32);
    let (y0, y1) = runs(&active(&rows), (h / 4) as usize, (h / 50) as usize)
        .into_iter()
        .max_by_key(|(a, b)| b - a)?;
    Some(Roi {
        x: band.0 as u32,
        y: y0 as u32,
        width: band_width(band) as u32,
        height: (y1 - y0) as u32,
    })
}

/// Whether two panes side by side share most of their rows.
fn side_by_side(a: &Roi, b: &Roi) -> bool {
    let top = a.y.max(b.y);
    let bottom = (a.y + a.height).min(b.y + b.height);
    bottom > top && (bottom - top) * 2 >= a.height.min(b.height)
}

/// Finds the two panes on a gray frame (see the module comment for the method). A frame with
/// one image area (a single-pane ultrasound display) is [`LayoutError::OnePane`], never split.
pub fn detect(gray: &GrayImage) -> Result<Layout, LayoutError> {
    let (w, h) = (gray.width(), gray.height());
    let not_found = |reason: String| LayoutError::NotFound {
        width: w,
        height: h,
        reason,
    };
    if w < 64 || h < 64 {
        return Err(not_found("frame too small".into()));
    }
    let cols = column_texture(gray, h * 3 / 10..h * 7 / 10);
    let (min_len, max_gap) = ((w / 8) as usize, (w / 50) as usize);
    let mut bands = runs(&active(&cols), min_len, max_gap);
    // The widest bands first.
    bands.sort_by_key(|band| std::cmp::Reverse(band_width(*band)));
    let (first, second) = match bands[..] {
        [] => return Err(not_found("no textured image area".into())),
        [only] => match faint_partner(&cols, only, min_len, max_gap) {
            Some(partner) => (only, partner),
            None => {
                let pane = pane_rows(gray, only).ok_or_else(|| {
                    not_found(format!(
                        "no textured rows in columns {}..{}",
                        only.0, only.1
                    ))
                })?;
                return Err(LayoutError::OnePane {
                    width: w,
                    height: h,
                    pane,
                });
            }
        },
        [a, b, ..] => (a, b),
    };
    if !similar_widths(first, second) {
        return Err(not_found(format!(
            "the two textured areas, columns {}..{} and {}..{}, differ in width",
            first.0, first.1, second.0, second.1
        )));
    }
    let (left, right) = (first.min(second), first.max(second));
    let pane = |band: Band| {
        pane_rows(gray, band).ok_or_else(|| {
            not_found(format!(
                "no textured rows in columns {}..{}",
                band.0, band.1
            ))
        })
    };
    let (bmode, ceus) = (pane(left)?, pane(right)?);
    if !side_by_side(&bmode, &ceus) {
        return Err(not_found(format!(
            "the textured areas {bmode} and {ceus} are not side by side"
        )));
    }
    Ok(Layout { bmode, ceus })
}
