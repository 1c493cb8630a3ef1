//! Training cases: a labeled cohort CSV (as `ceusd eval` reads) or a folder tree with one
//! folder per class (`PDAC/`, `CP/`, any image or DICOM files inside, the whole image as ROI),
//! and the split into training and validation cases.

use std::path::{Path, PathBuf};

use crate::capture::load_frame;
use crate::eval::cohort::{read_cohort, ClassNames, CohortKind};
use crate::rng::{mix64, SplitMix64};
use crate::roi::Roi;

use super::augment::{margin_box, RoiCrop};
use super::error::TrainError;

#[derive(Debug, Clone)]
pub struct TrainCase {
    pub id: String,
    pub crop: RoiCrop,
    pub positive: bool,
    pub cohort: String,
    pub admission_date: Option<String>,
}

fn load_case(path: &Path, frame: u32, roi: Option<Roi>, id: &str) -> Result<RoiCrop, TrainError> {
    let case_error = |reason: String| TrainError::Case {
        case: id.to_string(),
        reason,
    };
    let loaded = load_frame(path, frame).map_err(|e| case_error(e.to_string()))?;
    let (w, h) = (loaded.picture.width(), loaded.picture.height());
    let roi = roi.unwrap_or_else(|| Roi::full(w, h));
    roi.check_within(w, h)
        .map_err(|e| case_error(e.to_string()))?;
    let outer = margin_box(&roi, w, h);
    let gray = loaded
        .picture
        .gray_roi(&outer)
        .map_err(|e| case_error(e.to_string()))?;
    Ok(RoiCrop {
        gray,
        roi: Roi::new(roi.x - outer.x, roi.y - outer.y, roi.width, roi.height),
    })
}

/// Reads every case of a cohort CSV or class-folder tree; `progress` gets (done, total).
pub fn load_cases(
    source: &Path,
    classes: &ClassNames,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<TrainCase>, TrainError> {
    if source.is_dir() {
        let mut listed: Vec<(PathBuf, bool)> = Vec::new();
        for (folder, positive) in [(&classes.positive, true), (&classes.negative, false)] {
            let dir = source.join(folder);
            let entries = std::fs::read_dir(&dir).map_err(|e| TrainError::Data {
                path: dir.clone(),
                reason: format!(
                    "{e} (a folder tree needs {}/ and {}/)",
                    classes.positive, classes.negative
                ),
            })?;
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            listed.extend(files.into_iter().map(|f| (f, positive)));
        }
        let total = listed.len();
        let mut cases = Vec::with_capacity(total);
        for (i, (path, positive)) in listed.into_iter().enumerate() {
            let id = path
                .strip_prefix(source)
                .unwrap_or(&path)
                .display()
                .to_string();
            cases.push(TrainCase {
                crop: load_case(&path, 0, None, &id)?,
                id,
                positive,
                cohort: "all".into(),
                admission_date: None,
            });
            progress(i + 1, total);
        }
        Ok(cases)
    } else {
        let cohort = read_cohort(source, CohortKind::Images, classes)?;
        let total = cohort.cases.len();
        let mut cases = Vec::with_capacity(total);
        for (i, c) in cohort.cases.into_iter().enumerate() {
            let Some(image) = &c.image else { continue };
            cases.push(TrainCase {
                crop: load_case(image, c.frame, c.roi, &c.id)?,
                id: c.id,
                positive: c.positive,
                cohort: c.cohort,
                admission_date: c.admission_date,
            });
            progress(i + 1, total);
        }
        Ok(cases)
    }
}

/// How validation cases are chosen. The paper validated on later admissions and on other
/// hospitals; a random split is the fallback for data without dates or cohorts.
#[derive(Debug, Clone, PartialEq)]
pub enum Split {
    /// Cases admitted on or after this date (YYYY-MM-DD) validate.
    AdmittedFrom(String),
    /// The cases of this cohort validate.
    Cohort(String),
    /// This fraction of each class, drawn with the training seed.
    Fraction(f64),
}

impl std::str::FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some(("date", d)) => Ok(Split::AdmittedFrom(d.to_string())),
            Some(("cohort", c)) if !c.is_empty() => Ok(Split::Cohort(c.to_string())),
            Some(("fraction", f)) => match f.parse::<f64>() {
                Ok(v) if v > 0.0 && v < 1.0 => Ok(Split::Fraction(v)),
                _ => Err(format!("split '{s}': the fraction must be between 0 and 1")),
            },
            _ => Err(format!(
                "split '{s}': expected date:YYYY-MM-DD, cohort:NAME or fraction:F"
            )),
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Split::AdmittedFrom(d) => write!(f, "date:{d}"),
            Split::Cohort(c) => write!(f, "cohort:{c}"),
            Split::Fraction(v) => write!(f, "fraction:{v}"),
        }
    }
}

/// Indices of the training and validation cases. Both must hold both classes.
pub fn split_cases(
    cases: &[TrainCase],
    split: &Split,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>), TrainError> {
    let mut validation = vec![false; cases.len()];
    match split {
        Split::AdmittedFrom(cutoff) => {
            for (i, c) in cases.iter().enumerate() {
                let date = c.admission_date.as_ref().ok_or_else(|| TrainError::Case {
                    case: c.id.clone(),
                    reason: format!("no admission_date, needed by the split date:{cutoff}"),
                })?;
                // ISO dates compare as strings.
                validation[i] = date.as_str() >= cutoff.as_str();
            }
        }
        Split::Cohort(name) => {
            if !cases.iter().any(|c| &c.cohort == name) {
                return Err(TrainError::Split(format!("no case is in cohort '{name}'")));
            }
            for (i, c) in cases.iter().enumerate() {
                validation[i] = &c.cohort == name;
            }
        }
        Split::Fraction(f) => {
            for class in [true, false] {
                let mut members: Vec<usize> = (0..cases.len())
                    .filter(|&i| cases[i].positive == class)
                    .collect();
                SplitMix64(mix64(seed ^ 0x5B117)).shuffle(&mut members);
                let n = ((members.len() as f64) * f).round() as usize;
                for &i in members.iter().take(n.max(1)) {
                    validation[i] = true;
                }
            }
        }
    }
    let train: Vec<usize> = (0..cases.len()).filter(|&i| !validation[i]).collect();
    let valid: Vec<usize> = (0..cases.len()).filter(|&i| validation[i]).collect();
    for (what, set) in [("training", &train), ("validation", &valid)] {
        let positives = set.iter().filter(|&&i| cases[i].positive).count();
        if positives == 0 || positives == set.len() {
            return Err(TrainError::Split(format!(
                "the {what} set ({} cases, {positives} positive) needs cases of both classes (split {split})",
                set.len()
            )));
        }
    }
    Ok((train, valid))
}
