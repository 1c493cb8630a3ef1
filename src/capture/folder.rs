//! Frame folders: a directory of PNG (or JPEG) frames with a `manifest.json` of their capture
//! times. `ceusd capture` writes them from any source; `frames:dir/` replays them. Teams
//! collecting exams for validation record with one and analyse with the other.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::frame::Frame;
use super::input_error::InputError;
use super::source::{FrameSource, Pacer, Pacing, SourceEvent};
use super::still;

pub const MANIFEST: &str = "manifest.json";
pub const MANIFEST_VERSION: u32 = 1;

/// One recorded frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFrame {
    /// File name inside the folder.
    pub file: String,
    /// The source's sequence number: gaps are frames the source lost.
    pub sequence: u64,
    /// Capture time in seconds from the first frame of the recording.
    pub timestamp_s: f64,
}

/// The manifest of a frame folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u32,
    /// The source it was recorded from, as `describe()` gave it.
    pub source: String,
    /// Contrast injection relative to the first frame, seconds, when the source knew it.
    #[serde(default)]
    pub injection_offset_s: Option<f64>,
    /// Frames lost upstream while recording.
    #[serde(default)]
    pub dropped: u64,
    pub frames: Vec<ManifestFrame>,
}

impl Manifest {
    /// Reads and checks a folder's manifest: a clear error names the first problem.
    pub fn read(dir: &Path) -> Result<Self, InputError> {
        let path = dir.join(MANIFEST);
        let bad = |reason: String| InputError::Manifest {
            path: path.clone(),
            reason,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| InputError::Io {
            path: path.clone(),
            source: e,
        })?;
        let m: Manifest =
            serde_json::from_str(&text).map_err(|e| bad(format!("not a frame manifest: {e}")))?;
        if m.format_version != MANIFEST_VERSION {
            return Err(bad(format!(
                "format_version {} (this build reads {MANIFEST_VERSION})",
                m.format_version
            )));
        }
        if m.frames.is_empty() {
            return Err(bad("no frames".into()));
        }
        for f in &m.frames {
            if !f.timestamp_s.is_finite() || f.timestamp_s < 0.0 {
                return Err(bad(format!(
                    "{}: timestamp {} s is not a time from the start",
                    f.file, f.timestamp_s
                )));
            }
            // Frames live in the folder itself: no paths that climb out of it.
            if f.file.contains('/') || f.file.contains('\\') || f.file.starts_with('.') {
                return Err(bad(format!("'{}' is not a plain file name", f.file)));
            }
        }
        for (i, pair) in m.frames.windows(2).enumerate() {
            if pair[1].sequence <= pair[0].sequence {
                return Err(bad(format!(
                    "frame {}: sequence {} does not increase",
                    i + 1,
                    pair[1].sequence
                )));
            }
            if pair[1].timestamp_s < pair[0].timestamp_s {
                return Err(bad(format!(
                    "frame {}: timestamp {} s goes back in time",
                    i + 1,
                    pair[1].timestamp_s
                )));
            }
        }
        Ok(m)
    }
}

/// Replays a frame folder.
pub struct FolderReplay {
    dir: PathBuf,
    manifest: Manifest,
    pacer: Pacer,
    next: usize,
    dropped: u64,
}

impl FolderReplay {
    pub fn open(dir: &Path, pacing: Pacing) -> Result<Self, InputError> {
        let manifest = Manifest::read(dir)?;
        for f in &manifest.frames {
            let p = dir.join(&f.file);
            if !p.is_file() {
                return Err(InputError::Io {
                    path: p,
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "listed in the manifest but missing",
                    ),
                });
            }
        }
        // Losses while recording, plus gaps between the recorded sequence numbers.
        let gaps: u64 = manifest
            .frames
            .windows(2)
            .map(|p| p[1].sequence - p[0].sequence - 1)
            .sum();
        let dropped = manifest.dropped.max(gaps);
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            pacer: Pacer::new(pacing),
            next: 0,
            dropped,
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
}

impl FrameSource for FolderReplay {
    fn describe(&self) -> String {
        let n = self.manifest.frames.len();
        let span = self
            .manifest
            .frames
            .last()
            .map(|f| f.timestamp_s)
            .unwrap_or(0.0);
        format!(
            "frames:{} ({n} frames over {span:.2} s)",
            self.dir.display()
        )
    }

    fn next_event(&mut self) -> Result<SourceEvent, InputError> {
        let Some(entry) = self.manifest.frames.get(self.next) else {
            return Ok(SourceEvent::End);
        };
        let timestamp = Duration::from_secs_f64(entry.timestamp_s);
        let loaded = still::load(&self.dir.join(&entry.file), 0)?;
        self.pacer.wait(timestamp);
        self.next += 1;
        Ok(SourceEvent::Frame(Frame::from_picture(
            loaded.picture,
            entry.sequence,
            timestamp,
        )))
    }

    fn dropped(&self) -> u64 {
        self.dropped
    }

    fn recorded_exam(&self) -> Option<u64> {
        Some(0)
    }

    fn injection_offset_s(&self) -> Option<f64> {
        self.manifest.injection_offset_s
    }
}
