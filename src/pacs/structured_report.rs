//! The result as a DICOM Comprehensive Structured Report: a tree of coded content items that a
//! PACS stores and a viewer renders, and that other software can read without parsing text.
//!
//! It follows the outline of TID 2000 (Basic Diagnostic Imaging Report): a root "Diagnostic
//! Imaging Report" container, the device as observer (TID 1004), then the findings. TID 1500
//! (Measurement Report) was not followed: its measurement groups and tracking identifiers
//! describe lesions measured on images, far more than one classifier's output needs. Standard
//! codes are used where DICOM has one (probability of cancer, finding, algorithm name and
//! version, best illustration, image region); the rest are in ceusd's own coding scheme
//! `99CEUSD`, declared in the object, with meanings that read as plain words.

use dicom_core::{PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;

use super::dataset::{put, put_sequence, DicomMoment};
use crate::exam::ExamResult;
use crate::roi::Roi;

pub const SOP_CLASS: &str = uids::COMPREHENSIVE_SR_STORAGE;
/// ceusd's private coding scheme (PS3.3 8.2: designators starting with 99 are local).
pub const PRIVATE_SCHEME: &str = "99CEUSD";

/// A coded concept: value, scheme, meaning.
#[derive(Debug, Clone)]
pub struct Code {
    pub value: String,
    pub scheme: &'static str,
    pub meaning: String,
}

fn code(value: &str, scheme: &'static str, meaning: &str) -> Code {
    Code {
        value: value.into(),
        scheme,
        meaning: meaning.into(),
    }
}

fn dcm(value: &str, meaning: &str) -> Code {
    code(value, "DCM", meaning)
}

fn own(value: &str, meaning: &str) -> Code {
    code(value, PRIVATE_SCHEME, meaning)
}

fn code_item(c: &Code) -> InMemDicomObject {
    let mut item = InMemDicomObject::new_empty();
    put(&mut item, tags::CODE_VALUE, VR::SH, c.value.as_str());
    put(&mut item, tags::CODING_SCHEME_DESIGNATOR, VR::SH, c.scheme);
    put(&mut item, tags::CODE_MEANING, VR::LO, c.meaning.as_str());
    item
}

/// How a content item relates to its parent.
#[derive(Clone, Copy)]
enum Relation {
    Contains,
    HasObsContext,
    HasProperties,
    SelectedFrom,
}

impl Relation {
    fn as_str(self) -> &'static str {
        match self {
            Self::Contains => "CONTAINS",
            Self::HasObsContext => "HAS OBS CONTEXT",
            Self::HasProperties => "HAS PROPERTIES",
            Self::SelectedFrom => "SELECTED FROM",
        }
    }
}

/// One content item of the tree, with its children.
struct Item {
    data: InMemDicomObject,
    children: Vec<Item>,
}

impl Item {
    fn new(relation: Option<Relation>, value_type: &str, concept: Option<&Code>) -> Self {
        let mut data = InMemDicomObject::new_empty();
        if let Some(r) = relation {
            put(&mut data, tags::RELATIONSHIP_TYPE, VR::CS, r.as_str());
        }
        put(&mut data, tags::VALUE_TYPE, VR::CS, value_type);
        if let Some(c) = concept {
            put_sequence(
                &mut data,
                tags::CONCEPT_NAME_CODE_SEQUENCE,
                vec![code_item(c)],
            );
        }
        Self {
            data,
            children: Vec::new(),
        }
    }

    fn container(relation: Option<Relation>, concept: &Code) -> Self {
        let mut item = Self::new(relation, "CONTAINER", Some(concept));
        put(
            &mut item.data,
            tags::CONTINUITY_OF_CONTENT,
            VR::CS,
            "SEPARATE",
        );
        item
    }

    fn text(relation: Relation, concept: &Code, value: &str) -> Self {
        let mut item = Self::new(Some(relation), "TEXT", Some(concept));
        put(&mut item.data, tags::TEXT_VALUE, VR::UT, value);
        item
    }

    fn code(relation: Relation, concept: &Code, value: &Code) -> Self {
        let mut item = Self::new(Some(relation), "CODE", Some(concept));
        put_sequence(
            &mut item.data,
            tags::CONCEPT_CODE_SEQUENCE,
            vec![code_item(value)],
        );
        item
    }

    fn uid(relation: Relation, concept: &Code, uid: &str) -> Self {
        let mut item = Self::new(Some(relation), "UIDREF", Some(concept));
        put(&mut item.data, tags::UID, VR::UI, uid);
        item
    }

    fn num(concept: &Code, value: f64, unit: &Code) -> Self {
        let mut item = Self::new(Some(Relation::Contains), "NUM", Some(concept));
        let mut measured = InMemDicomObject::new_empty();
        put(
            &mut measured,
            tags::NUMERIC_VALUE,
            VR::DS,
            decimal_string(value),
        );
        put_sequence(
            &mut measured,
            tags::MEASUREMENT_UNITS_CODE_SEQUENCE,
            vec![code_item(unit)],
        );
        put_sequence(
            &mut item.data,
            tags::MEASURED_VALUE_SEQUENCE,
            vec![measured],
        );
        item
    }

    fn image(relation: Relation, concept: Option<&Code>, instance: &Referenced) -> Self {
        let mut item = Self::new(Some(relation), "IMAGE", concept);
        put_sequence(
            &mut item.data,
            tags::REFERENCED_SOP_SEQUENCE,
            vec![instance.item()],
        );
        item
    }

    fn with(mut self, child: Item) -> Self {
        self.children.push(child);
        self
    }

    /// The item as a data set, its children in its Content Sequence.
    fn into_dataset(self) -> InMemDicomObject {
        let mut data = self.data;
        if !self.children.is_empty() {
            let children = self.children.into_iter().map(Item::into_dataset).collect();
            put_sequence(&mut data, tags::CONTENT_SEQUENCE, children);
        }
        data
    }
}

/// A DS value: at most 16 characters.
fn decimal_string(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        return format!("{value:.0}");
    }
    for decimals in (0..=6).rev() {
        let s = format!("{value:.decimals$}");
        if s.len() <= 16 {
            return s;
        }
    }
    format!("{value:.0}")
}

/// An instance the report refers to.
pub struct Referenced {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
}

impl Referenced {
    fn item(&self) -> InMemDicomObject {
        let mut item = InMemDicomObject::new_empty();
        put(
            &mut item,
            tags::REFERENCED_SOP_CLASS_UID,
            VR::UI,
            self.sop_class_uid.as_str(),
        );
        put(
            &mut item,
            tags::REFERENCED_SOP_INSTANCE_UID,
            VR::UI,
            self.sop_instance_uid.as_str(),
        );
        item
    }
}

/// What the report says besides the result: the observer, the key image and study notes.
pub struct ReportFacts<'a> {
    pub result: &'a ExamResult,
    pub device_id: &'a str,
    pub device_observer_uid: &'a str,
    /// The key image and the ROI on it, when there is a key frame.
    pub key_image: Option<(&'a Referenced, Roi)>,
    /// Said in the report, e.g. that the study was made by ceusd for want of a worklist entry.
    pub notes: &'a [String],
}

/// The report's content tree (SR Document Content module), on `obj`.
pub fn put_content(obj: &mut InMemDicomObject, facts: &ReportFacts) {
    let root = Item::container(None, &code("18748-4", "LN", "Diagnostic Imaging Report"));
    let mut root = observer_context(root, facts);
    root = algorithm(root, facts.result);
    root = findings(root, facts.result);
    root = timing(root, facts.result);
    if let Some((image, roi)) = facts.key_image {
        root = key_image(root, image, roi);
    }
    for w in &facts.result.warnings {
        root = root.with(Item::text(
            Relation::Contains,
            &own("warning", "Warning"),
            w,
        ));
    }
    for note in facts.notes {
        root = root.with(Item::text(
            Relation::Contains,
            &dcm("121106", "Comment"),
            note,
        ));
    }
    let Item { data, children } = root;
    for element in data.into_iter() {
        obj.put(element);
    }
    let children = children.into_iter().map(Item::into_dataset).collect();
    put_sequence(obj, tags::CONTENT_SEQUENCE, children);
    put_sequence(
        obj,
        tags::CODING_SCHEME_IDENTIFICATION_SEQUENCE,
        vec![private_scheme()],
    );
}

fn private_scheme() -> InMemDicomObject {
    let mut item = InMemDicomObject::new_empty();
    put(
        &mut item,
        tags::CODING_SCHEME_DESIGNATOR,
        VR::SH,
        PRIVATE_SCHEME,
    );
    put(
        &mut item,
        tags::CODING_SCHEME_NAME,
        VR::ST,
        "ceusd result concepts",
    );
    put(
        &mut item,
        tags::CODING_SCHEME_RESPONSIBLE_ORGANIZATION,
        VR::ST,
        "ceusd",
    );
    item
}

/// TID 1004: the cart's ceusd as the device that observed.
fn observer_context(root: Item, facts: &ReportFacts) -> Item {
    let context = Relation::HasObsContext;
    root.with(Item::code(
        context,
        &dcm("121005", "Observer Type"),
        &dcm("121007", "Device"),
    ))
    .with(Item::uid(
        context,
        &dcm("121012", "Device Observer UID"),
        facts.device_observer_uid,
    ))
    .with(Item::text(
        context,
        &dcm("121013", "Device Observer Name"),
        &format!("ceusd on {}", facts.device_id),
    ))
    .with(Item::text(
        context,
        &dcm("121014", "Device Observer Manufacturer"),
        super::dataset::MANUFACTURER,
    ))
    .with(Item::text(
        context,
        &dcm("121015", "Device Observer Model Name"),
        "ceusd",
    ))
}

/// The model: name, content hash (its version: what a site pins), weights, intended use.
fn algorithm(root: Item, result: &ExamResult) -> Item {
    let m = &result.model;
    let mut root = root
        .with(Item::text(
            Relation::Contains,
            &dcm("111001", "Algorithm Name"),
            &m.name,
        ))
        .with(Item::text(
            Relation::Contains,
            &dcm("111003", "Algorithm Version"),
            &m.content_hash,
        ))
        .with(Item::text(
            Relation::Contains,
            &own("intended-use", "Intended use of the model"),
            &m.intended_use,
        ))
        .with(Item::text(
            Relation::Contains,
            &own("weights", "Model weight format"),
            &m.quantization,
        ));
    if m.not_for_clinical_use {
        root = root.with(Item::text(
            Relation::Contains,
            &own("no-clinical-use", "Not for clinical use"),
            "This model must not guide care: its intended use says so.",
        ));
    }
    root
}

fn no_units() -> Code {
    code("1", "UCUM", "no units")
}

/// The score, the label at the threshold, the threshold and the window's spread; or why there
/// is no score.
fn findings(root: Item, result: &ExamResult) -> Item {
    let (Some(score), Some(label)) = (result.score, &result.label) else {
        return root.with(Item::text(
            Relation::Contains,
            &own("no-score", "No score given"),
            result.reason.as_deref().unwrap_or("no reason given"),
        ));
    };
    let mut root = root
        .with(Item::num(
            &probability_concept(result),
            f64::from(score),
            &no_units(),
        ))
        .with(Item::code(
            Relation::Contains,
            &dcm("121071", "Finding"),
            &class_code(label),
        ))
        .with(Item::num(
            &own("threshold", "Decision threshold"),
            f64::from(result.threshold),
            &no_units(),
        ));
    let spread = &result.spread;
    for (value, concept) in [
        (
            spread.median,
            own("window-median", "Median probability of the window's frames"),
        ),
        (
            spread.min,
            own("window-min", "Lowest probability of the window's frames"),
        ),
        (
            spread.max,
            own("window-max", "Highest probability of the window's frames"),
        ),
    ] {
        if let Some(v) = value {
            root = root.with(Item::num(&concept, f64::from(v), &no_units()));
        }
    }
    root.with(Item::num(
        &own("frames-scored", "Frames scored in the window"),
        spread.frames_scored as f64,
        &code("{frames}", "UCUM", "frames"),
    ))
}

/// DICOM's "Probability of cancer" when the positive class is PDAC (the malignant one).
fn probability_concept(result: &ExamResult) -> Code {
    if result.positive_class.eq_ignore_ascii_case("pdac") {
        dcm("111047", "Probability of cancer")
    } else {
        own(
            "probability",
            &format!("Probability of {}", class_meaning(&result.positive_class)),
        )
    }
}

fn class_meaning(class: &str) -> String {
    match class.to_ascii_lowercase().as_str() {
        "pdac" => "Pancreatic ductal adenocarcinoma".into(),
        "cp" => "Chronic pancreatitis".into(),
        _ => class.into(),
    }
}

fn class_code(class: &str) -> Code {
    Code {
        value: class.chars().take(16).collect(),
        scheme: PRIVATE_SCHEME,
        meaning: class_meaning(class),
    }
}

/// The key frame's time after injection, the clock it was read on, and whether the injection
/// time was estimated.
fn timing(root: Item, result: &ExamResult) -> Item {
    let Some(key) = &result.key_frame else {
        return root;
    };
    let t = &result.timing;
    let mut time = Item::num(
        &own("key-frame-time", "Key frame time after contrast injection"),
        key.elapsed_s,
        &code("s", "UCUM", "s"),
    );
    if let Some(source) = t.clock_source {
        time = time.with(Item::text(
            Relation::HasProperties,
            &own("clock-source", "Injection time source"),
            &source.to_string(),
        ));
    }
    time = time.with(Item::text(
        Relation::HasProperties,
        &own("inj-estimated", "Injection time estimated"),
        if t.estimated { "yes" } else { "no" },
    ));
    root.with(time)
}

/// The key image, and the ROI on it as an image region selected from it.
fn key_image(root: Item, image: &Referenced, roi: Roi) -> Item {
    let (x0, y0) = (roi.x as f32, roi.y as f32);
    let (x1, y1) = ((roi.x + roi.width) as f32, (roi.y + roi.height) as f32);
    let mut region = Item::new(
        Some(Relation::Contains),
        "SCOORD",
        Some(&dcm("111030", "Image Region")),
    );
    put(&mut region.data, tags::GRAPHIC_TYPE, VR::CS, "POLYLINE");
    put(
        &mut region.data,
        tags::GRAPHIC_DATA,
        VR::FL,
        PrimitiveValue::F32(
            [x0, y0, x1, y0, x1, y1, x0, y1, x0, y0]
                .iter()
                .copied()
                .collect(),
        ),
    );
    root.with(Item::image(
        Relation::Contains,
        Some(&dcm("121080", "Best illustration of finding")),
        image,
    ))
    .with(region.with(Item::image(Relation::SelectedFrom, None, image)))
}

/// SR Document General and SR Document Series attributes other than the content.
pub fn put_document(
    obj: &mut InMemDicomObject,
    created: &DicomMoment,
    evidence: Option<(&str, &str, &Referenced)>,
    request: Option<InMemDicomObject>,
) {
    put(obj, tags::INSTANCE_NUMBER, VR::IS, "1");
    put(obj, tags::COMPLETION_FLAG, VR::CS, "COMPLETE");
    put(obj, tags::VERIFICATION_FLAG, VR::CS, "UNVERIFIED");
    put(obj, tags::CONTENT_DATE, VR::DA, created.date.as_str());
    put(obj, tags::CONTENT_TIME, VR::TM, created.time.as_str());
    put_sequence(
        obj,
        tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE,
        vec![],
    );
    put_sequence(obj, tags::PERFORMED_PROCEDURE_CODE_SEQUENCE, vec![]);
    if let Some((study, series, instance)) = evidence {
        put_sequence(
            obj,
            tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE,
            vec![evidence_item(study, series, instance)],
        );
    }
    if let Some(request) = request {
        put_sequence(obj, tags::REFERENCED_REQUEST_SEQUENCE, vec![request]);
    }
}

/// Hierarchical SOP Instance Reference: study, series, instance.
fn evidence_item(study: &str, series: &str, instance: &Referenced) -> InMemDicomObject {
    let mut series_item = InMemDicomObject::new_empty();
    put(&mut series_item, tags::SERIES_INSTANCE_UID, VR::UI, series);
    put_sequence(
        &mut series_item,
        tags::REFERENCED_SOP_SEQUENCE,
        vec![instance.item()],
    );
    let mut study_item = InMemDicomObject::new_empty();
    put(&mut study_item, tags::STUDY_INSTANCE_UID, VR::UI, study);
    put_sequence(
        &mut study_item,
        tags::REFERENCED_SERIES_SEQUENCE,
        vec![series_item],
    );
    study_item
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_strings_fit_sixteen_characters() {
        assert_eq!(decimal_string(0.8345), "0.834500");
        assert_eq!(decimal_string(35.125), "35.125000");
        assert_eq!(decimal_string(8.0), "8");
        assert!(decimal_string(123_456_789_012.345).len() <= 16);
    }
}
