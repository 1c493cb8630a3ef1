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
//! threshold relative to the busiest columns belong to a pane. The two longest runs of such
//! columns are the panes (left = B-mode, right = CEUS). Rows are then found the same way within
//! each pane's columns (horizontal differences), taking the longest run. Short gaps (dark
//! anechoic areas, a pre-contrast CEUS pane) are bridged by requiring a minimum run length and
//! by filling gaps narrower than 2% of the frame. A pre-contrast CEUS pane can be almost black:
//! detection then fails (it says so) and the preset, or a frame taken later, is used.

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
    #[error(transparent)]
    Roi(#[from] RoiError),
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

/// Runs of `true` longer than `min_len`, after filling gaps shorter than `max_gap`.
fn runs(active: &[bool], min_len: usize, max_gap: usize) -> Vec<(usize, usize)> {
    let mut filled = active.to_vec();
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

/// Finds the two panes on a gray frame (see the module comment for the method).
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
    let mut col_runs = runs(&active(&cols), (w / 8) as usize, (w / 50) as usize);
    if col_runs.len() < 2 {
        return Err(not_found(format!(
            "{} textured column band(s)",
            col_runs.len()
        )));
    }
    // The two widest bands, left to right.
    col_runs.sort_by_key(|(a, b)| std::cmp::Reverse(b - a));
    let mut two = [col_runs[0], col_runs[1]];
    two.sort();
    let mut panes = Vec::new();
    for (x0, x1) in two {
        let rows = row_texture(gray, x0 as u32..x1 as u32);
        let row_runs = runs(&active(&rows), (h / 4) as usize, (h / 50) as usize);
        let (y0, y1) = row_runs
            .into_iter()
            .max_by_key(|(a, b)| b - a)
            .ok_or_else(|| not_found(format!("no textured rows in columns {x0}..{x1}")))?;
        panes.push(Roi {
            x: x0 as u32,
            y: y0 as u32,
            width: (x1 - x0) as u32,
            height: (y1 - y0) as u32,
        });
    }
    Ok(Layout {
        bmode: panes[0],
        ceus: panes[1],
    })
}
