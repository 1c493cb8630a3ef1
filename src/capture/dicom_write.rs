//! Writing a cine as a DICOM Ultrasound Multi-frame Image: JPEG baseline frames (YBR_FULL_422,
//! one fragment per frame, with a basic offset table), Frame Time, and Contrast/Bolus Start
//! Time when the injection time is known. The synthetic scanner uses it so the DICOM replay
//! path runs on long, realistic clips. Patient attributes name a synthetic subject; nothing
//! identifies a person.

use dicom_core::value::PixelFragmentSequence;
use dicom_core::{dicom_value, DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use image::RgbImage;
use std::path::Path;

use super::input_error::InputError;
use crate::atomic_file::write_atomically;
use crate::rng::{spread, SplitMix64};

/// What the cine's header says besides its pixels.
#[derive(Debug, Clone)]
pub struct CineInfo {
    pub frame_time_ms: f64,
    /// Time of day of the first frame, DICOM TM (HHMMSS.FFFFFF).
    pub acquisition_time: String,
    pub acquisition_date: String,
    /// Injection relative to the first frame, seconds; written as Contrast/Bolus Start Time.
    pub injection_s: Option<f64>,
    /// Seeds the UIDs so the same input gives the same file.
    pub uid_seed: u64,
    pub description: String,
}

fn seconds_to_tm(s: f64) -> String {
    let s = s.rem_euclid(86_400.0);
    let h = (s / 3600.0).floor();
    let m = ((s - h * 3600.0) / 60.0).floor();
    let sec = s - h * 3600.0 - m * 60.0;
    format!("{:02}{:02}{:09.6}", h as u32, m as u32, sec)
}

/// A UID under the 2.25 root (ISO/IEC 9834-8: a UUID as a decimal integer), from a seed.
fn uid(seed: u64, what: u64) -> String {
    let mut rng = SplitMix64(seed ^ spread(what));
    let v = ((rng.next_u64() as u128) << 64 | rng.next_u64() as u128) >> 2; // within 64 characters
    format!("2.25.{v}")
}

/// Puts one element with a primitive value.
pub fn put(obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: impl Into<PrimitiveValue>) {
    obj.put(DataElement::new(tag, vr, value.into()));
}

/// Writes `frames` (all the same size) to `path`, atomically. Returns the number of frames.
pub fn write_cine(
    path: &Path,
    frames: impl IntoIterator<Item = RgbImage>,
    info: &CineInfo,
) -> Result<u32, InputError> {
    let fail = |reason: String| InputError::Dicom {
        path: path.to_path_buf(),
        reason,
    };
    let (fragments, (w, h)) = jpeg_fragments(frames).map_err(fail)?;
    // Basic offset table: each frame's item offset from the first item (8-byte item headers).
    let mut offsets = Vec::with_capacity(fragments.len());
    let mut at = 0u32;
    for f in &fragments {
        offsets.push(at);
        at += 8 + f.len() as u32;
    }
    let n = fragments.len() as u32;

    let mut obj = InMemDicomObject::new_empty();
    put_identity(&mut obj, info);
    // 8-bit YBR_FULL_422, as baseline JPEG stores it.
    put_colour_pixels(
        &mut obj,
        &ColourPixels {
            width: w,
            height: h,
            frames: Some(n),
            photometric: "YBR_FULL_422",
            lossy: true,
        },
    );
    put_cine_timing(&mut obj, info).map_err(fail)?;
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PixelFragmentSequence::new(offsets, fragments),
    ));
    let file = obj
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::JPEG_BASELINE8_BIT))
        .map_err(|e| fail(format!("file meta: {e}")))?;
    write_atomically(path, |w| file.write_all(w).map_err(std::io::Error::other)).map_err(|e| {
        InputError::Io {
            path: path.to_path_buf(),
            source: e,
        }
    })?;
    Ok(n)
}

/// One baseline JPEG fragment per frame (padded to even length).
type Fragments = Vec<Vec<u8>>;

/// Each frame as a JPEG fragment, and the frames' size (width, height).
fn jpeg_fragments(
    frames: impl IntoIterator<Item = RgbImage>,
) -> Result<(Fragments, (u32, u32)), String> {
    let mut fragments: Vec<Vec<u8>> = Vec::new();
    let mut size: Option<(u32, u32)> = None;
    for (i, frame) in frames.into_iter().enumerate() {
        let dims = frame.dimensions();
        if *size.get_or_insert(dims) != dims {
            return Err(format!(
                "frame {i} is {}x{}, the cine is {:?}",
                dims.0, dims.1, size
            ));
        }
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
            .encode_image(&frame)
            .map_err(|e| format!("frame {i}: JPEG encoding: {e}"))?;
        if jpeg.len() % 2 == 1 {
            jpeg.push(0); // fragments have even length
        }
        fragments.push(jpeg);
    }
    let size = size.ok_or("no frames to write")?;
    Ok((fragments, size))
}

/// Patient, study, series and instance: the synthetic patient and UIDs from the seed.
fn put_identity(obj: &mut InMemDicomObject, info: &CineInfo) {
    put(
        obj,
        tags::SOP_CLASS_UID,
        VR::UI,
        uids::ULTRASOUND_MULTI_FRAME_IMAGE_STORAGE,
    );
    put(obj, tags::SOP_INSTANCE_UID, VR::UI, uid(info.uid_seed, 3));
    put(obj, tags::STUDY_INSTANCE_UID, VR::UI, uid(info.uid_seed, 1));
    put(
        obj,
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        uid(info.uid_seed, 2),
    );
    put(obj, tags::MODALITY, VR::CS, "US");
    put(obj, tags::PATIENT_NAME, VR::PN, "SYNTHETIC^CEUS");
    put(
        obj,
        tags::PATIENT_ID,
        VR::LO,
        format!("SYNTH-{}", info.uid_seed),
    );
    put(
        obj,
        tags::STUDY_DATE,
        VR::DA,
        info.acquisition_date.as_str(),
    );
    put(
        obj,
        tags::STUDY_TIME,
        VR::TM,
        info.acquisition_time.as_str(),
    );
    put(
        obj,
        tags::ACQUISITION_TIME,
        VR::TM,
        info.acquisition_time.as_str(),
    );
    put(
        obj,
        tags::CONTENT_TIME,
        VR::TM,
        info.acquisition_time.as_str(),
    );
    put(
        obj,
        tags::SERIES_DESCRIPTION,
        VR::LO,
        info.description.as_str(),
    );
    put(obj, tags::INSTANCE_NUMBER, VR::IS, "1");
}

/// The Image Pixel module's description of 8-bit, three-sample pixels (and whether they were
/// ever lossily compressed).
pub struct ColourPixels<'a> {
    pub width: u32,
    pub height: u32,
    /// Number of Frames, for multi-frame objects.
    pub frames: Option<u32>,
    pub photometric: &'a str,
    pub lossy: bool,
}

/// The Image Pixel module's attributes (not the pixel data) for `pixels`.
pub fn put_colour_pixels(obj: &mut InMemDicomObject, pixels: &ColourPixels) {
    let us = |v: u16| PrimitiveValue::from(v);
    put(obj, tags::SAMPLES_PER_PIXEL, VR::US, us(3));
    put(
        obj,
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        pixels.photometric,
    );
    put(obj, tags::PLANAR_CONFIGURATION, VR::US, us(0));
    if let Some(n) = pixels.frames {
        put(obj, tags::NUMBER_OF_FRAMES, VR::IS, n.to_string());
    }
    put(obj, tags::ROWS, VR::US, us(pixels.height as u16));
    put(obj, tags::COLUMNS, VR::US, us(pixels.width as u16));
    put(obj, tags::BITS_ALLOCATED, VR::US, us(8));
    put(obj, tags::BITS_STORED, VR::US, us(8));
    put(obj, tags::HIGH_BIT, VR::US, us(7));
    put(obj, tags::PIXEL_REPRESENTATION, VR::US, us(0));
    let lossy = if pixels.lossy { "01" } else { "00" };
    put(obj, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, lossy);
}

/// Frame timing, and the contrast agent with its injection time when known.
fn put_cine_timing(obj: &mut InMemDicomObject, info: &CineInfo) -> Result<(), String> {
    put(
        obj,
        tags::FRAME_TIME,
        VR::DS,
        format!("{:.3}", info.frame_time_ms),
    );
    put(
        obj,
        tags::CINE_RATE,
        VR::IS,
        format!("{}", (1000.0 / info.frame_time_ms).round() as u32),
    );
    obj.put(DataElement::new(
        tags::FRAME_INCREMENT_POINTER,
        VR::AT,
        dicom_value!(Tags, [tags::FRAME_TIME]),
    ));
    put(obj, tags::CONTRAST_BOLUS_AGENT, VR::LO, "SonoVue");
    if let Some(inj) = info.injection_s {
        let start = super::replay::parse_tm(&info.acquisition_time).ok_or_else(|| {
            format!(
                "acquisition time '{}' is not a DICOM time",
                info.acquisition_time
            )
        })?;
        put(
            obj,
            tags::CONTRAST_BOLUS_START_TIME,
            VR::TM,
            seconds_to_tm(start + inj),
        );
    }
    Ok(())
}
