//! What every object ceusd sends to the PACS carries besides its content: the patient, the
//! study, the series, the equipment that made it and its own identity; and the small helpers
//! that put DICOM elements into a data set.

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use std::time::SystemTime;

use super::context::ExamContext;

/// The version written into Software Versions.
const SOFTWARE_VERSION: &str = env!("CARGO_PKG_VERSION");
pub const MANUFACTURER: &str = "ceusd";

pub use crate::capture::dicom_write::put;

/// A sequence of `items` (possibly empty: a type 2 sequence).
pub fn put_sequence(obj: &mut InMemDicomObject, tag: Tag, items: Vec<InMemDicomObject>) {
    obj.put(DataElement::new(tag, VR::SQ, DataSetSequence::from(items)));
}

/// A type 2 element: present, and empty when the value is unknown.
pub fn put_or_empty(obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: Option<&str>) {
    put(obj, tag, vr, value.unwrap_or(""));
}

/// A moment as DICOM writes it, in UTC (the objects say so in Timezone Offset From UTC).
#[derive(Debug, Clone, PartialEq)]
pub struct DicomMoment {
    /// DA, YYYYMMDD.
    pub date: String,
    /// TM, HHMMSS.
    pub time: String,
}

impl DicomMoment {
    pub fn of(at: SystemTime) -> Self {
        // "2026-12-02T21:31:37Z"
        let text = humantime::format_rfc3339_seconds(at).to_string();
        let digits: String = text.chars().filter(char::is_ascii_digit).collect();
        Self {
            date: digits[..8].to_string(),
            time: digits[8..14].to_string(),
        }
    }
}

/// Who made the objects: the cart and its software.
#[derive(Debug, Clone)]
pub struct Equipment {
    /// The cart's device id (the MQTT topics' `<device>`), written as Station Name and
    /// Device Serial Number.
    pub device_id: String,
    pub institution_name: Option<String>,
}

/// The study the objects join and the series they make.
pub struct Placement<'a> {
    pub study_instance_uid: &'a str,
    pub series_instance_uid: &'a str,
    pub series_number: u32,
    pub series_description: &'a str,
    pub modality: &'a str,
}

/// SOP Common, Patient, General Study, General Series and General Equipment (with the
/// Enhanced General Equipment attributes).
pub fn put_common(
    obj: &mut InMemDicomObject,
    (sop_class_uid, sop_instance_uid): (&str, &str),
    context: &ExamContext,
    placement: &Placement,
    equipment: &Equipment,
    created: &DicomMoment,
) {
    put(obj, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
    put(obj, tags::SOP_CLASS_UID, VR::UI, sop_class_uid);
    put(obj, tags::SOP_INSTANCE_UID, VR::UI, sop_instance_uid);
    put(
        obj,
        tags::INSTANCE_CREATION_DATE,
        VR::DA,
        created.date.as_str(),
    );
    put(
        obj,
        tags::INSTANCE_CREATION_TIME,
        VR::TM,
        created.time.as_str(),
    );
    put(obj, tags::TIMEZONE_OFFSET_FROM_UTC, VR::SH, "+0000");
    put_patient(obj, context);
    put_study(obj, context, placement.study_instance_uid, created);
    put(obj, tags::MODALITY, VR::CS, placement.modality);
    put(
        obj,
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        placement.series_instance_uid,
    );
    put(
        obj,
        tags::SERIES_NUMBER,
        VR::IS,
        placement.series_number.to_string(),
    );
    put(
        obj,
        tags::SERIES_DESCRIPTION,
        VR::LO,
        placement.series_description,
    );
    put(obj, tags::MANUFACTURER, VR::LO, MANUFACTURER);
    put(obj, tags::MANUFACTURER_MODEL_NAME, VR::LO, MANUFACTURER);
    put(
        obj,
        tags::DEVICE_SERIAL_NUMBER,
        VR::LO,
        equipment.device_id.as_str(),
    );
    put(
        obj,
        tags::STATION_NAME,
        VR::SH,
        station_name(&equipment.device_id),
    );
    put(obj, tags::SOFTWARE_VERSIONS, VR::LO, SOFTWARE_VERSION);
    if let Some(name) = &equipment.institution_name {
        put(obj, tags::INSTITUTION_NAME, VR::LO, name.as_str());
    }
}

/// Station Name is a short string (16 characters); the full id is the serial number.
fn station_name(device_id: &str) -> String {
    device_id.chars().take(16).collect()
}

fn put_patient(obj: &mut InMemDicomObject, context: &ExamContext) {
    put_or_empty(
        obj,
        tags::PATIENT_NAME,
        VR::PN,
        context.patient_name.as_deref(),
    );
    put_or_empty(obj, tags::PATIENT_ID, VR::LO, context.patient_id.as_deref());
    put_or_empty(
        obj,
        tags::PATIENT_BIRTH_DATE,
        VR::DA,
        context.patient_birth_date.as_deref(),
    );
    put_or_empty(
        obj,
        tags::PATIENT_SEX,
        VR::CS,
        context.patient_sex.map(|s| s.code()),
    );
}

fn put_study(
    obj: &mut InMemDicomObject,
    context: &ExamContext,
    study_instance_uid: &str,
    created: &DicomMoment,
) {
    put(obj, tags::STUDY_INSTANCE_UID, VR::UI, study_instance_uid);
    // The worklist's study date is the scheduled one; the objects are dated when made.
    put(obj, tags::STUDY_DATE, VR::DA, created.date.as_str());
    put(obj, tags::STUDY_TIME, VR::TM, created.time.as_str());
    put(obj, tags::REFERRING_PHYSICIAN_NAME, VR::PN, "");
    put(obj, tags::STUDY_ID, VR::SH, "");
    put_or_empty(
        obj,
        tags::ACCESSION_NUMBER,
        VR::SH,
        context.accession_number.as_deref(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_moment_is_written_as_dicom_date_and_time_in_utc() {
        // 2026-12-02T21:31:37Z
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_247_097);
        let m = DicomMoment::of(at);
        assert_eq!(m.date, "20261202");
        assert_eq!(m.time, "213137");
    }
}
