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

/// A cohort file's header row: what the file holds, and where each column is.
struct Header {
    names: Vec<String>,
    kind: CohortKind,
    /// `image` or `score`, as `kind` says.
    main: usize,
    label: usize,
    roi: Option<usize>,
    frame: Option<usize>,
    cohort: Option<usize>,
    date: Option<usize>,
    case: Option<usize>,
    /// Every column whose name starts with `reader`, in order.
    readers: Vec<usize>,
}

impl Header {
    /// Finds the columns (names in any case); the error names a required column that is
    /// missing.
    fn read(names: Vec<String>, kind: CohortKind) -> Result<Self, String> {
        let column = |name: &str| names.iter().position(|h| h.eq_ignore_ascii_case(name));
        let required = |name: &str| {
            column(name)
                .ok_or_else(|| format!("no '{name}' column (columns: {})", names.join(", ")))
        };
        let main = required(Self::main_name(kind))?;
        let label = required("label")?;
        let readers = names
            .iter()
            .enumerate()
            .filter(|(_, h)| h.to_ascii_lowercase().starts_with("reader"))
            .map(|(i, _)| i)
            .collect();
        Ok(Self {
            kind,
            main,
            label,
            roi: column("roi"),
            frame: column("frame"),
            cohort: column("cohort"),
            date: column("admission_date"),
            case: column("case"),
            readers,
            names,
        })
    }

    /// The column a row cannot do without: the image, or the score.
    fn main_name(kind: CohortKind) -> &'static str {
        match kind {
            CohortKind::Images => "image",
            CohortKind::Scores => "score",
        }
    }

    /// The columns that are read neither as a field nor as a reader's calls.
    fn ignored(&self) -> Vec<&str> {
        let known = [
            Some(self.main),
            Some(self.label),
            self.roi,
            self.frame,
            self.cohort,
            self.date,
            self.case,
        ];
        self.names
            .iter()
            .enumerate()
            .filter(|(i, _)| !known.contains(&Some(*i)) && !self.readers.contains(i))
            .map(|(_, h)| h.as_str())
            .collect()
    }

    fn reader_names(&self) -> Vec<String> {
        self.readers
            .iter()
            .map(|&i| self.names[i].clone())
            .collect()
    }

    /// The case on one row (at `line`), its image resolved against `base`; the error is the
    /// reason alone, without the file and line.
    fn case(
        &self,
        record: &csv::StringRecord,
        line: u64,
        classes: &ClassNames,
        base: &Path,
    ) -> Result<CohortCase, String> {
        let field = |i: Option<usize>| i.and_then(|i| record.get(i)).unwrap_or("");
        let main = field(Some(self.main));
        if main.is_empty() {
            return Err(format!("empty '{}'", Self::main_name(self.kind)));
        }
        let (image, score) = match self.kind {
            CohortKind::Images => (Some(base.join(main)), None),
            CohortKind::Scores => (None, Some(parse_score(main)?)),
        };
        let positive = classes
            .parse(field(Some(self.label)))
            .map_err(|e| format!("label {e}"))?;
        let roi = match field(self.roi) {
            "" => None,
            r => Some(r.parse::<Roi>().map_err(|e| e.to_string())?),
        };
        let frame = match field(self.frame) {
            "" => 0,
            f => f
                .parse()
                .map_err(|_| format!("frame '{f}' is not a frame index (from 0)"))?,
        };
        let admission_date = match field(self.date) {
            "" => None,
            d => {
                check_date(d)?;
                Some(d.to_string())
            }
        };
        let reader_calls = self
            .readers
            .iter()
            .map(|&i| match field(Some(i)) {
                "" => Ok(None),
                v => classes
                    .parse(v)
                    .map(Some)
                    .map_err(|e| format!("{}: {e}", self.names[i])),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CohortCase {
            id: match field(self.case) {
                "" => format!("line {line}"),
                c => c.to_string(),
            },
            image,
            score,
            positive,
            roi,
            frame,
            cohort: match field(self.cohort) {
                "" => "all".to_string(),
                c => c.to_string(),
            },
            admission_date,
            reader_calls,
        })
    }
}

/// A score column's value: P(positive), 0..1.
fn parse_score(text: &str) -> Result<f64, String> {
    let s: f64 = text
        .parse()
        .map_err(|_| format!("score '{text}' is not a number"))?;
    if !(0.0..=1.0).contains(&s) {
        return Err(format!("score {s} is outside 0..1"));
    }
    Ok(s)
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
    let names: Vec<String> = reader
        .headers()
        .map_err(|e| file_error(e.to_string()))?
        .iter()
        .map(|h| h.to_string())
        .collect();
    let header = Header::read(names, kind).map_err(file_error)?;
    let ignored = header.ignored();
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
        let case = header
            .case(&record, line, classes, base)
            .map_err(|reason| CohortError::Row {
                path: path.to_path_buf(),
                line,
                reason,
            })?;
        cases.push(case);
    }
    if cases.is_empty() {
        return Err(file_error("no cases".into()));
    }
    Ok(Cohort {
        path: path.to_path_buf(),
        readers: header.reader_names(),
        cases,
    })
}
