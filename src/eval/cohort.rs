//! The cohort and scores CSV files that `ceusd eval` and `ceusd train` read.
//!
//! A cohort lists images to score: `image` (a PNG/JPEG or DICOM path, relative to the CSV's
//! folder) and `label`, optionally `roi` (x,y,w,h on the image; empty = the whole image),
//! `frame` (of a multi-frame DICOM, from 0), `cohort`, `admission_date` (YYYY-MM-DD), `case`
//! (an identifier), and any number of reader columns whose names start with `reader` (each
//! reader's call per case; empty = that reader did not read the case). A scores file has
//! `score` (P(positive), 0..1) instead of `image`. Labels and calls are class names (as the
//! model file names them, any case) or 1 (positive) / 0 (negative). Other columns are ignored.

use std::path::{Path, PathBuf};

use crate::roi::Roi;

#[derive(Debug, thiserror::Error)]
pub enum CohortError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{path}, line {line}: {reason}")]
    Row {
        path: PathBuf,
        line: u64,
        reason: String,
    },
}

/// One row of a cohort or scores file.
#[derive(Debug, Clone, PartialEq)]
pub struct CohortCase {
    /// The `case` column, or the row's line number.
    pub id: String,
    /// Resolved against the CSV's folder; `None` in a scores file.
    pub image: Option<PathBuf>,
    /// `Some` in a scores file.
    pub score: Option<f64>,
    pub positive: bool,
    pub roi: Option<Roi>,
    pub frame: u32,
    pub cohort: String,
    /// YYYY-MM-DD, checked.
    pub admission_date: Option<String>,
    /// One per reader column, in column order: `None` where the reader did not read the case.
    pub reader_calls: Vec<Option<bool>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cohort {
    pub path: PathBuf,
    pub readers: Vec<String>,
    pub cases: Vec<CohortCase>,
}

/// What the labels mean: the positive and negative class names.
#[derive(Debug, Clone)]
pub struct ClassNames {
    pub positive: String,
    pub negative: String,
}

impl ClassNames {
    pub fn paper() -> Self {
        Self {
            positive: "PDAC".into(),
            negative: "CP".into(),
        }
    }

    /// The positive class of a model and the other one.
    pub fn of_model(meta: &crate::model::ModelMetadata) -> Self {
        Self {
            positive: meta.positive_class.clone(),
            negative: meta.classes[1 - meta.positive_index()].clone(),
        }
    }

    /// `Ok(true)` for the positive class.
    pub fn parse(&self, value: &str) -> Result<bool, String> {
        let v = value.trim();
        if v == "1" || v.eq_ignore_ascii_case(&self.positive) {
            Ok(true)
        } else if v == "0" || v.eq_ignore_ascii_case(&self.negative) {
            Ok(false)
        } else {
            Err(format!(
                "'{v}' is neither {} (or 1) nor {} (or 0)",
                self.positive, self.negative
            ))
        }
    }
}

/// Which kind of file is expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CohortKind {
    Images,
    Scores,
}

fn check_date(s: &str) -> Result<(), String> {
    let bad = || format!("admission_date '{s}': expected YYYY-MM-DD");
    let parts: Vec<&str> = s.split('-').collect();
    if parts.len() != 3 || parts[0].len() != 4 || parts[1].len() != 2 || parts[2].len() != 2 {
        return Err(bad());
    }
    let n: Vec<u32> = parts
        .iter()
        .map(|p| p.parse::<u32>().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    if !(1..=12).contains(&n[1]) || !(1..=31).contains(&n[2]) {
        return Err(bad());
    }
    Ok(())
}

/// Reads and checks a whole cohort file: every error names the file and line.
pub fn read_cohort(
    path: &Path,
    kind: CohortKind,
    classes: &ClassNames,
) -> Result<Cohort, CohortError> {
    let file_error = |reason: String| CohortError::File {
        path: path.to_path_buf(),
        reason,
    };
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|e| file_error(e.to_string()))?;
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| file_error(e.to_string()))?
        .iter()
        .map(|h| h.to_string())
        .collect();
    let column = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let required = match kind {
        CohortKind::Images => "image",
        CohortKind::Scores => "score",
    };
    let main_col = column(required).ok_or_else(|| {
        file_error(format!(
            "no '{required}' column (columns: {})",
            headers.join(", ")
        ))
    })?;
    let label_col = column("label").ok_or_else(|| {
        file_error(format!(
            "no 'label' column (columns: {})",
            headers.join(", ")
        ))
    })?;
    let (roi_col, frame_col, cohort_col, date_col, case_col) = (
        column("roi"),
        column("frame"),
        column("cohort"),
        column("admission_date"),
        column("case"),
    );
    let reader_cols: Vec<usize> = headers
        .iter()
        .enumerate()
        .filter(|(_, h)| h.to_ascii_lowercase().starts_with("reader"))
        .map(|(i, _)| i)
        .collect();
    let known = [
        Some(main_col),
        Some(label_col),
        roi_col,
        frame_col,
        cohort_col,
        date_col,
        case_col,
    ];
    let ignored: Vec<&str> = headers
        .iter()
        .enumerate()
        .filter(|(i, _)| !known.contains(&Some(*i)) && !reader_cols.contains(i))
        .map(|(_, h)| h.as_str())
        .collect();
    if !ignored.is_empty() {
        log::info!(
            "{}: ignoring columns {}",
            path.display(),
            ignored.join(", ")
        );
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let mut cases = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| file_error(e.to_string()))?;
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        let row_error = |reason: String| CohortError::Row {
            path: path.to_path_buf(),
            line,
            reason,
        };
        let field = |i: Option<usize>| i.and_then(|i| record.get(i)).unwrap_or("");
        let main = field(Some(main_col));
        if main.is_empty() {
            return Err(row_error(format!("empty '{required}'")));
        }
        let (image, score) = match kind {
            CohortKind::Images => (Some(base.join(main)), None),
            CohortKind::Scores => {
                let s: f64 = main
                    .parse()
                    .map_err(|_| row_error(format!("score '{main}' is not a number")))?;
                if !(0.0..=1.0).contains(&s) {
                    return Err(row_error(format!("score {s} is outside 0..1")));
                }
                (None, Some(s))
            }
        };
        let positive = classes
            .parse(field(Some(label_col)))
            .map_err(|e| row_error(format!("label {e}")))?;
        let roi = match field(roi_col) {
            "" => None,
            r => Some(r.parse::<Roi>().map_err(|e| row_error(e.to_string()))?),
        };
        let frame = match field(frame_col) {
            "" => 0,
            f => f
                .parse()
                .map_err(|_| row_error(format!("frame '{f}' is not a frame index (from 0)")))?,
        };
        let admission_date = match field(date_col) {
            "" => None,
            d => {
                check_date(d).map_err(row_error)?;
                Some(d.to_string())
            }
        };
        let reader_calls = reader_cols
            .iter()
            .map(|&i| match field(Some(i)) {
                "" => Ok(None),
                v => classes
                    .parse(v)
                    .map(Some)
                    .map_err(|e| row_error(format!("{}: {e}", headers[i]))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        cases.push(CohortCase {
            id: match field(case_col) {
                "" => format!("line {line}"),
                c => c.to_string(),
            },
            image,
            score,
            positive,
            roi,
            frame,
            cohort: match field(cohort_col) {
                "" => "all".to_string(),
                c => c.to_string(),
            },
            admission_date,
            reader_calls,
        });
    }
    if cases.is_empty() {
        return Err(file_error("no cases".into()));
    }
    Ok(Cohort {
        path: path.to_path_buf(),
        readers: reader_cols.iter().map(|&i| headers[i].clone()).collect(),
        cases,
    })
}
