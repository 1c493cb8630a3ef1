//! The inference worker: scores an exam's kept frames with the model, draws the Grad-CAM
//! heatmap of the key frame, and writes result and heatmap to the durable outbox in one
//! transaction before anything is published. It runs on its own thread, so a model run never
//! holds up frames or the MQTT session.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc as tokio_mpsc;

use crate::exam::{ExamResult, KeyFramePicture, ResultTiming};
use crate::exam_lifecycle::{ExamOrder, ScoreRequest};
use crate::health::Heart;
use crate::model::DlrModel;
use crate::pacs::network::PacsPeer;
use crate::pacs::worklist::{self, WorklistError};
use crate::pacs::{build_objects, ArchiveSettings, DicomObject, ExamContext, ResultToArchive};
use crate::publish::messages::{HeatmapInfo, ResultMessage, Topics};
use crate::publish::mqtt::Outbound;
use crate::publish::outbox::{ArchiveQueued, Outbox, OutgoingMessage};

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
    /// Set when results go to a PACS: their DICOM objects are stored with them.
    pub archive: Option<ArchiveSettings>,
    /// Told when objects for the PACS were stored.
    pub archive_wake: Option<SyncSender<()>>,
    /// The modality worklist that gives an exam its patient and study.
    pub worklist: Option<PacsPeer>,
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
            let scored = score_with_key_frame(&self.model, &self.topics, &job.request);
            let (mut message, heatmap) = (scored.message, scored.heatmap);
            message.window_to_result_ms = Some(job.requested.elapsed().as_millis() as u64);
            let objects = match &self.archive {
                Some(settings) => {
                    let context = self.exam_context(&job.request.order, &mut message);
                    archive_objects(settings, &context, &message, scored.key_frame.as_ref())
                }
                None => Vec::new(),
            };
            let stored = self.store(&message, heatmap, &objects);
            let _ = self.outbound.blocking_send(Outbound::OutboxChanged);
            if stored && !objects.is_empty() {
                if let Some(wake) = &self.archive_wake {
                    let _ = wake.try_send(());
                }
            }
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

    /// Who and what the exam is for: what start_exam said, completed from the worklist
    /// entry of its accession number. When the worklist cannot say, the result's warnings
    /// say why (without the accession number or any patient data: they go on MQTT) and the
    /// objects join a new study.
    fn exam_context(&self, order: &ExamOrder, message: &mut ResultMessage) -> ExamContext {
        let given = ExamContext {
            accession_number: order.accession_number.clone(),
            patient_id: order.patient_id.clone(),
            source: (order.accession_number.is_some() || order.patient_id.is_some())
                .then(|| "the operator (start_exam)".to_string()),
            ..ExamContext::default()
        };
        let Some(peer) = &self.worklist else {
            return given;
        };
        let warn = |message: &mut ResultMessage, text: String| {
            log::warn!("result {}: {text}", message.result_id);
            message.result.warnings.push(text);
        };
        let Some(accession) = &order.accession_number else {
            warn(
                message,
                "no accession number was given at start_exam: the worklist was not asked and the \
                 report for the PACS joins a new study"
                    .into(),
            );
            return given;
        };
        let now = std::time::SystemTime::now();
        match worklist::find_by_accession(peer, accession, &peer.calling_ae_title, now) {
            Ok(Some(entry)) => {
                if order.patient_id.is_some() && order.patient_id != entry.patient_id {
                    warn(
                        message,
                        "the patient id given at start_exam is not the worklist entry's: neither \
                         is used, the report for the PACS joins a new study; reconcile it by hand"
                            .into(),
                    );
                    return ExamContext::default();
                }
                log::info!(
                    "result {}: exam context from the worklist {peer}",
                    message.result_id
                );
                entry
            }
            Ok(None) => {
                warn(
                    message,
                    format!(
                        "no entry of the worklist {peer} has this exam's accession number: the \
                         report for the PACS joins a new study"
                    ),
                );
                given
            }
            Err(e) => {
                // The full error in the journal; on MQTT only what names no patient.
                log::error!("result {}: {e}", message.result_id);
                let why = match e {
                    WorklistError::Network(_) => format!("worklist {peer} unreachable"),
                    WorklistError::Failed { status, .. } => {
                        format!("worklist {peer} answered status {status:04X}")
                    }
                    WorklistError::Ambiguous { count, .. } => {
                        format!("{count} entries of the worklist {peer} share the accession number")
                    }
                    WorklistError::BadEntry { .. } => {
                        format!("the worklist {peer} entry cannot be used (see the journal)")
                    }
                };
                warn(
                    message,
                    format!("{why}: the exam went on without its context; the report for the PACS joins a new study"),
                );
                given
            }
        }
    }

    /// Writes the result (and heatmap, and its objects for the PACS) to the outbox; retries
    /// while it is full, so a result is never thrown away while the daemon runs.
    fn store(
        &self,
        message: &ResultMessage,
        heatmap: Option<Vec<u8>>,
        objects: &[DicomObject],
    ) -> bool {
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
                .enqueue_with_archive(&message.result_id, &messages, objects);
            match stored {
                Ok(queued) => {
                    if let ArchiveQueued::NotKept { capacity } = queued {
                        log::error!(
                            "result {}: its {} DICOM object(s) are NOT kept for the PACS: \
                             {capacity} objects already wait for it (is the PACS down?)",
                            message.result_id,
                            objects.len()
                        );
                    }
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

/// The result's DICOM objects for the PACS. An object that cannot be made is logged: the
/// result still goes to the bedside.
fn archive_objects(
    settings: &ArchiveSettings,
    context: &ExamContext,
    message: &ResultMessage,
    key_frame: Option<&KeyFramePicture>,
) -> Vec<DicomObject> {
    let made = build_objects(
        settings,
        &ResultToArchive {
            result: &message.result,
            exam_id: &message.exam_id,
            result_id: &message.result_id,
            context,
            key_frame,
            created: std::time::SystemTime::now(),
        },
    );
    match made {
        Ok(made) => made.objects,
        Err(e) => {
            log::error!(
                "result {}: its DICOM objects for the PACS could not be made: {e}",
                message.result_id
            );
            Vec::new()
        }
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
    let scored = score_with_key_frame(model, topics, job);
    (scored.message, scored.heatmap)
}

/// One job's result message, heatmap PNG, and the key frame the PACS's key image shows.
pub struct Scored {
    pub message: ResultMessage,
    pub heatmap: Option<Vec<u8>>,
    pub key_frame: Option<KeyFramePicture>,
}

/// [`score_job`], keeping the key frame's picture (its pane, ROI and Grad-CAM overlay).
pub fn score_with_key_frame(model: &DlrModel, topics: &Topics, job: &ScoreRequest) -> Scored {
    let (result, key_frame) = score_exam(model, job);
    let heatmap = key_frame.as_ref().and_then(|picture| {
        match heatmap_png(&picture.overlay, &job.result_id) {
            Ok(png) => {
                let info = HeatmapInfo {
                    topic: topics.heatmap(&job.exam_id),
                    sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&png)),
                    width: picture.overlay.width(),
                    height: picture.overlay.height(),
                };
                Some((png, info))
            }
            Err(e) => {
                log::error!("exam {}: heatmap PNG: {e}", job.exam_id);
                None
            }
        }
    });
    let (png, info) = heatmap.unzip();
    let message = ResultMessage::new(&job.result_id, &job.exam_id, job.revision, result, info);
    Scored {
        message,
        heatmap: png,
        key_frame,
    }
}

/// The exam's result, and its key frame's picture (with the Grad-CAM overlay) when it has a
/// score.
fn score_exam(model: &DlrModel, job: &ScoreRequest) -> (ExamResult, Option<KeyFramePicture>) {
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
    let key_frame = match exam.key_frame_picture(model, &roi) {
        Ok(picture) => picture,
        Err(e) => {
            log::error!("exam {}: heatmap: {e}", job.exam_id);
            None
        }
    };
    (result, key_frame)
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
