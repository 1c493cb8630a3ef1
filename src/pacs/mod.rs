//! Results into the hospital's archive (PACS). The exam's context (patient, study, accession)
//! comes from the modality worklist or the operator; each result becomes two DICOM objects in
//! the patient's study: a Structured Report that says what the model found and a key image
//! with the heatmap and the result burned in, referenced from the report. Their UIDs depend
//! only on the cart, the exam and the result's revision, so a result sent again replaces
//! itself instead of arriving twice.

pub mod association;
pub mod context;
pub mod dataset;
pub mod key_image;
pub mod network;
pub mod structured_report;
pub mod uid;
pub mod worklist;

use dicom_dictionary_std::uids;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub use context::{ContextError, ExamContext, PatientSex};
pub use dataset::{DicomMoment, Equipment};
pub use uid::{UidError, UidRoot};

use crate::atomic_file::write_atomically;
use crate::exam::{ExamResult, KeyFramePicture};
use dataset::{put, put_common, put_sequence, Placement};
use structured_report::{Referenced, ReportFacts};

#[derive(Debug, thiserror::Error)]
pub enum PacsError {
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error("DICOM {what}: {reason}")]
    Encode { what: &'static str, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Which of a result's objects this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Report,
    KeyImage,
}

impl ObjectKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Report => "report",
            Self::KeyImage => "key-image",
        }
    }

    /// The kind [`name`](Self::name) gives (as the outbox keeps it).
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Report, Self::KeyImage]
            .into_iter()
            .find(|kind| kind.name() == name)
    }
}

/// One DICOM object, encoded as a Part 10 file (what C-STORE sends and a disk holds).
#[derive(Debug, Clone)]
pub struct DicomObject {
    pub kind: ObjectKind,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub bytes: Vec<u8>,
}

/// The objects made of one result.
#[derive(Debug, Clone)]
pub struct ResultObjects {
    pub study_instance_uid: String,
    /// True when no worklist entry or operator named the study, so ceusd made one.
    pub study_made_here: bool,
    pub objects: Vec<DicomObject>,
}

/// What the archive's objects are made from.
pub struct ResultToArchive<'a> {
    pub result: &'a ExamResult,
    pub exam_id: &'a str,
    /// The result's id with its revision (`exam-7-r2`): a rescore makes new objects.
    pub result_id: &'a str,
    pub context: &'a ExamContext,
    pub key_frame: Option<&'a KeyFramePicture>,
    pub created: SystemTime,
}

/// Where the objects' UIDs come from and who made them.
#[derive(Debug, Clone)]
pub struct ArchiveSettings {
    pub uid_root: UidRoot,
    pub equipment: Equipment,
}

/// Series numbers of the two series ceusd adds to a study: high, so that they sort after the
/// scanner's own series.
const REPORT_SERIES_NUMBER: u32 = 9901;
const KEY_IMAGE_SERIES_NUMBER: u32 = 9902;

/// The Structured Report and, with a key frame, the key image of `r`.
pub fn build_objects(
    settings: &ArchiveSettings,
    r: &ResultToArchive,
) -> Result<ResultObjects, PacsError> {
    r.context.validate()?;
    let device = settings.equipment.device_id.as_str();
    let study_made_here = r.context.study_instance_uid.is_none();
    let study = match &r.context.study_instance_uid {
        Some(s) => s.clone(),
        None => settings.uid_root.uid_for(&["study", device, r.exam_id]),
    };
    let maker = ObjectMaker {
        settings,
        r,
        study: &study,
        created: DicomMoment::of(r.created),
    };
    let mut objects = Vec::new();
    let mut key_image_ref = None;
    if let Some(picture) = r.key_frame {
        let burned = key_image::burn_in(picture, r.result);
        let (referenced, series, mut obj) = maker.start(ObjectKind::KeyImage);
        key_image::put_key_image(&mut obj, &burned.image, &maker.created);
        objects.push(encode(obj, ObjectKind::KeyImage, &referenced)?);
        key_image_ref = Some((referenced, series, burned.roi));
    }
    let report = maker.report(study_made_here, key_image_ref)?;
    objects.insert(0, report);
    Ok(ResultObjects {
        study_instance_uid: study,
        study_made_here,
        objects,
    })
}

/// Makes the objects of one result: their UIDs, series and common attributes.
struct ObjectMaker<'a> {
    settings: &'a ArchiveSettings,
    r: &'a ResultToArchive<'a>,
    study: &'a str,
    created: DicomMoment,
}

impl ObjectMaker<'_> {
    /// A new object of `kind`: its reference, its series UID, and a data set holding the
    /// patient, study, series, equipment and SOP common attributes.
    fn start(&self, kind: ObjectKind) -> (Referenced, String, InMemDicomObject) {
        let device = self.settings.equipment.device_id.as_str();
        let uid = |what: &str, id: &str| self.settings.uid_root.uid_for(&[what, device, id]);
        let (sop_class, series_number, description, modality) = match kind {
            ObjectKind::Report => (
                structured_report::SOP_CLASS,
                REPORT_SERIES_NUMBER,
                "ceusd AI result",
                "SR",
            ),
            ObjectKind::KeyImage => (
                key_image::SOP_CLASS,
                KEY_IMAGE_SERIES_NUMBER,
                "ceusd AI key frame",
                "US",
            ),
        };
        let referenced = Referenced {
            sop_class_uid: sop_class.into(),
            sop_instance_uid: uid(kind.name(), self.r.result_id),
        };
        let series = uid(&format!("{}-series", kind.name()), self.r.exam_id);
        let placement = Placement {
            study_instance_uid: self.study,
            series_instance_uid: &series,
            series_number,
            series_description: description,
            modality,
        };
        let mut obj = InMemDicomObject::new_empty();
        put_common(
            &mut obj,
            (&referenced.sop_class_uid, &referenced.sop_instance_uid),
            self.r.context,
            &placement,
            &self.settings.equipment,
            &self.created,
        );
        (referenced, series, obj)
    }

    /// The Structured Report, referring to the key image when there is one.
    fn report(
        &self,
        study_made_here: bool,
        key_image: Option<(Referenced, String, crate::roi::Roi)>,
    ) -> Result<DicomObject, PacsError> {
        let (referenced, _, mut obj) = self.start(ObjectKind::Report);
        let evidence = key_image
            .as_ref()
            .map(|(image, series, _)| (self.study, series.as_str(), image));
        let request = request_item(self.r.context, self.study);
        structured_report::put_document(&mut obj, &self.created, evidence, request);
        let notes = report_notes(self.r.context, study_made_here);
        let device = self.settings.equipment.device_id.as_str();
        let observer_uid = self.settings.uid_root.uid_for(&["device", device]);
        structured_report::put_content(
            &mut obj,
            &ReportFacts {
                result: self.r.result,
                device_id: device,
                device_observer_uid: &observer_uid,
                key_image: key_image.as_ref().map(|(image, _, roi)| (image, *roi)),
                notes: &notes,
            },
        );
        encode(obj, ObjectKind::Report, &referenced)
    }
}

/// What the report says about where its study came from.
fn report_notes(context: &ExamContext, study_made_here: bool) -> Vec<String> {
    let mut notes = Vec::new();
    if study_made_here {
        notes.push(
            "No worklist entry or operator named this exam's study: ceusd made a new study \
             for it. Reconcile it with the patient's record."
                .to_string(),
        );
    }
    if let Some(source) = &context.source {
        notes.push(format!("Exam context from {source}."));
    }
    notes
}

/// The Referenced Request Sequence item: the order the exam fulfils.
fn request_item(context: &ExamContext, study: &str) -> Option<InMemDicomObject> {
    use dicom_core::VR;
    use dicom_dictionary_std::tags;
    if context.accession_number.is_none() && context.requested_procedure_id.is_none() {
        return None;
    }
    let mut item = InMemDicomObject::new_empty();
    put(&mut item, tags::STUDY_INSTANCE_UID, VR::UI, study);
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    put(
        &mut item,
        tags::ACCESSION_NUMBER,
        VR::SH,
        text(&context.accession_number),
    );
    put(
        &mut item,
        tags::REQUESTED_PROCEDURE_ID,
        VR::SH,
        text(&context.requested_procedure_id),
    );
    put(
        &mut item,
        tags::REQUESTED_PROCEDURE_DESCRIPTION,
        VR::LO,
        text(&context.requested_procedure_description),
    );
    put_sequence(&mut item, tags::REFERENCED_STUDY_SEQUENCE, vec![]);
    put_sequence(&mut item, tags::REQUESTED_PROCEDURE_CODE_SEQUENCE, vec![]);
    put(
        &mut item,
        tags::PLACER_ORDER_NUMBER_IMAGING_SERVICE_REQUEST,
        VR::LO,
        "",
    );
    put(
        &mut item,
        tags::FILLER_ORDER_NUMBER_IMAGING_SERVICE_REQUEST,
        VR::LO,
        "",
    );
    Some(item)
}

/// `obj` as a Part 10 file in Explicit VR Little Endian.
fn encode(
    obj: InMemDicomObject,
    kind: ObjectKind,
    referenced: &Referenced,
) -> Result<DicomObject, PacsError> {
    let fail = |reason: String| PacsError::Encode {
        what: kind.name(),
        reason,
    };
    let file = obj
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                .media_storage_sop_class_uid(referenced.sop_class_uid.as_str())
                .media_storage_sop_instance_uid(referenced.sop_instance_uid.as_str()),
        )
        .map_err(|e| fail(format!("file meta: {e}")))?;
    let mut bytes = Vec::new();
    file.write_all(&mut bytes)
        .map_err(|e| fail(format!("writing: {e}")))?;
    Ok(DicomObject {
        kind,
        sop_class_uid: referenced.sop_class_uid.clone(),
        sop_instance_uid: referenced.sop_instance_uid.clone(),
        bytes,
    })
}

impl ResultObjects {
    /// Writes each object to `dir` as `<result id>-<kind>.dcm`, atomically (a reader never
    /// sees half a file). Returns the paths written.
    pub fn write_to_dir(&self, dir: &Path, result_id: &str) -> Result<Vec<PathBuf>, PacsError> {
        let io = |path: &Path, source| PacsError::Io {
            path: path.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let stem: String = result_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let mut written = Vec::new();
        for object in &self.objects {
            let path = dir.join(format!("{stem}-{}.dcm", object.kind.name()));
            write_atomically(&path, |w| std::io::Write::write_all(w, &object.bytes))
                .map_err(|e| io(&path, e))?;
            written.push(path);
        }
        Ok(written)
    }
}
