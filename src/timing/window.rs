//! The key-frame window (default 30–40 s after injection, target 35 s): K clean frames are
//! kept, in bounded memory, with their CEUS panes so that a new ROI can re-score them after
//! the window without another injection.
//!
//! The window is cut into K equal slots and each slot keeps its best frame, so the K frames
//! span the window: their median and spread say whether the whole pancreatic phase agrees,
//! which K neighbouring (nearly identical) frames could not. A frame's value is its sharpness
//! discounted by its distance from the target, sharpness / (1 + |t − target| / 5 s); the key
//! frame is the kept frame of highest value, so a frame 5 s off target must be twice as sharp
//! as one on target to be chosen.
//!
//! Black, frozen and moving frames are never kept. Because motion is measured over the
//! preceding second, the frames within `motion_margin_s` (1.5 s) of a moving frame, before and
//! after, are not kept either: a probe that starts moving has moved for up to a second before
//! it is flagged.
//!
//! K = 8 by default: enough for a median and a spread that mean something, few enough that the
//! panes (about 0.8 MB each at 1080p) and one batch of inference stay small.

use image::GrayImage;
use serde::Serialize;

use crate::quality::FrameQuality;

#[derive(Debug, Clone)]
pub struct Candidate {
    /// Seconds after injection.
    pub elapsed_s: f64,
    /// Source time and sequence number of the frame.
    pub at_s: f64,
    pub sequence: u64,
    pub quality: FrameQuality,
    pub ceus_pane: GrayImage,
    pub value: f64,
    /// Which of the K slots of the window it holds.
    pub slot: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct WindowCounts {
    pub frames: usize,
    pub clean: usize,
    pub black: usize,
    pub frozen: usize,
    pub moving: usize,
    /// Clean frames not kept because they were next to motion.
    pub near_motion: usize,
    /// Sum of the CEUS pane means of clean frames, for the mean enhancement.
    #[serde(skip)]
    pub mean_sum: f64,
}

#[derive(Debug, Clone)]
pub struct KeyFrameWindow {
    pub start_s: f64,
    pub end_s: f64,
    pub target_s: f64,
    pub capacity: usize,
    pub motion_margin_s: f64,
    kept: Vec<Candidate>,
    last_moving_s: Option<f64>,
    pub counts: WindowCounts,
}

impl KeyFrameWindow {
    pub fn new(start_s: f64, end_s: f64, target_s: f64, capacity: usize) -> Self {
        Self {
            start_s,
            end_s,
            target_s,
            capacity: capacity.max(1),
            motion_margin_s: 1.5,
            kept: Vec::new(),
            last_moving_s: None,
            counts: WindowCounts::default(),
        }
    }

    pub fn value(&self, elapsed_s: f64, quality: &FrameQuality) -> f64 {
        quality.sharpness as f64 / (1.0 + (elapsed_s - self.target_s).abs() / 5.0)
    }

    /// Offers a frame `elapsed_s` after injection. The pane is copied only when kept.
    pub fn offer(
        &mut self,
        elapsed_s: f64,
        at_s: f64,
        sequence: u64,
        quality: FrameQuality,
        ceus_pane: &GrayImage,
    ) {
        if quality.moving {
            // Frames kept just before the motion was flagged go too.
            let margin = self.motion_margin_s;
            let before = self.kept.len();
            self.kept.retain(|c| elapsed_s - c.elapsed_s > margin);
            self.counts.near_motion += before - self.kept.len();
            self.last_moving_s = Some(elapsed_s);
        }
        if elapsed_s < self.start_s || elapsed_s > self.end_s {
            return;
        }
        self.counts.frames += 1;
        if quality.black {
            self.counts.black += 1;
            return;
        }
        if quality.frozen {
            self.counts.frozen += 1;
            return;
        }
        if quality.moving {
            self.counts.moving += 1;
            return;
        }
        self.counts.clean += 1;
        self.counts.mean_sum += quality.mean as f64;
        if self
            .last_moving_s
            .is_some_and(|m| elapsed_s - m <= self.motion_margin_s)
        {
            self.counts.near_motion += 1;
            return;
        }
        let value = self.value(elapsed_s, &quality);
        let slot = (((elapsed_s - self.start_s) / (self.end_s - self.start_s)
            * self.capacity as f64) as usize)
            .min(self.capacity - 1);
        if let Some(i) = self.kept.iter().position(|c| c.slot == slot) {
            if value <= self.kept[i].value {
                return;
            }
            self.kept.swap_remove(i);
        }
        self.kept.push(Candidate {
            elapsed_s,
            at_s,
            sequence,
            quality,
            ceus_pane: ceus_pane.clone(),
            value,
            slot,
        });
    }

    /// The kept frames in time order.
    pub fn kept(&self) -> Vec<&Candidate> {
        let mut k: Vec<&Candidate> = self.kept.iter().collect();
        k.sort_by(|a, b| a.elapsed_s.total_cmp(&b.elapsed_s));
        k
    }

    /// Drops the frames kept so far (they can no longer be compared with those to come);
    /// returns how many there were.
    pub fn drop_kept(&mut self) -> usize {
        std::mem::take(&mut self.kept).len()
    }

    /// The key frame: the kept frame of highest value.
    pub fn key(&self) -> Option<&Candidate> {
        self.kept.iter().max_by(|a, b| a.value.total_cmp(&b.value))
    }

    /// Mean CEUS pane level of the clean frames of the window.
    pub fn mean_level(&self) -> Option<f64> {
        (self.counts.clean > 0).then(|| self.counts.mean_sum / self.counts.clean as f64)
    }
}
