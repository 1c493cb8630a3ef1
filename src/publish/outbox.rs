//! The durable outbox: every result and its heatmap are written to SQLite before they are
//! published, and removed only when the broker has acknowledged them (QoS 1 PUBACK). After a
//! broker outage or a restart of the daemon, whatever is still in the outbox is sent again, in
//! the order it was written. A result's messages share its result id, so a subscriber that
//! receives a message twice (sent, then sent again after a restart before the PUBACK was seen)
//! can tell it is the same result.
//!
//! SQLite in WAL mode with `synchronous = FULL`: a committed result survives the process being
//! killed and the cart losing power. The outbox is bounded; when it is full a new result is
//! refused with an error (the caller reports it and keeps the result on screen), never dropped
//! silently, and `fill` tells the status when it is filling.
//!
//! The objects for the hospital's archive (PACS) wait in a second table of the same database,
//! written in the same transaction as the result's messages, and leave it only when the PACS
//! has said it keeps them (`archive_*`). An object the PACS refuses for good stays, with the
//! PACS's reason, for the status and `ceusd check` to report. That table is bounded too: when
//! it is full, a new result's objects are recorded as not kept (never silently dropped) while
//! the result itself is still stored and published.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};

use crate::pacs::{DicomObject, ObjectKind};

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox {path}: {source}")]
    Database {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("outbox {path} is full ({capacity} messages waiting for the broker)")]
    Full { path: PathBuf, capacity: usize },
    #[error("outbox: result '{0}' has no messages")]
    Empty(String),
    #[error("outbox {path}: cannot make it readable by the service alone: {source}")]
    Permissions {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

/// A message waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Position in the outbox (publish order).
    pub id: i64,
    pub result_id: String,
    pub message: OutgoingMessage,
    /// How many times it was handed to the MQTT client.
    pub attempts: u32,
}

pub struct Outbox {
    path: PathBuf,
    conn: Connection,
    capacity: usize,
    /// Objects for the PACS the outbox holds (waiting or refused).
    archive_capacity: usize,
}

/// An object waiting for the PACS.
#[derive(Debug, Clone)]
pub struct WaitingObject {
    pub id: i64,
    pub result_id: String,
    pub object: DicomObject,
    /// How many times sending it failed.
    pub attempts: u32,
}

/// What the outbox holds for the PACS, for the status and `ceusd check`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveCounts {
    /// Objects the PACS has not kept yet.
    pub waiting: usize,
    /// Objects the PACS refused for good, kept with its reason.
    pub refused: usize,
    /// Objects not kept because the table was full when their result was stored.
    pub not_kept: usize,
    /// Why the oldest waiting object has not been sent yet, if it was tried.
    pub last_error: Option<String>,
    /// The newest refusal's reason.
    pub last_refusal: Option<String>,
}

/// What `enqueue_with_archive` did with a result's objects for the PACS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveQueued {
    /// Queued (or queued before: the same SOP instances are not queued twice).
    Queued,
    /// The table was full: recorded as not kept.
    NotKept { capacity: usize },
}

impl Outbox {
    /// Opens (or creates) the outbox at `path`, holding at most `capacity` messages.
    pub fn open(path: &Path, capacity: usize) -> Result<Self, OutboxError> {
        let db = |source| OutboxError::Database {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(db)?;
        // What waits for the PACS carries the patient's name and ids: the database is the
        // service's alone. SQLite gives its -wal and -shm files the database's mode.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
                |e| OutboxError::Permissions {
                    path: path.to_path_buf(),
                    source: e,
                },
            )?;
        }
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS outbox (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 result_id TEXT NOT NULL,
                 topic TEXT NOT NULL,
                 payload BLOB NOT NULL,
                 retain INTEGER NOT NULL,
                 attempts INTEGER NOT NULL DEFAULT 0,
                 created TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
                 UNIQUE (result_id, topic)
             );
             CREATE TABLE IF NOT EXISTS archive_outbox (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 result_id TEXT NOT NULL,
                 kind TEXT NOT NULL,
                 sop_class_uid TEXT NOT NULL,
                 sop_instance_uid TEXT NOT NULL UNIQUE,
                 file BLOB,
                 attempts INTEGER NOT NULL DEFAULT 0,
                 next_attempt_ms INTEGER NOT NULL DEFAULT 0,
                 last_error TEXT,
                 refused TEXT,
                 created TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
             );",
        )
        .map_err(db)?;
        Ok(Self {
            path: path.to_path_buf(),
            conn,
            capacity: capacity.max(1),
            // Set by `with_archive_capacity` where results go to a PACS.
            archive_capacity: capacity.max(1),
        })
    }

    /// Bounds the objects kept for the PACS (waiting or refused).
    pub fn with_archive_capacity(mut self, capacity: usize) -> Self {
        self.archive_capacity = capacity.max(1);
        self
    }

    fn db(&self, source: rusqlite::Error) -> OutboxError {
        OutboxError::Database {
            path: self.path.clone(),
            source,
        }
    }

    /// Writes all messages of one result in one transaction: all of them or none. Writing the
    /// same result again (same id and topics) changes nothing.
    pub fn enqueue(
        &mut self,
        result_id: &str,
        messages: &[OutgoingMessage],
    ) -> Result<(), OutboxError> {
        self.enqueue_with_archive(result_id, messages, &[])
            .map(|_| ())
    }

    /// [`enqueue`](Self::enqueue), and in the same transaction the result's objects for the
    /// PACS: when their table is full they are recorded as not kept, and the messages are
    /// stored all the same (the bedside must still see the result).
    pub fn enqueue_with_archive(
        &mut self,
        result_id: &str,
        messages: &[OutgoingMessage],
        objects: &[DicomObject],
    ) -> Result<ArchiveQueued, OutboxError> {
        if messages.is_empty() {
            return Err(OutboxError::Empty(result_id.to_string()));
        }
        let waiting = self.len()?;
        let known: usize = {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT COUNT(*) FROM outbox WHERE result_id = ?1")
                .map_err(|e| self.db(e))?;
            stmt.query_row(params![result_id], |r| r.get::<_, i64>(0))
                .map_err(|e| self.db(e))? as usize
        };
        if known == 0 && waiting + messages.len() > self.capacity {
            return Err(OutboxError::Full {
                path: self.path.clone(),
                capacity: self.capacity,
            });
        }
        let path = self.path.clone();
        let db = |source| OutboxError::Database {
            path: path.clone(),
            source,
        };
        let archive_capacity = self.archive_capacity;
        let tx = self.conn.transaction().map_err(db)?;
        for m in messages {
            tx.execute(
                "INSERT OR IGNORE INTO outbox (result_id, topic, payload, retain) VALUES (?1, ?2, ?3, ?4)",
                params![result_id, m.topic, m.payload, m.retain as i64],
            )
            .map_err(db)?;
        }
        let mut queued = ArchiveQueued::Queued;
        if !objects.is_empty() {
            let kept: i64 = tx
                .query_row(
                    "SELECT COUNT(*) FROM archive_outbox WHERE file IS NOT NULL",
                    [],
                    |r| r.get(0),
                )
                .map_err(db)?;
            let room = kept as usize + objects.len() <= archive_capacity;
            if !room {
                queued = ArchiveQueued::NotKept {
                    capacity: archive_capacity,
                };
            }
            for o in objects {
                let (file, note) = if room {
                    (Some(&o.bytes), None)
                } else {
                    (
                        None,
                        Some(format!(
                            "not kept: {archive_capacity} objects were already waiting for the PACS"
                        )),
                    )
                };
                tx.execute(
                    "INSERT OR IGNORE INTO archive_outbox
                         (result_id, kind, sop_class_uid, sop_instance_uid, file, last_error)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        result_id,
                        o.kind.name(),
                        o.sop_class_uid,
                        o.sop_instance_uid,
                        file,
                        note
                    ],
                )
                .map_err(db)?;
            }
        }
        tx.commit().map_err(db)?;
        Ok(queued)
    }

    /// Objects waiting for the PACS whose next try is due at `now_ms` (Unix milliseconds),
    /// oldest first, at most `limit`.
    pub fn archive_due(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<WaitingObject>, OutboxError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, result_id, kind, sop_class_uid, sop_instance_uid, file, attempts
                 FROM archive_outbox
                 WHERE file IS NOT NULL AND refused IS NULL AND next_attempt_ms <= ?1
                 ORDER BY id LIMIT ?2",
            )
            .map_err(|e| self.db(e))?;
        let rows = stmt
            .query_map(params![now_ms, limit], |r| {
                let kind: String = r.get(2)?;
                let kind = ObjectKind::from_name(&kind).ok_or_else(|| {
                    rusqlite::Error::FromSqlConversionFailure(
                        2,
                        rusqlite::types::Type::Text,
                        format!("unknown kind of DICOM object '{kind}'").into(),
                    )
                })?;
                Ok(WaitingObject {
                    id: r.get(0)?,
                    result_id: r.get(1)?,
                    object: DicomObject {
                        kind,
                        sop_class_uid: r.get(3)?,
                        sop_instance_uid: r.get(4)?,
                        bytes: r.get(5)?,
                    },
                    attempts: r.get::<_, i64>(6)? as u32,
                })
            })
            .map_err(|e| self.db(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.db(e))
    }

    /// When the next waiting object is due (Unix milliseconds); `None` when none waits.
    pub fn archive_next_due(&self) -> Result<Option<i64>, OutboxError> {
        self.conn
            .query_row(
                "SELECT MIN(next_attempt_ms) FROM archive_outbox
                 WHERE file IS NOT NULL AND refused IS NULL",
                [],
                |r| r.get::<_, Option<i64>>(0),
            )
            .map_err(|e| self.db(e))
    }

    /// The PACS keeps object `id`: it leaves the outbox.
    pub fn archive_stored(&self, id: i64) -> Result<(), OutboxError> {
        self.conn
            .execute("DELETE FROM archive_outbox WHERE id = ?1", params![id])
            .map_err(|e| self.db(e))?;
        Ok(())
    }

    /// Sending object `id` failed for a reason that may pass: try again at `next_ms`.
    pub fn archive_retry(&self, id: i64, next_ms: i64, error: &str) -> Result<(), OutboxError> {
        self.conn
            .execute(
                "UPDATE archive_outbox
                 SET attempts = attempts + 1, next_attempt_ms = ?2, last_error = ?3 WHERE id = ?1",
                params![id, next_ms, error],
            )
            .map_err(|e| self.db(e))?;
        Ok(())
    }

    /// The PACS refused object `id` for good: kept with the reason, not sent again.
    pub fn archive_refused(&self, id: i64, reason: &str) -> Result<(), OutboxError> {
        self.conn
            .execute(
                "UPDATE archive_outbox SET attempts = attempts + 1, refused = ?2 WHERE id = ?1",
                params![id, reason],
            )
            .map_err(|e| self.db(e))?;
        Ok(())
    }

    /// What waits for the PACS, what it refused and what was not kept.
    pub fn archive_counts(&self) -> Result<ArchiveCounts, OutboxError> {
        archive_counts(&self.conn).map_err(|e| self.db(e))
    }

    /// Everything waiting, in the order it was written.
    pub fn pending(&self) -> Result<Vec<StoredMessage>, OutboxError> {
        self.pending_limited(usize::MAX)
    }

    /// The `limit` oldest messages waiting, in the order they were written.
    pub fn pending_limited(&self, limit: usize) -> Result<Vec<StoredMessage>, OutboxError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, result_id, topic, payload, retain, attempts FROM outbox ORDER BY id LIMIT ?1",
            )
            .map_err(|e| self.db(e))?;
        let rows = stmt
            .query_map(params![limit], |r| {
                Ok(StoredMessage {
                    id: r.get(0)?,
                    result_id: r.get(1)?,
                    message: OutgoingMessage {
                        topic: r.get(2)?,
                        payload: r.get(3)?,
                        retain: r.get::<_, i64>(4)? != 0,
                    },
                    attempts: r.get::<_, i64>(5)? as u32,
                })
            })
            .map_err(|e| self.db(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.db(e))
    }

    /// Records that a message was handed to the MQTT client once more.
    pub fn mark_attempt(&self, id: i64) -> Result<(), OutboxError> {
        self.conn
            .execute(
                "UPDATE outbox SET attempts = attempts + 1 WHERE id = ?1",
                params![id],
            )
            .map_err(|e| self.db(e))?;
        Ok(())
    }

    /// The broker acknowledged message `id`: it leaves the outbox. Acknowledging a message
    /// that is gone already changes nothing.
    pub fn acknowledge(&self, id: i64) -> Result<bool, OutboxError> {
        let n = self
            .conn
            .execute("DELETE FROM outbox WHERE id = ?1", params![id])
            .map_err(|e| self.db(e))?;
        Ok(n == 1)
    }

    /// Messages waiting in the outbox at `path`, and what it holds for the PACS, read without
    /// writing anything (for `ceusd check`, which must not create or change the service's
    /// files).
    pub fn count_read_only(path: &Path) -> Result<(usize, ArchiveCounts), OutboxError> {
        let db = |source| OutboxError::Database {
            path: path.to_path_buf(),
            source,
        };
        use rusqlite::OpenFlags;
        let beside = |suffix: &str| {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            PathBuf::from(p)
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        // A WAL database read "read-only" still creates its -shm and -wal files when they are
        // missing. Missing, the database is whole in its main file (the last writer closed it):
        // read that file as immutable, creating nothing. Present (the service is running, or
        // stopped without closing), read through them.
        let conn = if beside("-wal").exists() || beside("-shm").exists() {
            Connection::open_with_flags(path, flags)
        } else {
            let uri = format!("file:{}?immutable=1", uri_path(path));
            Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)
        }
        .map_err(db)?;
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))
            .map_err(db)?;
        // An outbox written before the PACS table existed has none.
        let has_archive: bool = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'archive_outbox'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(db)?
            > 0;
        let archive = if has_archive {
            archive_counts(&conn).map_err(db)?
        } else {
            ArchiveCounts::default()
        };
        Ok((n as usize, archive))
    }

    /// Messages waiting.
    pub fn len(&self) -> Result<usize, OutboxError> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))
            .map_err(|e| self.db(e))?;
        Ok(n as usize)
    }

    pub fn is_empty(&self) -> Result<bool, OutboxError> {
        Ok(self.len()? == 0)
    }

    /// How full the outbox is, 0..1, for the status ("outbox filling" above 0.8).
    pub fn fill(&self) -> Result<f64, OutboxError> {
        Ok(self.len()? as f64 / self.capacity as f64)
    }

    /// The oldest waiting message of `result_id`, if any.
    pub fn first_of(&self, result_id: &str) -> Result<Option<i64>, OutboxError> {
        self.conn
            .query_row(
                "SELECT MIN(id) FROM outbox WHERE result_id = ?1",
                params![result_id],
                |r| r.get::<_, Option<i64>>(0),
            )
            .optional()
            .map(Option::flatten)
            .map_err(|e| self.db(e))
    }
}

fn archive_counts(conn: &Connection) -> Result<ArchiveCounts, rusqlite::Error> {
    let (waiting, refused, not_kept) = conn.query_row(
        "SELECT
             COUNT(*) FILTER (WHERE file IS NOT NULL AND refused IS NULL),
             COUNT(*) FILTER (WHERE refused IS NOT NULL),
             COUNT(*) FILTER (WHERE file IS NULL AND refused IS NULL)
         FROM archive_outbox",
        [],
        |r| {
            Ok((
                r.get::<_, i64>(0)? as usize,
                r.get::<_, i64>(1)? as usize,
                r.get::<_, i64>(2)? as usize,
            ))
        },
    )?;
    let last_error = conn
        .query_row(
            "SELECT last_error FROM archive_outbox
             WHERE file IS NOT NULL AND refused IS NULL ORDER BY id LIMIT 1",
            [],
            |r| r.get::<_, Option<String>>(0),
        )
        .optional()?
        .flatten();
    let last_refusal = conn
        .query_row(
            "SELECT refused FROM archive_outbox WHERE refused IS NOT NULL ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get::<_, Option<String>>(0),
        )
        .optional()?
        .flatten();
    Ok(ArchiveCounts {
        waiting,
        refused,
        not_kept,
        last_error,
        last_refusal,
    })
}

/// `path` as the path part of an SQLite `file:` URI (RFC 3986 escapes for what would end it).
fn uri_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        match b {
            b'?' | b'#' | b'%' | b' ' | 0x80..=0xff | 0..=0x1f => {
                out.push_str(&format!("%{b:02X}"))
            }
            _ => out.push(b as char),
        }
    }
    out
}
