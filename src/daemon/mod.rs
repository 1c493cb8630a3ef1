//! `ceusd run`: the service. Wiring of the parts, in the order a frame travels:
//!
//! ```text
//! capture thread ──(bounded, drop oldest)──► frame pipeline thread ──(jobs)──► inference thread
//!   FrameSource                                exam lifecycle, timing          result + heatmap
//!                                                     ▲     │                        │
//!                                        commands     │     │ status, timing,        │ outbox
//!                                                     │     ▼ replies                ▼ (SQLite)
//!                                             MQTT session (tokio) ◄──── PUBACK removes rows
//! ```
//!
//! systemd is told `READY=1` once the model is loaded and the source open, `STATUS=` on each
//! change of state, and `WATCHDOG=1` only while every stage makes progress (`health`). On
//! SIGTERM the result in flight is finished and stored, the outbox is drained while the
//! broker acknowledges, the status says offline, and the process exits 0.

pub mod archive_sender;
pub mod inference;
pub mod pipeline;
pub mod queue;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::capture::source::{FrameSource, SourceEvent};
use crate::config::Config;
use crate::exam_lifecycle::{ExamSetup, Recorded};
use crate::health::{systemd, Health};
use crate::model::DlrModel;
use crate::publish::messages::Topics;
use crate::publish::mqtt::{Outbound, Session};
use crate::publish::outbox::Outbox;
use crate::publish::preview::PreviewSettings;
use inference::InferenceWorker;
use pipeline::{Captured, Counters, Pipeline, PipelineSettings};
use queue::DropOldest;

/// Longest wait, on stopping, for the broker to acknowledge what is in the outbox.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("state directory {path}: {source}")]
    StateDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Outbox(#[from] crate::publish::outbox::OutboxError),
    #[error("source: {0}")]
    Source(String),
    #[error(transparent)]
    Mqtt(#[from] crate::publish::mqtt::MqttError),
    #[error("{0}")]
    Internal(String),
}

/// The model the configuration names: a file (checked against `model.sha256`) or the
/// embedded demo model.
pub fn load_model(config: &Config) -> Result<DlrModel, crate::model::ModelError> {
    let device = crate::model::parse_device(&config.model.device)?;
    let hash = config.model.sha256.as_ref().map(|h| h.as_str());
    load_model_from(&config.model.path, hash, &device)
}

/// A model file, or the embedded demo model for "demo"; `hash`, when given, must equal the
/// model's content hash exactly.
pub fn load_model_from(
    path: &str,
    hash: Option<&str>,
    device: &candle_core::Device,
) -> Result<DlrModel, crate::model::ModelError> {
    if path != "demo" {
        return DlrModel::load(std::path::Path::new(path), hash, device);
    }
    let model = crate::model::demo::demo_model(device)?;
    if let Some(want) = hash {
        if want != model.identity.content_hash {
            return Err(crate::model::ModelError::HashMismatch {
                path: "demo".into(),
                expected: want.to_string(),
                found: model.identity.content_hash.clone(),
            });
        }
    }
    Ok(model)
}

/// Opens the configured source (replays paced at `source.speed`).
pub fn open_source(config: &Config) -> Result<Box<dyn FrameSource>, DaemonError> {
    config
        .source
        .spec
        .open(config.source.pacing)
        .map_err(|e| DaemonError::Source(e.to_string()))
}

/// Runs the service until `stop` becomes true. `model` is loaded by the caller (it takes
/// seconds and its errors belong to startup).
pub async fn serve(
    config: Config,
    model: Arc<DlrModel>,
    stop: watch::Receiver<bool>,
) -> Result<(), DaemonError> {
    serve_source(config, model, None, stop).await
}

/// [`serve`] on a source the caller opened (the demo's gated synthetic scanner), or on the
/// configured one when `source` is `None`.
pub async fn serve_source(
    config: Config,
    model: Arc<DlrModel>,
    source: Option<Box<dyn FrameSource>>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), DaemonError> {
    let outbox = open_outbox(&config)?;
    let topics = Topics::new(&config.mqtt.topic_root, &config.device.id);
    let identity = &model.identity;
    log::info!(
        "model {} ({}), {}{}",
        identity.name,
        identity.content_hash,
        identity.intended_use,
        if identity.not_for_clinical_use {
            " — NOT FOR CLINICAL USE"
        } else {
            ""
        }
    );
    let source = match source {
        Some(s) => s,
        None => {
            let source_config = config.clone();
            tokio::task::spawn_blocking(move || open_source(&source_config))
                .await
                .map_err(|e| DaemonError::Internal(e.to_string()))??
        }
    };
    let source_name = source.describe();
    log::info!("source: {source_name}");
    let model_name = identity.name.clone();
    let mut running = start(&config, model, source, &source_name, outbox, &topics)?;

    systemd::ready(&format!("idle; source {source_name}; model {model_name}"));
    log::info!(
        "ready: device {}, topics under {}/, broker {}",
        config.device.id,
        topics.base,
        config.mqtt.broker
    );
    running.watchdog = systemd::watchdog_interval()
        .map(|every| tokio::spawn(feed_watchdog(running.health.clone(), every)));

    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            break;
        }
    }
    running.stop().await
}

/// Starts the threads (capture, pipeline, inference) and the MQTT session, linked by their
/// queues and channels.
fn start(
    config: &Config,
    model: Arc<DlrModel>,
    mut source: Box<dyn FrameSource>,
    source_name: &str,
    outbox: Arc<Mutex<Outbox>>,
    topics: &Topics,
) -> Result<Running, DaemonError> {
    let settings = pipeline_settings(config, source_name);
    let health = Health::new(config.pipeline.stall, config.pipeline.inference_stall);
    let stopping = Arc::new(AtomicBool::new(false));
    let frames = Arc::new(DropOldest::new(config.pipeline.frame_queue));
    let counters = Arc::new(Counters::default());
    let (outbound_tx, outbound_rx) = mpsc::channel::<Outbound>(256);
    let (command_tx, command_rx) = std::sync::mpsc::sync_channel(16);
    let (job_tx, job_rx) = std::sync::mpsc::sync_channel(4);
    let (done_tx, done_rx) = std::sync::mpsc::sync_channel(16);
    let (mqtt_stop_tx, mqtt_stop_rx) = watch::channel(false);
    let (connected_tx, _connected_rx) = watch::channel(false);
    // The PACS sender: not joined on stopping (a C-STORE may wait for its timeout); what it
    // has not sent stays in the outbox for the next start.
    let archive_wake = match &config.pacs {
        Some(pacs) => {
            let (wake_tx, wake_rx) = std::sync::mpsc::sync_channel(1);
            let sender = archive_sender::ArchiveSender {
                peer: pacs.peer.clone(),
                outbox: outbox.clone(),
                retry_min: pacs.retry_min,
                retry_max: pacs.retry_max,
                wake: wake_rx,
                stopping: stopping.clone(),
            };
            spawn_thread("pacs", move || sender.run())?;
            Some(wake_tx)
        }
        None => None,
    };

    // Capture: blocking calls into the driver, on their own thread. It is not joined on
    // stopping: a call stuck in a driver must not keep the service from exiting.
    {
        let frames = frames.clone();
        let heart = health.capture.clone();
        let stopping = stopping.clone();
        let counters = counters.clone();
        spawn_thread("capture", move || {
            capture_loop(source.as_mut(), &frames, &heart, &stopping, &counters);
        })?;
    }
    let identity = model.identity.clone();
    let inference = {
        let worker = InferenceWorker {
            model,
            topics: topics.clone(),
            outbox: outbox.clone(),
            outbound: outbound_tx.clone(),
            done: done_tx,
            heart: health.inference.clone(),
            archive: config
                .pacs
                .as_ref()
                .map(|pacs| crate::pacs::ArchiveSettings {
                    uid_root: pacs.uid_root.clone(),
                    equipment: crate::pacs::Equipment {
                        device_id: config.device.id.clone(),
                        institution_name: pacs.institution_name.clone(),
                    },
                }),
            archive_wake,
            worklist: config.pacs.as_ref().and_then(|p| p.worklist.clone()),
        };
        spawn_thread("inference", move || worker.run(job_rx))?
    };
    let pipeline = {
        let links = pipeline::Links {
            frames: frames.clone(),
            commands: command_rx,
            jobs: job_tx,
            done: done_rx,
            outbound: outbound_tx,
            outbox: outbox.clone(),
            counters,
            heart: health.pipeline.clone(),
            stopping: stopping.clone(),
        };
        let p = Pipeline::new(settings, topics.clone(), identity, links);
        spawn_thread("pipeline", move || p.run())?
    };
    let session = Session {
        options: crate::publish::mqtt::options(config, topics)?,
        topics: topics.clone(),
        outbox: outbox.clone(),
        outbound: outbound_rx,
        commands: command_tx,
        stopping: mqtt_stop_rx,
        drain_limit: DRAIN_LIMIT,
        reconnect: (config.mqtt.reconnect_min, config.mqtt.reconnect_max),
        heart: health.mqtt.clone(),
        connected: connected_tx,
        outbound_open: true,
    };
    Ok(Running {
        stopping,
        frames,
        pipeline,
        inference,
        mqtt_stop: mqtt_stop_tx,
        session: tokio::spawn(session.run()),
        watchdog: None,
        outbox,
        health,
    })
}

/// The service's threads and tasks once started, and how they are stopped: the pipeline
/// finishes the result in flight, the MQTT session drains the outbox, then the rest ends.
struct Running {
    stopping: Arc<AtomicBool>,
    frames: Arc<DropOldest<Captured>>,
    pipeline: std::thread::JoinHandle<()>,
    inference: std::thread::JoinHandle<()>,
    mqtt_stop: watch::Sender<bool>,
    session: tokio::task::JoinHandle<()>,
    watchdog: Option<tokio::task::JoinHandle<()>>,
    outbox: Arc<Mutex<Outbox>>,
    /// Every stage's heartbeat, for the watchdog.
    health: Health,
}

impl Running {
    async fn stop(self) -> Result<(), DaemonError> {
        let Running {
            stopping,
            frames,
            pipeline,
            inference,
            mqtt_stop,
            session,
            watchdog,
            outbox,
            health: _,
        } = self;
        log::info!("stopping: finishing the result in flight and draining the outbox");
        systemd::stopping("stopping: finishing results and draining the outbox");
        stopping.store(true, Ordering::Relaxed);
        frames.close();
        let joined = tokio::task::spawn_blocking(move || {
            let p = pipeline.join().is_ok();
            let i = inference.join().is_ok();
            p && i
        })
        .await
        .unwrap_or(false);
        if !joined {
            log::error!("a worker thread panicked while stopping");
        }
        let _ = mqtt_stop.send(true);
        if let Err(e) = session.await {
            log::error!("mqtt session: {e}");
        }
        if let Some(w) = watchdog {
            w.abort();
        }
        let left = outbox.lock().unwrap_or_else(|e| e.into_inner()).len()?;
        log::info!("stopped; {left} message(s) left in the outbox");
        Ok(())
    }
}

/// A named thread (the name shows in logs, `top -H` and a core dump).
fn spawn_thread(
    name: &str,
    run: impl FnOnce() + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, DaemonError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(run)
        .map_err(|e| DaemonError::Internal(format!("{name} thread: {e}")))
}

/// The state directory and the outbox in it, saying how many messages wait from before a
/// restart.
fn open_outbox(config: &Config) -> Result<Arc<Mutex<Outbox>>, DaemonError> {
    std::fs::create_dir_all(&config.state.dir).map_err(|source| DaemonError::StateDir {
        path: config.state.dir.clone(),
        source,
    })?;
    let mut outbox = Outbox::open(
        &config.state.dir.join("outbox.sqlite"),
        config.state.outbox_capacity,
    )?;
    if let Some(pacs) = &config.pacs {
        outbox = outbox.with_archive_capacity(pacs.capacity);
    }
    let waiting = outbox.len()?;
    if waiting > 0 {
        log::info!("outbox: {waiting} message(s) from before the restart will be sent");
    }
    let archive = outbox.archive_counts()?;
    if archive.waiting > 0 {
        log::info!(
            "outbox: {} object(s) for the PACS from before the restart will be sent",
            archive.waiting
        );
    }
    if archive.refused > 0 || archive.not_kept > 0 {
        log::warn!(
            "outbox: {} object(s) refused by the PACS and {} not kept (outbox full) never \
             reached it: see `ceusd check`",
            archive.refused,
            archive.not_kept
        );
    }
    Ok(Arc::new(Mutex::new(outbox)))
}

/// What the pipeline thread needs from the configuration: layout, exam settings, preview.
fn pipeline_settings(config: &Config, source_name: &str) -> PipelineSettings {
    let layout = config.source.layout.clone();
    PipelineSettings {
        device_id: config.device.id.clone(),
        source: source_name.to_string(),
        exam: ExamSetup {
            settings: config.exam.settings.clone(),
            layout: layout.fixed,
            presets: layout.presets,
            speed: config.source.clock_speed,
            follow_recorded_exams: config.exam.auto_start,
            stop_when_over: true,
        },
        timing_interval: config.exam.timing_interval,
        outbox_capacity: config.state.outbox_capacity,
        pacs_capacity: config.pacs.as_ref().map(|p| p.capacity),
        patient_id_from_commands: config
            .pacs
            .as_ref()
            .is_some_and(|p| p.patient_id_from_commands),
        state_file: config.state.dir.join("state.json"),
        preview: config.preview.map(|p| {
            (
                PreviewSettings {
                    width: p.width,
                    quality: p.quality,
                },
                p.interval,
            )
        }),
    }
}

/// Pings systemd's watchdog every `every` while every stage's heart beats; when one stops,
/// says once which, and lets systemd restart the service.
async fn feed_watchdog(health: Health, every: Duration) {
    let mut tick = tokio::time::interval(every);
    let mut reported = false;
    loop {
        tick.tick().await;
        let stuck = health.stuck();
        if stuck.is_empty() {
            systemd::watchdog();
            reported = false;
        } else if !reported {
            log::error!(
                "watchdog not fed, stuck: {}; systemd will restart the service",
                stuck.join("; ")
            );
            reported = true;
        }
    }
}

fn capture_loop(
    source: &mut dyn FrameSource,
    frames: &DropOldest<Captured>,
    heart: &crate::health::Heart,
    stopping: &AtomicBool,
    counters: &Counters,
) {
    while !stopping.load(Ordering::Relaxed) {
        let event = source.next_event();
        heart.beat();
        counters
            .dropped_by_source
            .store(source.dropped(), Ordering::Relaxed);
        let last = !matches!(
            event,
            Ok(SourceEvent::Frame(_) | SourceEvent::NoSignal { .. })
        );
        frames.push(Captured {
            event,
            recorded: Recorded::of(source),
        });
        if last {
            break;
        }
    }
    heart.finish();
}
