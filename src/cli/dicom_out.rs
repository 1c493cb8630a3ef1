//! `ceusd analyze … --dicom-out DIR`: the Structured Report and key image that the daemon
//! sends to the PACS, written to files for an analysis run by hand, with the exam's context
//! from flags or from the DICOM cine analysed.

use anyhow::{Context, Result};
use clap::Args;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use ceusd::exam::{ExamResult, KeyFramePicture};
use ceusd::pacs::context::context_of_dicom_file;
use ceusd::pacs::{
    build_objects, ArchiveSettings, Equipment, ExamContext, PatientSex, ResultToArchive, UidRoot,
};

#[derive(Args, Default)]
pub struct DicomOutArgs {
    /// Cine: write the result as a DICOM Structured Report and a key image (Secondary
    /// Capture) into this directory, as the daemon sends them to the PACS.
    #[arg(long)]
    pub dicom_out: Option<PathBuf>,
    /// With --dicom-out: the study the objects join (default: the DICOM cine's study, else a
    /// new one).
    #[arg(long, requires = "dicom_out")]
    study_uid: Option<String>,
    /// With --dicom-out: accession number (default: the DICOM cine's).
    #[arg(long, requires = "dicom_out")]
    accession: Option<String>,
    /// With --dicom-out: patient id (default: the DICOM cine's).
    #[arg(long, requires = "dicom_out")]
    patient_id: Option<String>,
    /// With --dicom-out: patient name, DICOM style Family^Given (default: the DICOM cine's).
    #[arg(long, requires = "dicom_out")]
    patient_name: Option<String>,
    /// With --dicom-out: patient birth date, YYYYMMDD (default: the DICOM cine's).
    #[arg(long, requires = "dicom_out")]
    patient_birth_date: Option<String>,
    /// With --dicom-out: patient sex, M, F or O (default: the DICOM cine's).
    #[arg(long, requires = "dicom_out")]
    patient_sex: Option<String>,
    /// With --dicom-out: the root of the objects' UIDs (default 2.25, UUID-based UIDs that
    /// need no registered root).
    #[arg(long, requires = "dicom_out")]
    uid_root: Option<String>,
    /// With --dicom-out: the device named as the report's observer (default "analyze").
    #[arg(long, requires = "dicom_out", default_value = "analyze")]
    observer: String,
}

/// What was analysed, for the objects' identity: the same analysis gives the same UIDs.
pub struct Analysed<'a> {
    pub source: &'a str,
    /// The DICOM file analysed, if it was one: its study and patient are the default context.
    pub dicom_file: Option<&'a Path>,
    pub result: &'a ExamResult,
    pub key_frame: Option<&'a KeyFramePicture>,
}

impl DicomOutArgs {
    /// Writes the objects if `--dicom-out` was given; returns the files written.
    pub fn write(&self, analysed: &Analysed) -> Result<Vec<PathBuf>> {
        let Some(dir) = &self.dicom_out else {
            return Ok(Vec::new());
        };
        let context = self.context(analysed.dicom_file)?;
        let uid_root: UidRoot = match &self.uid_root {
            Some(root) => root.parse()?,
            None => UidRoot::default(),
        };
        let settings = ArchiveSettings {
            uid_root,
            equipment: Equipment {
                device_id: self.observer.clone(),
                institution_name: None,
            },
        };
        let id = analysis_id(analysed);
        let objects = build_objects(
            &settings,
            &ResultToArchive {
                result: analysed.result,
                exam_id: &id,
                result_id: &id,
                context: &context,
                key_frame: analysed.key_frame,
                created: SystemTime::now(),
            },
        )?;
        objects
            .write_to_dir(dir, &id)
            .with_context(|| format!("--dicom-out {}", dir.display()))
    }

    /// The cine's own context, each flag given overriding its field.
    fn context(&self, dicom_file: Option<&Path>) -> Result<ExamContext> {
        let mut context = match dicom_file {
            Some(path) => context_of_dicom_file(path)?,
            None => ExamContext::default(),
        };
        let flags = [
            (&self.study_uid, &mut context.study_instance_uid),
            (&self.accession, &mut context.accession_number),
            (&self.patient_id, &mut context.patient_id),
            (&self.patient_name, &mut context.patient_name),
            (&self.patient_birth_date, &mut context.patient_birth_date),
        ];
        let mut from_flags = false;
        for (flag, field) in flags {
            if let Some(value) = flag {
                *field = Some(value.clone());
                from_flags = true;
            }
        }
        if let Some(sex) = &self.patient_sex {
            context.patient_sex = Some(sex.parse::<PatientSex>()?);
            from_flags = true;
        }
        if from_flags {
            context.source = Some(match context.source {
                Some(file) => format!("{file} and the operator"),
                None => "the operator".into(),
            });
        }
        context.validate()?;
        Ok(context)
    }
}

/// An id for the analysis from what determines its result: source, model, ROI and key frame.
fn analysis_id(a: &Analysed) -> String {
    let mut hasher = Sha256::new();
    hasher.update(a.source.as_bytes());
    hasher.update(a.result.model.content_hash.as_bytes());
    if let Some(roi) = a.result.roi {
        hasher.update(roi.to_string().as_bytes());
    }
    if let Some(key) = &a.result.key_frame {
        hasher.update(key.sequence.to_le_bytes());
    }
    let digest = hex::encode(hasher.finalize());
    format!("analysis-{}", &digest[..16])
}
