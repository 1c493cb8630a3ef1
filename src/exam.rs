//! One CEUS exam from frames to result: layout, per-frame quality, the contrast clock (operator
//! mark, DICOM tag or detected arrival), phases, the key-frame window, and scoring of the key
//! frame (the paper's method) and of the K best frames of the window. `exam_lifecycle` starts,
//! feeds and stops it, for `ceusd analyze` on a cine and for the daemon alike.

use image::GrayImage;
use serde::Serialize;

use crate::capture::frame::{Detail, Frame, LumaRange, PixelFormat};
use crate::capture::InputError;
use crate::layout::{Layout, LayoutSource, Presets};
use crate::median::median;
use crate::model::preprocess::resize_gray;
use crate::model::{DlrModel, ModelError, ModelIdentity};
use crate::quality::{sharpness, FrameQuality, QualityLimits, QualityTracker};
use crate::roi::Roi;
use crate::timing::{
    Arrival, ArrivalDetector, ArrivalSettings, ClockSource, ClockSwitch, ContrastClock,
    KeyFrameWindow, Phase, PhaseBoundaries, PhaseMachine, TimingStatus,
};

#[derive(Debug, thiserror::Error)]
pub enum ExamError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("layout: {0}")]
    Layout(String),
    #[error("ROI {roi}: {reason}")]
    Roi { roi: Roi, reason: String },
    #[error("settings: {0}")]
    Settings(String),
    #[error("frame: {0}")]
    Frame(#[from] crate::capture::frame::ConvertError),
}

#[derive(Debug, Clone, Serialize)]
pub struct ExamSettings {
    pub boundaries: PhaseBoundaries,
    pub arrival: ArrivalSettings,
    pub quality: QualityLimits,
    /// Frames kept from the key-frame window (K).
    pub keep: usize,
    /// Take the injection time the source records (DICOM tag, frame-folder manifest,
    /// synthetic script).
    pub use_recorded_injection: bool,
}

impl Default for ExamSettings {
    fn default() -> Self {
        Self {
            boundaries: PhaseBoundaries::default(),
            arrival: ArrivalSettings::default(),
            quality: QualityLimits::default(),
            keep: 8,
            use_recorded_injection: true,
        }
    }
}

/// Something that happened during the exam, for the timeline.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TimelineEvent {
    Phase {
        at_s: f64,
        phase: Phase,
        elapsed_s: Option<f64>,
    },
    Clock(ClockSwitch),
    Arrival(Arrival),
    NoSignal {
        at_s: f64,
        reason: String,
    },
    /// The source's frames changed size or pixel format.
    SourceChanged(SourceChange),
    /// The panes the exam's frames are read at, from this frame on.
    Panes {
        at_s: f64,
        layout: Layout,
        source: LayoutSource,
    },
}

/// The size and pixel format of a source's frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FrameShape {
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
}

impl FrameShape {
    pub fn of(frame: &Frame) -> Self {
        Self {
            width: frame.width,
            height: frame.height,
            format: frame.format,
        }
    }
}

impl std::fmt::Display for FrameShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{} {}", self.width, self.height, self.format)
    }
}

/// The source changed its frames' size or format during the exam; the panes were found again.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceChange {
    pub at_s: f64,
    /// Seconds after the injection, when the clock was known.
    pub elapsed_s: Option<f64>,
    pub from: FrameShape,
    pub to: FrameShape,
    /// Frames kept from the key-frame window before the change, dropped because the change
    /// came inside the window.
    pub kept_dropped: usize,
    /// The change came after the key-frame window: ROIs stay in the window frames' layout.
    pub after_window: bool,
}

impl std::fmt::Display for SourceChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "source changed from {} to {} ", self.from, self.to)?;
        match self.elapsed_s {
            Some(e) => write!(f, "at {e:.1} s after injection")?,
            None => write!(
                f,
                "at {:.1} s, before the injection time was known",
                self.at_s
            )?,
        }
        f.write_str("; panes re-detected")?;
        if self.kept_dropped > 0 {
            write!(
                f,
                "; inside the key-frame window: the {} frame(s) kept before it were dropped",
                self.kept_dropped
            )?;
        }
        if self.after_window {
            f.write_str("; after the key-frame window: ROIs are read on the window's frames")?;
        }
        Ok(())
    }
}

/// One scored frame.
#[derive(Debug, Clone, Serialize)]
pub struct ScoredFrame {
    pub sequence: u64,
    pub at_s: f64,
    pub elapsed_s: f64,
    pub score: f32,
    pub quality: FrameQuality,
}

/// The exam's result: what the outbox stores and the result message carries (inside its
/// envelope), and what `ceusd analyze` prints. `score` is `None` when no confident score can
/// be given, and `reason` says why.
#[derive(Debug, Clone, Serialize)]
pub struct ExamResult {
    /// P(positive class) of the key frame (the paper's single-frame score).
    pub score: Option<f32>,
    pub label: Option<String>,
    pub reason: Option<String>,
    pub threshold: f32,
    pub positive_class: String,
    pub key_frame: Option<ScoredFrame>,
    /// The K frames, in time order (the key frame among them).
    pub frames: Vec<ScoredFrame>,
    pub spread: Spread,
    /// The ROI on the CEUS pane, in frame coordinates; `None` when none was set.
    pub roi: Option<Roi>,
    pub timing: ResultTiming,
    /// Window mean minus pre-contrast baseline, gray levels.
    pub enhancement: Option<f64>,
    pub warnings: Vec<String>,
    pub model: ModelIdentity,
}

/// How the scores of the window's K frames spread around the key frame's.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Spread {
    pub frames_scored: usize,
    pub median: Option<f32>,
    pub min: Option<f32>,
    pub max: Option<f32>,
}

impl Spread {
    fn of(frames: &[ScoredFrame]) -> Self {
        let mut scores: Vec<f64> = frames.iter().map(|f| f64::from(f.score)).collect();
        let median = median(&mut scores).map(|m| m as f32);
        // `median` sorted them.
        Self {
            frames_scored: frames.len(),
            median,
            min: scores.first().map(|&s| s as f32),
            max: scores.last().map(|&s| s as f32),
        }
    }
}

/// The contrast clock behind a result, and what the key-frame window saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ResultTiming {
    pub injection_s: Option<f64>,
    pub clock_source: Option<ClockSource>,
    /// The injection time was estimated from the contrast's arrival.
    pub estimated: bool,
    pub window: crate::timing::window::WindowCounts,
}

impl ResultTiming {
    /// The timing of `exam` as it stands; empty without an exam (no frame arrived).
    pub fn of(exam: Option<&Exam>) -> Self {
        let Some(exam) = exam else {
            return Self::default();
        };
        let injection = exam.clock.injection();
        Self {
            injection_s: injection.map(|i| i.at_s),
            clock_source: injection.map(|i| i.source),
            estimated: injection.is_some_and(|i| i.estimated),
            window: exam.window.counts.clone(),
        }
    }
}

impl ExamResult {
    /// A result without a score: `reason` says why.
    pub fn unscored(
        reason: String,
        roi: Option<Roi>,
        timing: ResultTiming,
        model: &DlrModel,
    ) -> Self {
        Self {
            score: None,
            label: None,
            reason: Some(reason),
            threshold: model.metadata.threshold,
            positive_class: model.metadata.positive_class.clone(),
            key_frame: None,
            frames: Vec::new(),
            spread: Spread::default(),
            roi,
            timing,
            enhancement: None,
            warnings: Vec::new(),
            model: model.identity.clone(),
        }
    }
}

/// The key frame's CEUS pane with the ROI on it and the ROI's Grad-CAM overlay (the ROI's
/// size), for the key image sent to the PACS.
#[derive(Debug, Clone)]
pub struct KeyFramePicture {
    pub ceus_pane: GrayImage,
    /// The ROI in the pane's coordinates.
    pub roi_on_pane: Roi,
    pub overlay: image::RgbImage,
}

/// The running exam. Cloning it is cheap enough to hand a snapshot to the inference worker:
/// it holds the K kept panes, not the video.
#[derive(Clone)]
pub struct Exam {
    pub settings: ExamSettings,
    pub layout: Layout,
    pub layout_source: LayoutSource,
    /// The size and format of the frames read at `layout`, once one has arrived.
    pub shape: Option<FrameShape>,
    /// The layout of the kept frames when the source changed after the key-frame window.
    window_layout: Option<Layout>,
    pub source_changes: Vec<SourceChange>,
    quality: QualityTracker,
    pub clock: ContrastClock,
    arrival: ArrivalDetector,
    pub phases: PhaseMachine,
    pub window: KeyFrameWindow,
    pub timeline: Vec<TimelineEvent>,
    /// (t, CEUS pane mean) of clean frames, for the pre-contrast baseline.
    levels: Vec<(f64, f64)>,
    pub last_status: Option<TimingStatus>,
    pub frames_seen: u64,
    /// Source time of the first frame.
    pub first_s: Option<f64>,
    /// Source time of the last frame.
    pub last_s: Option<f64>,
    /// Source time of the last frame whose quality was assessed.
    last_assessed_s: Option<f64>,
}

/// MJPEG frames outside the key-frame window are assessed at most this often (at 60 fps,
/// every third frame; at 30 fps, every second): their decoding is the pipeline's largest cost,
/// and the clock and the quality checks, which work over seconds and were made for 15 fps
/// (the demo's pipeline sees 15), need no more. Every window frame is assessed.
const MJPEG_ASSESS_INTERVAL_S: f64 = 0.045;

impl Exam {
    pub fn new(settings: ExamSettings, layout: Layout) -> Result<Self, ExamError> {
        settings
            .boundaries
            .validate()
            .map_err(ExamError::Settings)?;
        if settings.keep == 0 {
            return Err(ExamError::Settings("keep at least one frame".into()));
        }
        let b = settings.boundaries;
        Ok(Self {
            quality: QualityTracker::new(settings.quality),
            arrival: ArrivalDetector::new(settings.arrival),
            phases: PhaseMachine::new(b),
            window: KeyFrameWindow::new(
                b.window_start_s,
                b.window_end_s,
                b.window_target_s,
                settings.keep,
            ),
            clock: ContrastClock::default(),
            timeline: Vec::new(),
            levels: Vec::new(),
            last_status: None,
            frames_seen: 0,
            first_s: None,
            last_s: None,
            last_assessed_s: None,
            settings,
            layout,
            layout_source: LayoutSource::Fixed,
            shape: None,
            window_layout: None,
            source_changes: Vec::new(),
        })
    }

    /// The operator marks the injection at source time `now_s`, `seconds_ago` back.
    pub fn mark_injection(&mut self, now_s: f64, seconds_ago: f64) {
        if let Some(s) = self.clock.mark(now_s, seconds_ago) {
            self.timeline.push(TimelineEvent::Clock(s));
        }
    }

    /// The operator's mark, given as the injection's source time.
    pub fn mark_injection_at(&mut self, now_s: f64, at_s: f64) {
        if let Some(s) = self.clock.offer(now_s, at_s, ClockSource::Manual) {
            self.timeline.push(TimelineEvent::Clock(s));
        }
    }

    /// The injection time recorded with the source.
    pub fn recorded_injection(&mut self, now_s: f64, at_s: f64) {
        if let Some(s) = self.clock.offer(now_s, at_s, ClockSource::Recorded) {
            self.timeline.push(TimelineEvent::Clock(s));
        }
    }

    /// Processes one frame; returns its timing status.
    pub fn process(&mut self, frame: &Frame) -> Result<TimingStatus, ExamError> {
        let t = frame.timestamp.as_secs_f64();
        if self.frames_seen == 0 {
            self.phases.start(t);
            self.first_s = Some(t);
        }
        self.frames_seen += 1;
        self.last_s = Some(t);
        self.shape.get_or_insert(FrameShape::of(frame));
        let Some(detail) = self.detail_needed(frame, t) else {
            return Ok(self.update_phases(t));
        };
        let panes = frame.gray_regions(
            &[self.layout.ceus, self.layout.bmode],
            LumaRange::Full,
            detail,
        )?;
        let [ceus, bmode] = <[_; 2]>::try_from(panes)
            .map_err(|_| ExamError::Layout("internal: two panes expected".into()))?;
        self.last_assessed_s = Some(t);
        let mut q = match detail {
            Detail::Full => self.quality.assess(t, &ceus, &bmode),
            Detail::BlockMeans => self.quality.assess_without_sharpness(t, &ceus, &bmode),
        };
        // The pane's mean hardly changes when the probe moves, so only black and frozen
        // frames are kept out of the time-intensity curve.
        if !(q.black || q.frozen) {
            self.levels.push((t, q.mean as f64));
            if self
                .clock
                .injection()
                .is_none_or(|i| i.source == ClockSource::Automatic)
            {
                if let Some(a) = self.arrival.push(t, q.mean as f64) {
                    self.timeline.push(TimelineEvent::Arrival(a));
                    if let Some(s) = self.clock.offer(t, a.injection_s, ClockSource::Automatic) {
                        self.timeline.push(TimelineEvent::Clock(s));
                    }
                }
            }
        }
        let status = self.update_phases(t);
        if let Some(elapsed) = status.elapsed_s {
            if detail == Detail::BlockMeans && self.in_window(elapsed) {
                // The clock was set by this very frame: the window needs its every pixel.
                let full = frame.gray_region(&self.layout.ceus, LumaRange::Full)?;
                q.sharpness = sharpness(&full);
                self.window.offer(elapsed, t, frame.sequence, q, &full);
            } else {
                self.window.offer(elapsed, t, frame.sequence, q, &ceus);
            }
        }
        Ok(status)
    }

    /// How much of `frame` the exam needs: all of it in the key-frame window (its panes may be
    /// kept and scored) and for uncompressed formats; block means for other MJPEG frames, and
    /// nothing for those within `MJPEG_ASSESS_INTERVAL_S` of the last assessed frame.
    fn detail_needed(&self, frame: &Frame, t: f64) -> Option<Detail> {
        if frame.format != PixelFormat::Mjpeg {
            return Some(Detail::Full);
        }
        if self.clock.elapsed(t).is_some_and(|e| self.in_window(e)) {
            return Some(Detail::Full);
        }
        if self
            .last_assessed_s
            .is_some_and(|last| (t - last).abs() < MJPEG_ASSESS_INTERVAL_S)
        {
            return None;
        }
        Some(Detail::BlockMeans)
    }

    fn in_window(&self, elapsed_s: f64) -> bool {
        elapsed_s >= self.window.start_s && elapsed_s <= self.window.end_s
    }

    /// Advances the phases to `t`, noting a change in the timeline.
    fn update_phases(&mut self, t: f64) -> TimingStatus {
        let (status, changed) = self.phases.update(t, &self.clock);
        if let Some(phase) = changed {
            self.timeline.push(TimelineEvent::Phase {
                at_s: t,
                phase,
                elapsed_s: status.elapsed_s,
            });
        }
        self.last_status = Some(status);
        status
    }

    /// The source's frames changed to `to` at `at_s`; they are read at `layout` from now on.
    /// A change inside the key-frame window drops the frames kept before it: a scanner's
    /// preset or output can change depth, gain and scale, so frames from both sides cannot
    /// be ranked against each other or share one ROI. After the window, the kept frames stay
    /// and so does their layout for ROIs.
    pub fn source_changed(
        &mut self,
        at_s: f64,
        to: FrameShape,
        layout: Layout,
        source: LayoutSource,
    ) -> &SourceChange {
        let b = self.settings.boundaries;
        let elapsed_s = self.clock.elapsed(at_s);
        let inside = elapsed_s.is_some_and(|e| e >= b.window_start_s && e < b.window_end_s);
        let after_window = elapsed_s.is_some_and(|e| e >= b.window_end_s);
        let kept_dropped = if inside { self.window.drop_kept() } else { 0 };
        if after_window && self.window_layout.is_none() {
            self.window_layout = Some(self.layout);
        }
        let change = SourceChange {
            at_s,
            elapsed_s,
            from: self.shape.unwrap_or(to),
            to,
            kept_dropped,
            after_window,
        };
        self.timeline
            .push(TimelineEvent::SourceChanged(change.clone()));
        self.timeline.push(TimelineEvent::Panes {
            at_s,
            layout,
            source: source.clone(),
        });
        // Frozen and motion checks compare a frame with the ones before it.
        self.quality = QualityTracker::new(self.settings.quality);
        (self.layout, self.layout_source, self.shape) = (layout, source, Some(to));
        self.source_changes.push(change);
        &self.source_changes[self.source_changes.len() - 1]
    }

    /// Pre-contrast level: the median CEUS pane mean of clean frames before the injection.
    fn baseline_level(&self) -> Option<f64> {
        let injection = self.clock.injection()?.at_s;
        let mut before: Vec<f64> = self
            .levels
            .iter()
            .filter(|(t, _)| *t < injection)
            .map(|&(_, v)| v)
            .collect();
        if before.is_empty() {
            return self.arrival.baseline().map(|(level, _)| level);
        }
        median(&mut before)
    }

    /// Scores the kept frames of the window at `roi` (frame coordinates, on the CEUS pane; a
    /// ROI on the B-mode pane is mapped across). Can be called again with another ROI
    /// (rescoring) without another injection.
    pub fn result(&self, model: &DlrModel, roi: &Roi) -> Result<ExamResult, ExamError> {
        let (ceus_roi, pane_roi) = self.pane_roi(roi)?;
        let meta = &model.metadata;
        let (reason, mut warnings) = self.assess();
        let enhancement = self.enhancement();
        if let Some(e) = enhancement {
            if e < self.settings.quality.low_enhancement as f64 {
                warnings.push(format!(
                    "low enhancement: the window is {e:.1} gray levels above the pre-contrast \
                     baseline"
                ));
            }
        }
        let frames = match reason {
            None => self.score_kept(model, roi, &pane_roi)?,
            Some(_) => Vec::new(),
        };
        let key_sequence = self.window.key().map(|k| k.sequence);
        let key_frame = frames
            .iter()
            .find(|f| Some(f.sequence) == key_sequence)
            .cloned();
        let spread = Spread::of(&frames);
        if let (Some(lo), Some(hi)) = (spread.min, spread.max) {
            if lo < meta.threshold && hi >= meta.threshold {
                warnings.push(format!(
                    "the window's frames disagree: scores {lo:.3}–{hi:.3} straddle the threshold {}",
                    meta.threshold
                ));
            }
        }
        if let Some(reason) = model.identity.training.untrained_reason() {
            warnings.push(format!(
                "model '{}' {reason}: the score is meaningless",
                model.identity.name
            ));
        }
        let score = key_frame.as_ref().map(|k| k.score);
        let negative = &meta.classes[1 - meta.positive_index()];
        Ok(ExamResult {
            label: score.map(|s| {
                if s >= meta.threshold {
                    meta.positive_class.clone()
                } else {
                    negative.clone()
                }
            }),
            score,
            reason,
            threshold: meta.threshold,
            positive_class: meta.positive_class.clone(),
            key_frame,
            frames,
            spread,
            roi: Some(ceus_roi),
            timing: ResultTiming::of(Some(self)),
            enhancement,
            warnings,
            model: model.identity.clone(),
        })
    }

    /// Window mean minus the pre-contrast baseline.
    fn enhancement(&self) -> Option<f64> {
        Some(self.window.mean_level()? - self.baseline_level()?)
    }

    /// Whether the exam can be scored (else the reason), and the warnings about its timing
    /// and the window's video.
    fn assess(&self) -> (Option<String>, Vec<String>) {
        let b = self.settings.boundaries;
        let injection = self.clock.injection();
        let counts = &self.window.counts;
        let mut warnings = Vec::new();
        let mut reason = None;
        let elapsed_end = self.last_s.and_then(|t| self.clock.elapsed(t));
        match (injection, elapsed_end) {
            (None, _) => {
                reason = Some(
                    "timing unknown: no injection mark, no recorded injection time, and no \
                     contrast arrival detected"
                        .to_string(),
                )
            }
            (Some(_), Some(e)) if e < b.window_start_s => {
                reason = Some(format!(
                    "the clip ends {e:.1} s after injection, before the key-frame window \
                     ({}–{} s)",
                    b.window_start_s, b.window_end_s
                ))
            }
            (Some(_), Some(e)) if e < b.window_end_s => warnings.push(format!(
                "the clip ends {e:.1} s after injection, inside the key-frame window: only \
                 {:.1}–{e:.1} s was seen",
                b.window_start_s
            )),
            _ => {}
        }
        warnings.extend(self.source_changes.iter().map(|c| c.to_string()));
        if let LayoutSource::Preset { .. } = &self.layout_source {
            warnings.push(format!("panes from the {}", self.layout_source));
        }
        if injection.is_some_and(|i| i.estimated) {
            warnings.push(format!(
                "timing estimated from contrast arrival (transit delay {} s assumed)",
                self.settings.arrival.transit_s
            ));
        }
        if reason.is_none() && self.window.kept().is_empty() {
            reason = Some(format!(
                "no usable frame in the key-frame window: {} frames, {} black, {} frozen, {} \
                 with the probe moving, {} next to motion",
                counts.frames, counts.black, counts.frozen, counts.moving, counts.near_motion
            ));
        }
        if counts.frames > 0 {
            let share = |n: usize| n as f64 / counts.frames as f64;
            if share(counts.moving + counts.near_motion) > 0.3 {
                warnings.push(format!(
                    "probe moving during the window ({} of {} frames)",
                    counts.moving + counts.near_motion,
                    counts.frames
                ));
            }
            if counts.frozen > 0 {
                warnings.push(format!(
                    "frozen image during the window ({} frames)",
                    counts.frozen
                ));
            }
            if counts.black > 0 {
                warnings.push(format!(
                    "black frames during the window ({} frames)",
                    counts.black
                ));
            }
        }
        (reason, warnings)
    }

    /// The kept frames of the window, each scored at the ROI (`pane_roi`: relative to the
    /// CEUS pane, as the panes are kept).
    fn score_kept(
        &self,
        model: &DlrModel,
        roi: &Roi,
        pane_roi: &Roi,
    ) -> Result<Vec<ScoredFrame>, ExamError> {
        let meta = &model.metadata;
        let kept = self.window.kept();
        let crops: Vec<GrayImage> = kept
            .iter()
            .map(|c| {
                let crop = pane_roi.crop(&c.ceus_pane).map_err(|e| ExamError::Roi {
                    roi: *roi,
                    reason: e.to_string(),
                })?;
                Ok(resize_gray(&crop, meta.input_size, meta.resize_filter)?)
            })
            .collect::<Result<_, ExamError>>()?;
        let out = model.forward_images(&crops)?;
        Ok(kept
            .iter()
            .zip(model.scores(&out)?)
            .map(|(c, s)| ScoredFrame {
                sequence: c.sequence,
                at_s: c.at_s,
                elapsed_s: c.elapsed_s,
                score: s.score,
                quality: c.quality,
            })
            .collect())
    }

    /// The Grad-CAM overlay of the key frame's ROI, when there is a key frame.
    pub fn key_frame_heatmap(
        &self,
        model: &DlrModel,
        roi: &Roi,
    ) -> Result<Option<image::RgbImage>, ExamError> {
        let Some(key) = self.window.key() else {
            return Ok(None);
        };
        let (_, pane_roi) = self.pane_roi(roi)?;
        let crop = pane_roi.crop(&key.ceus_pane).map_err(|e| ExamError::Roi {
            roi: *roi,
            reason: e.to_string(),
        })?;
        let meta = &model.metadata;
        let input = resize_gray(&crop, meta.input_size, meta.resize_filter)?;
        let out = model.forward_images(std::slice::from_ref(&input))?;
        let cam = model.gradcam(&out)?.squeeze(0).map_err(ModelError::from)?;
        let heat = crate::model::gradcam::upsample_normalised(&cam, crop.width(), crop.height())?;
        Ok(Some(crate::model::gradcam::overlay(&crop, &heat)?))
    }

    /// The key frame as the archive's key image shows it: its CEUS pane, the ROI on that
    /// pane and the Grad-CAM overlay of the ROI. `None` without a key frame.
    pub fn key_frame_picture(
        &self,
        model: &DlrModel,
        roi: &Roi,
    ) -> Result<Option<KeyFramePicture>, ExamError> {
        let (Some(key), Some(overlay)) = (self.window.key(), self.key_frame_heatmap(model, roi)?)
        else {
            return Ok(None);
        };
        let (_, roi_on_pane) = self.pane_roi(roi)?;
        Ok(Some(KeyFramePicture {
            ceus_pane: key.ceus_pane.clone(),
            roi_on_pane,
            overlay,
        }))
    }

    /// `roi` on the CEUS pane in frame coordinates, and relative to the pane (as the kept
    /// panes are stored).
    fn pane_roi(&self, roi: &Roi) -> Result<(Roi, Roi), ExamError> {
        let c = self.ceus_roi(roi)?;
        let pane = self.roi_layout().ceus;
        Ok((c, Roi::new(c.x - pane.x, c.y - pane.y, c.width, c.height)))
    }

    /// `roi` in frame coordinates: inside the CEUS pane as is, inside the B-mode pane mapped
    /// to the same tissue on the CEUS pane.
    pub fn ceus_roi(&self, roi: &Roi) -> Result<Roi, ExamError> {
        let layout = self.roi_layout();
        let c = layout.ceus;
        if c.contains(roi) {
            return Ok(*roi);
        }
        layout.bmode_to_ceus(roi).map_err(|_| ExamError::Roi {
            roi: *roi,
            reason: format!(
                "lies neither inside the B-mode pane {} nor inside the CEUS pane {}",
                layout.bmode, c
            ),
        })
    }

    /// The layout ROIs are read at: that of the kept frames.
    fn roi_layout(&self) -> Layout {
        self.window_layout.unwrap_or(self.layout)
    }
}

/// The layout of a frame: detected, else the preset for its size.
pub fn layout_of(frame: &Frame, presets: &Presets) -> Result<(Layout, LayoutSource), ExamError> {
    let gray = frame.gray_region(&Roi::full(frame.width, frame.height), LumaRange::Full)?;
    match crate::layout::detect(&gray) {
        Ok(l) => Ok((l, LayoutSource::Detected)),
        Err(detect_error) => presets
            .for_frame(frame.width, frame.height)
            .next()
            .map(|p| {
                let source = LayoutSource::Preset {
                    name: p.name.clone(),
                    detection: detect_error.to_string(),
                };
                (p.layout, source)
            })
            .ok_or_else(|| {
                ExamError::Layout(format!(
                    "{detect_error}, and no preset is for {}x{} frames",
                    frame.width, frame.height
                ))
            }),
    }
}
