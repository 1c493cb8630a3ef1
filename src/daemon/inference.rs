//! The inference worker: scores an exam's kept frames with the model, draws the Grad-CAM
//! heatmap of the key frame, and writes result and heatmap to the durable outbox in one
//! transaction before anything is published. It runs on its own thread, so a model run never
//! holds up frames or the MQTT session.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc as tokio_mpsc;

use crate::exam::{ExamResult, ResultTiming};
use crate::exam_lifecycle::ScoreRequest;
use crate::health::Heart;
use crate::model::DlrModel;
use crate::publish::messages::{HeatmapInfo, ResultMessage, Topics};
use crate::publish::mqtt::Outbound;
use crate::publish::outbox::{Outbox, OutgoingMessage};

/// One result to compute.
pub struct ScoringJob {
    pub request: ScoreRequest,
    /// When the result was asked for: the window's close, or the rescore command.
    pub requested: std::time::Instant,
}

/// What the worker reports back to the frame pipeline.
#[derive(Debug, Clone)]
pub struct ScoringDone {
    pub exam_id: String,
    pub result_id: String,
    pub score: Option<f32>,
    pub label: Option<String>,
    /// False when the result could not be stored (it is in the log).
    pub stored: bool,
}

pub struct InferenceWorker {
    pub model: Arc<DlrModel>,
    pub topics: Topics,
    pub outbox: Arc<Mutex<Outbox>>,
    pub outbound: tokio_mpsc::Sender<Outbound>,
    pub done: SyncSender<ScoringDone>,
    pub heart: Arc<Heart>,
}

impl InferenceWorker {
    /// Runs jobs until the sending side is gone; finishes the job in hand first.
    pub fn run(self, jobs: Receiver<ScoringJob>) {
        loop {
            self.heart.idle();
            let job = match jobs.recv_timeout(Duration::from_millis(500)) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            self.heart.busy();
            let (mut message, heatmap) = score_job(&self.model, &self.topics, &job.request);
            message.window_to_result_ms = Some(job.requested.elapsed().as_millis() as u64);
            let stored = self.store(&message, heatmap);
            let _ = self.outbound.blocking_send(Outbound::OutboxChanged);
            // For the pipeline's log only: never wait for it.
            let _ = self.done.try_send(ScoringDone {
                exam_id: job.request.exam_id,
                result_id: job.request.result_id,
                score: message.result.score,
                label: message.result.label,
                stored,
            });
        }
        self.heart.finish();
    }

    /// Writes the result (and heatmap) to the outbox; retries while it is full, so a result
    /// is never thrown away while the daemon runs.
    fn store(&self, message: &ResultMessage, heatmap: Option<Vec<u8>>) -> bool {
        let json = match serde_json::to_vec(message) {
            Ok(j) => j,
            Err(e) => {
                log::error!("result {}: {e}", message.result_id);
                return false;
            }
        };
        let mut messages = vec![OutgoingMessage {
            topic: self.topics.result(&message.exam_id),
            payload: json.clone(),
            retain: true,
        }];
        // Without a heatmap, the topic is cleared: an earlier revision's image must not stay
        // retained beside this result.
        messages.push(OutgoingMessage {
            topic: self.topics.heatmap(&message.exam_id),
            payload: heatmap.unwrap_or_default(),
            retain: true,
        });
        for attempt in 0.. {
            let stored = self
                .outbox
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .enqueue(&message.result_id, &messages);
            match stored {
                Ok(()) => {
                    log::info!(
                        "exam {}: result {} stored: {}",
                        message.exam_id,
                        message.result_id,
                        crate::publish::messages::score_text(
                            message.result.score,
                            message.result.label.as_deref(),
                            message.result.reason.as_deref()
                        )
                    );
                    for warning in &message.result.warnings {
                        log::warn!(
                            "exam {}: result {}: {warning}",
                            message.exam_id,
                            message.result_id
                        );
                    }
                    return true;
                }
                Err(e) if attempt % 30 == 0 => {
                    log::error!(
                        "result {} not stored yet ({e}); retrying. Result: {}",
                        message.result_id,
                        String::from_utf8_lossy(&json)
                    );
                }
                Err(_) => {}
            }
            if attempt >= 600 {
                break;
            }
            self.heart.beat();
            std::thread::sleep(Duration::from_secs(1));
        }
        log::error!(
            "result {} could not be stored in 10 minutes; it is only in this log",
            message.result_id
        );
        false
    }
}

/// What the inference worker computes for one job: the result message and its heatmap PNG
/// (scoring the window's kept frames, then Grad-CAM on the key frame). Public for the
/// benchmark that times a window's close to its result.
pub fn score_job(
    model: &DlrModel,
    topics: &Topics,
    job: &ScoreRequest,
) -> (ResultMessage, Option<Vec<u8>>) {
    let (result, heatmap) = score_exam(model, topics, job);
    let (png, info) = heatmap.unzip();
    let message = ResultMessage::new(&job.result_id, &job.exam_id, job.revision, result, info);
    (message, png)
}

/// The exam's result, and its heatmap PNG when it has a score.
fn score_exam(
    model: &DlrModel,
    topics: &Topics,
    job: &ScoreRequest,
) -> (ExamResult, Option<(Vec<u8>, HeatmapInfo)>) {
    let exam = job.exam.as_deref();
    let unscored =
        |reason: String| ExamResult::unscored(reason, job.roi, ResultTiming::of(exam), model);
    let Some(exam) = exam else {
        return (unscored("no frame arrived during the exam".into()), None);
    };
    let Some(roi) = job.roi else {
        return (
            unscored("no ROI was set: draw the lesion's ROI, then rescore".into()),
            None,
        );
    };
    let result = match exam.result(model, &roi) {
        Ok(r) => r,
        Err(e) => {
            log::error!("exam {}: scoring failed: {e}", job.exam_id);
            return (unscored(format!("scoring failed: {e}")), None);
        }
    };
    if result.score.is_none() {
        return (result, None);
    }
    let heatmap = match exam.key_frame_heatmap(model, &roi) {
        Ok(Some(rgb)) => match heatmap_png(&rgb, &job.result_id) {
            Ok(png) => {
                let info = HeatmapInfo {
                    topic: topics.heatmap(&job.exam_id),
                    sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&png)),
                    width: rgb.width(),
                    height: rgb.height(),
                };
                Some((png, info))
            }
            Err(e) => {
                log::error!("exam {}: heatmap PNG: {e}", job.exam_id);
                None
            }
        },
        Ok(None) => None,
        Err(e) => {
            log::error!("exam {}: heatmap: {e}", job.exam_id);
            None
        }
    };
    (result, heatmap)
}

/// The heatmap as PNG, its result id in a text chunk (`ceusd:result_id`) so the image can be
/// matched with its result whatever the transport.
pub fn heatmap_png(rgb: &image::RgbImage, result_id: &str) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, rgb.width(), rgb.height());
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.add_text_chunk("ceusd:result_id".into(), result_id.into())?;
        let mut w = enc.write_header()?;
        w.write_image_data(rgb.as_raw())?;
        w.finish()?;
    }
    Ok(out)
}
