//! Health of the daemon's stages and what systemd is told about it. Each stage (capture,
//! frame pipeline, inference, MQTT) beats a heart whenever it makes progress, including
//! "no signal" reports from an idle scanner and idle ticks of a worker waiting for work. The
//! watchdog is fed only while every heart beats: a thread stuck inside a call (a driver, the
//! network, the database) stops its heart, the pings stop, and systemd restarts the service.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One stage's heartbeat.
pub struct Heart {
    pub name: &'static str,
    origin: Instant,
    /// Milliseconds since `origin` of the last beat.
    last_ms: AtomicU64,
    /// Milliseconds since `origin` when the current long job began (0 = none).
    busy_since_ms: AtomicU64,
    /// A finished stage (a replay that ended) is not expected to beat.
    finished: AtomicBool,
    /// How long without a beat counts as stuck.
    stall: Duration,
    /// How long one job may run.
    job_stall: Duration,
}

impl Heart {
    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    pub fn beat(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// A job that may legitimately run longer than the stall time begins (a model run).
    pub fn busy(&self) {
        self.busy_since_ms
            .store(self.now_ms().max(1), Ordering::Relaxed);
        self.beat();
    }

    pub fn idle(&self) {
        self.busy_since_ms.store(0, Ordering::Relaxed);
        self.beat();
    }

    pub fn finish(&self) {
        self.finished.store(true, Ordering::Relaxed);
    }

    /// Why this stage looks stuck, if it does.
    pub fn stuck(&self) -> Option<String> {
        if self.finished.load(Ordering::Relaxed) {
            return None;
        }
        let now = self.now_ms();
        let busy = self.busy_since_ms.load(Ordering::Relaxed);
        if busy != 0 {
            let for_ms = now.saturating_sub(busy);
            return (for_ms > self.job_stall.as_millis() as u64).then(|| {
                format!(
                    "{}: one job has run for {:.1} s",
                    self.name,
                    for_ms as f64 / 1000.0
                )
            });
        }
        let quiet_ms = now.saturating_sub(self.last_ms.load(Ordering::Relaxed));
        (quiet_ms > self.stall.as_millis() as u64).then(|| {
            format!(
                "{}: no progress for {:.1} s",
                self.name,
                quiet_ms as f64 / 1000.0
            )
        })
    }
}

/// All stages.
#[derive(Clone)]
pub struct Health {
    pub capture: Arc<Heart>,
    pub pipeline: Arc<Heart>,
    pub inference: Arc<Heart>,
    pub mqtt: Arc<Heart>,
}

impl Health {
    pub fn new(stall: Duration, inference_stall: Duration) -> Self {
        let origin = Instant::now();
        let heart = |name| {
            Arc::new(Heart {
                name,
                origin,
                last_ms: AtomicU64::new(0),
                busy_since_ms: AtomicU64::new(0),
                finished: AtomicBool::new(false),
                stall,
                job_stall: inference_stall,
            })
        };
        Self {
            capture: heart("capture"),
            pipeline: heart("frame pipeline"),
            inference: heart("inference"),
            mqtt: heart("mqtt"),
        }
    }

    /// Every stage that looks stuck; empty when healthy.
    pub fn stuck(&self) -> Vec<String> {
        [&self.capture, &self.pipeline, &self.inference, &self.mqtt]
            .iter()
            .filter_map(|h| h.stuck())
            .collect()
    }
}

/// Messages to systemd (`sd_notify`); without `NOTIFY_SOCKET` (not run by systemd) they are
/// no-ops.
pub mod systemd {
    use sd_notify::NotifyState;

    fn send(states: &[NotifyState]) {
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            log::warn!("systemd notify failed: {e}");
        }
    }

    pub fn ready(status: &str) {
        send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn status(status: &str) {
        send(&[NotifyState::Status(status)]);
    }

    pub fn watchdog() {
        send(&[NotifyState::Watchdog]);
    }

    pub fn stopping(status: &str) {
        send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }

    /// How often to ping: half the service's `WatchdogSec=`, when it has one.
    pub fn watchdog_interval() -> Option<std::time::Duration> {
        sd_notify::watchdog_enabled().map(|d| d / 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_stage_is_stuck_and_a_finished_one_is_not() {
        let h = Health::new(Duration::from_millis(30), Duration::from_millis(30));
        h.capture.beat();
        h.pipeline.beat();
        h.inference.beat();
        h.mqtt.beat();
        assert!(h.stuck().is_empty());
        std::thread::sleep(Duration::from_millis(60));
        h.pipeline.beat();
        h.inference.busy();
        h.mqtt.beat();
        h.capture.finish();
        assert!(h.stuck().is_empty(), "{:?}", h.stuck());
        std::thread::sleep(Duration::from_millis(60));
        h.pipeline.beat();
        h.mqtt.beat();
        let stuck = h.stuck();
        assert_eq!(stuck.len(), 1, "{stuck:?}");
        assert!(stuck[0].starts_with("inference: one job has run"));
    }
}
