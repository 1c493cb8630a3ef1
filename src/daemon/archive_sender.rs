//! The PACS sender: a thread that takes the objects waiting in the outbox's PACS table and
//! stores them in the PACS (C-STORE), oldest first. An object leaves the outbox only when the
//! PACS says it keeps it; while the PACS cannot be reached each object waits longer before
//! its next try (doubling from `retry_min` to `retry_max`), across restarts of the daemon
//! (the next try's time is in the outbox). An object the PACS refuses for good stays in the
//! outbox with the PACS's reason and is not sent again.
//!
//! Objects keep their SOP Instance UIDs however often they are sent, so an object sent again
//! after a crash between the PACS's answer and the outbox's update is the same object to the
//! PACS, not a second copy.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::pacs::network::{self, PacsPeer, StoreOutcome};
use crate::pacs::DicomObject;
use crate::publish::messages::unix_ms;
use crate::publish::outbox::{Outbox, WaitingObject};

/// Objects sent in one pass (each SOP class over its own association).
const BATCH: usize = 16;

pub struct ArchiveSender {
    pub peer: PacsPeer,
    pub outbox: Arc<Mutex<Outbox>>,
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// A message here says new objects were stored: look now, not at the next tick.
    pub wake: Receiver<()>,
    pub stopping: Arc<AtomicBool>,
}

impl ArchiveSender {
    /// Sends until the daemon stops.
    pub fn run(self) {
        let mut unreachable_since_logged = false;
        while !self.stopping.load(Ordering::Relaxed) {
            let due = match self.lock().archive_due(unix_ms() as i64, BATCH) {
                Ok(due) => due,
                Err(e) => {
                    log::error!("PACS sender: {e}");
                    self.pause(Duration::from_secs(5));
                    continue;
                }
            };
            if due.is_empty() {
                self.pause(self.until_next_due());
                continue;
            }
            let mut groups = by_sop_class(due).into_iter();
            while let Some((sop_class, objects)) = groups.next() {
                if self.stopping.load(Ordering::Relaxed) {
                    return;
                }
                let to_store: Vec<&DicomObject> = objects.iter().map(|o| &o.object).collect();
                match network::store(&self.peer, &sop_class, &to_store) {
                    Ok(outcomes) => {
                        if unreachable_since_logged {
                            log::info!("PACS {} reachable again", self.peer);
                            unreachable_since_logged = false;
                        }
                        for (object, outcome) in objects.iter().zip(outcomes) {
                            self.record(object, outcome);
                        }
                    }
                    Err(e) => {
                        // No association: the other classes' objects would fare no better.
                        let all: Vec<WaitingObject> = objects
                            .into_iter()
                            .chain(groups.by_ref().flat_map(|(_, o)| o))
                            .collect();
                        let next = all
                            .iter()
                            .map(|o| self.retry_after(o.attempts))
                            .min()
                            .unwrap_or(self.retry_min);
                        log::warn!(
                            "PACS {e}; {} object(s) due wait for it, next try in {:.1} s",
                            all.len(),
                            next.as_secs_f64()
                        );
                        unreachable_since_logged = true;
                        for object in &all {
                            self.retry(object, &e.to_string());
                        }
                    }
                }
            }
        }
    }

    /// Writes what the PACS said about `object` to the outbox.
    fn record(&self, object: &WaitingObject, outcome: StoreOutcome) {
        let what = format!(
            "result {}: {} {}",
            object.result_id,
            object.object.kind.name(),
            object.object.sop_instance_uid
        );
        let written = match outcome {
            StoreOutcome::Stored => {
                log::info!("{what} stored in the PACS {}", self.peer);
                self.lock().archive_stored(object.id)
            }
            StoreOutcome::StoredWithWarning { status, comment } => {
                log::warn!(
                    "{what} stored in the PACS {} with warning {status:04X}: {comment}",
                    self.peer
                );
                self.lock().archive_stored(object.id)
            }
            StoreOutcome::Refused { reason } => {
                log::error!(
                    "{what} REFUSED by the PACS {}: {reason}; kept in the outbox, not sent again",
                    self.peer
                );
                self.lock().archive_refused(object.id, &reason)
            }
            StoreOutcome::TryLater { reason } => {
                log::warn!("{what} not stored yet: {reason}");
                self.retry(object, &reason);
                Ok(())
            }
        };
        if let Err(e) = written {
            log::error!("{what}: {e}");
        }
    }

    fn retry(&self, object: &WaitingObject, reason: &str) {
        let next = unix_ms() as i64 + self.retry_after(object.attempts).as_millis() as i64;
        if let Err(e) = self.lock().archive_retry(object.id, next, reason) {
            log::error!("result {}: {e}", object.result_id);
        }
    }

    /// The wait after `attempts` failed tries: doubling from `retry_min`, at most `retry_max`.
    fn retry_after(&self, attempts: u32) -> Duration {
        let factor = 2f64.powi(attempts.min(30) as i32);
        self.retry_min.mul_f64(factor).min(self.retry_max)
    }

    /// How long until the next waiting object is due; at most a second, so that stopping
    /// is seen.
    fn until_next_due(&self) -> Duration {
        let next = self.lock().archive_next_due().ok().flatten();
        let second = Duration::from_secs(1);
        match next {
            Some(at) => Duration::from_millis((at - unix_ms() as i64).clamp(0, 1000) as u64),
            None => second,
        }
    }

    fn pause(&self, wait: Duration) {
        if let Err(std::sync::mpsc::RecvTimeoutError::Disconnected) = self.wake.recv_timeout(wait) {
            // The inference worker is gone (stopping): wait all the same.
            std::thread::sleep(wait);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Objects grouped by SOP class, each group in outbox order.
fn by_sop_class(objects: Vec<WaitingObject>) -> BTreeMap<String, Vec<WaitingObject>> {
    let mut groups: BTreeMap<String, Vec<WaitingObject>> = BTreeMap::new();
    for object in objects {
        groups
            .entry(object.object.sop_class_uid.clone())
            .or_default()
            .push(object);
    }
    groups
}
