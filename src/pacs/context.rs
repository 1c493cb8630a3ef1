//! The exam's place in the hospital's records: the patient and the study it belongs to, from
//! the modality worklist or from the operator. It goes into the objects sent to the PACS and
//! stays in the outbox; it never goes on MQTT.

use dicom_dictionary_std::tags;
use dicom_object::{InMemDicomObject, OpenFileOptions};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use super::uid::check_uid;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ContextError {
    // The value is not repeated: it may be a patient's data, and errors reach logs.
    #[error("exam context: {field} {reason}")]
    Field { field: &'static str, reason: String },
    #[error("exam context from {path}: {reason}")]
    File { path: PathBuf, reason: String },
}

/// Patient sex as DICOM codes it (0010,0040).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PatientSex {
    #[serde(rename = "M")]
    Male,
    #[serde(rename = "F")]
    Female,
    #[serde(rename = "O")]
    Other,
}

impl PatientSex {
    pub fn code(self) -> &'static str {
        match self {
            Self::Male => "M",
            Self::Female => "F",
            Self::Other => "O",
        }
    }
}

impl std::str::FromStr for PatientSex {
    type Err = ContextError;
    fn from_str(s: &str) -> Result<Self, ContextError> {
        match s {
            "M" => Ok(Self::Male),
            "F" => Ok(Self::Female),
            "O" => Ok(Self::Other),
            _ => Err(ContextError::Field {
                field: "patient sex",
                reason: "must be M, F or O".into(),
            }),
        }
    }
}

/// Who and what the exam is for. Every field is optional: an exam without a worklist entry
/// still gets a result in the archive, in a study of its own, and the report says so.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExamContext {
    /// The study the results join (from the worklist); `None` makes a new study.
    pub study_instance_uid: Option<String>,
    pub accession_number: Option<String>,
    pub patient_id: Option<String>,
    /// DICOM person name: family^given^middle^prefix^suffix.
    pub patient_name: Option<String>,
    /// YYYYMMDD.
    pub patient_birth_date: Option<String>,
    pub patient_sex: Option<PatientSex>,
    pub requested_procedure_id: Option<String>,
    pub requested_procedure_description: Option<String>,
    /// Where the context came from, in words for the report ("worklist", "operator").
    pub source: Option<String>,
}

impl ExamContext {
    /// Checks every field against its DICOM value representation, so that nothing the
    /// archive would refuse is stored.
    pub fn validate(&self) -> Result<(), ContextError> {
        if let Some(uid) = &self.study_instance_uid {
            check_uid(uid).map_err(|e| ContextError::Field {
                field: "study instance UID",
                reason: e.to_string(),
            })?;
        }
        check_text("accession number", self.accession_number.as_deref(), 16)?;
        check_text("patient id", self.patient_id.as_deref(), 64)?;
        check_text(
            "requested procedure id",
            self.requested_procedure_id.as_deref(),
            16,
        )?;
        check_text(
            "requested procedure description",
            self.requested_procedure_description.as_deref(),
            64,
        )?;
        if let Some(name) = &self.patient_name {
            check_text("patient name", Some(name), 5 * 64)?;
            if name.split('^').count() > 5 {
                return Err(field(
                    "patient name",
                    "has more than five ^-separated parts",
                ));
            }
        }
        if let Some(date) = &self.patient_birth_date {
            check_date(date)?;
        }
        Ok(())
    }

    /// True when nothing ties the exam to a patient.
    pub fn is_empty(&self) -> bool {
        self.study_instance_uid.is_none()
            && self.accession_number.is_none()
            && self.patient_id.is_none()
            && self.patient_name.is_none()
    }
}

/// The exam context a DICOM file carries (a cine exported from the scanner or the archive):
/// its study, accession and patient, so that what is made of it joins the same study. Empty
/// values count as absent.
pub fn context_of_dicom_file(path: &Path) -> Result<ExamContext, ContextError> {
    let header = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .map_err(|e| ContextError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let context = context_in(&header, format!("the DICOM file {}", path.display()));
    context.validate()?;
    Ok(context)
}

/// The context attributes a data set carries (a file's header, a worklist entry), `source`
/// saying where they came from. Empty values count as absent, and so does a patient sex other
/// than M, F or O.
pub fn context_in(obj: &InMemDicomObject, source: String) -> ExamContext {
    let text = |tag| {
        obj.element_opt(tag)
            .ok()
            .flatten()
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches(['\0', ' ']).trim().to_string())
            .filter(|s| !s.is_empty())
    };
    ExamContext {
        study_instance_uid: text(tags::STUDY_INSTANCE_UID),
        accession_number: text(tags::ACCESSION_NUMBER),
        patient_id: text(tags::PATIENT_ID),
        patient_name: text(tags::PATIENT_NAME),
        patient_birth_date: text(tags::PATIENT_BIRTH_DATE),
        patient_sex: text(tags::PATIENT_SEX).and_then(|s| s.parse().ok()),
        requested_procedure_id: text(tags::REQUESTED_PROCEDURE_ID),
        requested_procedure_description: text(tags::REQUESTED_PROCEDURE_DESCRIPTION),
        source: Some(source),
    }
}

fn field(field: &'static str, reason: &str) -> ContextError {
    ContextError::Field {
        field,
        reason: reason.into(),
    }
}

/// A DICOM short/long string: at most `max` characters, no backslash (the value separator),
/// no control characters.
fn check_text(name: &'static str, value: Option<&str>, max: usize) -> Result<(), ContextError> {
    let Some(value) = value else { return Ok(()) };
    if value.trim().is_empty() {
        return Err(field(name, "is empty"));
    }
    if value.chars().count() > max {
        return Err(field(name, &format!("is longer than {max} characters")));
    }
    if value.contains('\\') || value.chars().any(char::is_control) {
        return Err(field(name, "contains a backslash or a control character"));
    }
    Ok(())
}

fn check_date(date: &str) -> Result<(), ContextError> {
    let bad = || field("patient birth date", "is not a date written YYYYMMDD");
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let number = |range: std::ops::Range<usize>| date[range].parse::<u32>().map_err(|_| bad());
    let (month, day) = (number(4..6)?, number(6..8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> ExamContext {
        ExamContext {
            study_instance_uid: Some("1.2.826.0.1.3680043.10.99.1".into()),
            accession_number: Some("ACC-2026-0042".into()),
            patient_id: Some("PID-123".into()),
            patient_name: Some("Müller^Anna".into()),
            patient_birth_date: Some("19610314".into()),
            patient_sex: Some(PatientSex::Female),
            requested_procedure_id: Some("RP-1".into()),
            requested_procedure_description: Some("CEUS pancreas".into()),
            source: Some("worklist".into()),
        }
    }

    #[test]
    fn a_full_context_is_valid() {
        assert_eq!(context().validate(), Ok(()));
        assert!(!context().is_empty());
        assert!(ExamContext::default().is_empty());
    }

    #[test]
    fn bad_fields_are_named_without_repeating_the_patients_data() {
        type Spoil = fn(&mut ExamContext);
        let cases: [(Spoil, &str); 5] = [
            (
                |c| c.accession_number = Some("A".repeat(17)),
                "accession number",
            ),
            (
                |c| c.patient_birth_date = Some("1961-03-14".into()),
                "birth date",
            ),
            (
                |c| c.patient_birth_date = Some("19611314".into()),
                "birth date",
            ),
            (
                |c| c.study_instance_uid = Some("1.2.x".into()),
                "study instance UID",
            ),
            (|c| c.patient_id = Some("PID\\2".into()), "patient id"),
        ];
        for (spoil, named) in cases {
            let mut c = context();
            spoil(&mut c);
            let e = c.validate().expect_err(named).to_string();
            assert!(e.contains(named), "{e}");
            assert!(!e.contains("Müller") && !e.contains("PID-123"), "{e}");
        }
    }
}
