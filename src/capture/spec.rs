//! `SourceSpec`: where frames come from, as a user writes it (`v4l2:/dev/video0?...`,
//! `dicom:exam.dcm`, `frames:dir/`, `synthetic:pdac?seed=7`), and opening it as a
//! `FrameSource`. It names every kind of source, so it lives apart from the trait they all
//! implement: the sources import the trait, and only this file imports the sources.

use super::input_error::InputError;
use super::source::{FrameSource, Pacing};
use super::{folder, reconnect, replay, synthetic_session, v4l2};

/// Where frames come from, as written in configuration and on the command line:
/// `v4l2:/dev/video0?format=YUYV&size=1920x1080&fps=60` (a capture card), `dicom:exam.dcm`
/// (a cine), `frames:dir/` (a frame folder with a manifest) or `synthetic:pdac?seed=7` (the
/// synthetic scanner; see `synthetic::parse_spec`).
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    Dicom(std::path::PathBuf),
    Frames(std::path::PathBuf),
    Synthetic(synthetic_session::SessionSpec),
    V4l2(v4l2::V4l2Options),
}

impl std::str::FromStr for SourceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (scheme, rest) = s.split_once(':').ok_or_else(|| {
            format!("source '{s}': expected KIND:WHERE, e.g. dicom:exam.dcm or frames:dir/")
        })?;
        if rest.is_empty() {
            return Err(format!("source '{s}': nothing after '{scheme}:'"));
        }
        match scheme {
            "dicom" => Ok(SourceSpec::Dicom(rest.into())),
            "frames" => Ok(SourceSpec::Frames(rest.into())),
            "v4l2" => v4l2::V4l2Options::parse(rest)
                .map(SourceSpec::V4l2)
                .map_err(|e| format!("source '{s}': {e}")),
            "synthetic" => synthetic_session::parse_session_spec(rest)
                .map(SourceSpec::Synthetic)
                .map_err(|e| format!("source '{s}': {e}")),
            other => Err(format!(
                "source '{s}': unknown kind '{other}' (expected v4l2:, dicom:, frames: or synthetic:)"
            )),
        }
    }
}

impl SourceSpec {
    /// Opens the source.
    pub fn open(&self, pacing: Pacing) -> Result<Box<dyn FrameSource>, InputError> {
        Ok(match self {
            SourceSpec::Dicom(p) => Box::new(replay::DicomReplay::open(p, pacing)?),
            SourceSpec::Frames(p) => Box::new(folder::FolderReplay::open(p, pacing)?),
            SourceSpec::V4l2(o) => Box::new(reconnect::Reconnecting::new(
                v4l2::V4l2Device::new(o.clone()),
                reconnect::Backoff::default(),
            )),
            SourceSpec::Synthetic(c) => Box::new(
                synthetic_session::SyntheticSession::new(c.clone(), pacing).map_err(|reason| {
                    InputError::Unsupported {
                        path: "synthetic".into(),
                        what: "configuration".into(),
                        reason,
                    }
                })?,
            ),
        })
    }
}
