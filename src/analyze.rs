//! `ceusd analyze`: one image or DICOM frame through the whole scoring path: ROI crop, gray,
//! resize, normalise, ResNet-50, softmax, Grad-CAM.

use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::atomic_file::write_atomically;
use crate::capture::{load_frame, InputError};
use crate::model::gradcam::{overlay, upsample_normalised};
use crate::model::preprocess::resize_gray;
use crate::model::{DlrModel, ModelError, ModelIdentity};
use crate::roi::Roi;

#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("writing {path}: {reason}")]
    Output { path: PathBuf, reason: String },
}

#[derive(Debug, Clone)]
pub struct AnalyzeRequest {
    pub path: PathBuf,
    pub frame: u32,
    /// `None`: the whole frame.
    pub roi: Option<Roi>,
    pub heatmap_out: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InputSummary {
    pub path: PathBuf,
    pub format: String,
    pub frame: u32,
    pub frames_in_file: u32,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Timings {
    pub decode_ms: f64,
    pub preprocess_ms: f64,
    pub inference_ms: f64,
    pub heatmap_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AnalyzeReport {
    pub input: InputSummary,
    pub roi: Roi,
    /// Probability per class name.
    pub probabilities: BTreeMap<String, f32>,
    /// P(positive class), the AI score.
    pub score: f32,
    pub positive_class: String,
    pub threshold: f32,
    pub label: String,
    pub model: ModelIdentity,
    pub heatmap: Option<PathBuf>,
    /// True when Grad-CAM found no positive evidence for the positive class anywhere.
    pub heatmap_empty: bool,
    pub timings: Timings,
    pub warnings: Vec<String>,
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// Writes a PNG atomically, so a reader never sees half a file.
pub fn write_png_atomically(path: &Path, image: &image::RgbImage) -> Result<(), AnalyzeError> {
    write_atomically(path, |w| {
        image
            .write_to(w, image::ImageFormat::Png)
            .map_err(std::io::Error::other)
    })
    .map_err(|e| AnalyzeError::Output {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

pub fn analyze(model: &DlrModel, req: &AnalyzeRequest) -> Result<AnalyzeReport, AnalyzeError> {
    let t = Instant::now();
    let loaded = load_frame(&req.path, req.frame)?;
    let decode_ms = ms(t);
    let (width, height) = (loaded.picture.width(), loaded.picture.height());
    let roi = req.roi.unwrap_or_else(|| Roi::full(width, height));

    let t = Instant::now();
    let gray_roi = loaded.picture.gray_roi(&roi).map_err(InputError::from)?;
    let meta = &model.metadata;
    let resized = resize_gray(&gray_roi, meta.input_size, meta.resize_filter)?;
    let preprocess_ms = ms(t);

    let t = Instant::now();
    let out = model.forward_images(std::slice::from_ref(&resized))?;
    let scores = model.scores(&out)?.remove(0);
    let inference_ms = ms(t);

    let t = Instant::now();
    let cam = model.gradcam(&out)?.squeeze(0).map_err(ModelError::from)?;
    let heat = upsample_normalised(&cam, roi.width, roi.height)?;
    if let Some(path) = &req.heatmap_out {
        write_png_atomically(path, &overlay(&gray_roi, &heat)?)?;
    }
    let heatmap_ms = ms(t);

    let mut warnings = Vec::new();
    if let Some(reason) = model.identity.training.untrained_reason() {
        warnings.push(format!(
            "model '{}' {reason}: the score is meaningless ({})",
            model.identity.name, model.identity.intended_use
        ));
    }
    if heat.empty {
        warnings.push(format!(
            "Grad-CAM found no region supporting {} (empty heatmap)",
            meta.positive_class
        ));
    }
    let probabilities = meta
        .classes
        .iter()
        .cloned()
        .zip(scores.probabilities.iter().cloned())
        .collect();
    Ok(AnalyzeReport {
        input: InputSummary {
            path: req.path.clone(),
            format: loaded.format,
            frame: loaded.frame,
            frames_in_file: loaded.frames_in_file,
            width,
            height,
        },
        roi,
        probabilities,
        score: scores.score,
        positive_class: meta.positive_class.clone(),
        threshold: meta.threshold,
        label: scores.label,
        model: model.identity.clone(),
        heatmap: req.heatmap_out.clone(),
        heatmap_empty: heat.empty,
        timings: Timings {
            decode_ms,
            preprocess_ms,
            inference_ms,
            heatmap_ms,
        },
        warnings,
    })
}
