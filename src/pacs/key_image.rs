//! The key image sent to the PACS: the key frame's CEUS pane with the ROI's Grad-CAM overlay
//! and the ROI box burned in, under a banner that states the score, the key frame's time after
//! injection, the model, and "NOT FOR CLINICAL USE" whenever the model says so. Burned in,
//! because a PACS viewer shows pixels whatever it makes of overlays and SR references.

use dicom_core::{PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use image::{Rgb, RgbImage};

use super::dataset::{put, DicomMoment};
use crate::capture::dicom_write::{put_colour_pixels, ColourPixels};
use crate::draw::{line, text};
use crate::exam::{ExamResult, KeyFramePicture};
use crate::roi::Roi;

const BANNER_BACKGROUND: [u8; 3] = [0, 0, 0];
const BANNER_TEXT: [u8; 3] = [235, 235, 235];
const WARNING_TEXT: [u8; 3] = [255, 64, 64];
const ROI_BOX: [u8; 3] = [255, 220, 0];
/// Pixels between banner lines and around the text.
const MARGIN: u32 = 6;

/// The picture and where its ROI lies on it (below the banner).
pub struct BurnedInKeyImage {
    pub image: RgbImage,
    pub roi: Roi,
}

/// One line of the banner: words, colour, and whether it must stand out (drawn large when
/// the width allows).
struct BannerLine {
    words: String,
    colour: [u8; 3],
    large: bool,
}

/// The banner's lines: what a radiologist reading only the image must see.
fn banner_lines(result: &ExamResult) -> Vec<BannerLine> {
    let line = |words: String, colour, large| BannerLine {
        words,
        colour,
        large,
    };
    let verdict = match (result.score, &result.label) {
        (Some(score), Some(label)) => format!(
            "AI: P({}) {score:.3} -> {label} (threshold {:.2})",
            result.positive_class, result.threshold
        ),
        _ => format!(
            "AI: no score ({})",
            result.reason.as_deref().unwrap_or("no reason given")
        ),
    };
    let mut lines = vec![line(verdict, BANNER_TEXT, true)];
    if let Some(key) = &result.key_frame {
        let clock = match result.timing.clock_source {
            Some(c) => format!("; injection time {c}"),
            None => String::new(),
        };
        lines.push(line(
            format!("key frame {:.1} s after injection{clock}", key.elapsed_s),
            BANNER_TEXT,
            false,
        ));
    }
    let hash: String = result.model.content_hash.chars().take(23).collect();
    lines.push(line(
        format!("model {} ({hash}...)", result.model.name),
        BANNER_TEXT,
        false,
    ));
    if result.model.not_for_clinical_use {
        lines.push(line("NOT FOR CLINICAL USE".into(), WARNING_TEXT, true));
    }
    lines
}

/// The text scale of `line`: 2 for lines that must stand out, when they fit the width.
fn text_scale(line: &BannerLine, width: u32) -> u32 {
    let fits_large = line.words.chars().count() as u32 * 16 + 2 * MARGIN <= width;
    if line.large && fits_large {
        2
    } else {
        1
    }
}

/// Burns the overlay, the ROI box and the banner into a colour copy of the pane.
pub fn burn_in(picture: &KeyFramePicture, result: &ExamResult) -> BurnedInKeyImage {
    let lines = banner_lines(result);
    let (w, h) = picture.ceus_pane.dimensions();
    let scales: Vec<u32> = lines.iter().map(|l| text_scale(l, w)).collect();
    let banner = MARGIN + scales.iter().map(|s| 8 * s + MARGIN).sum::<u32>();
    let mut image = RgbImage::from_pixel(w, h + banner, Rgb(BANNER_BACKGROUND));
    for (x, y, p) in picture.ceus_pane.enumerate_pixels() {
        image.put_pixel(x, y + banner, Rgb([p.0[0]; 3]));
    }
    let roi = Roi::new(
        picture.roi_on_pane.x,
        picture.roi_on_pane.y + banner,
        picture.roi_on_pane.width,
        picture.roi_on_pane.height,
    );
    for (x, y, p) in picture.overlay.enumerate_pixels() {
        let (px, py) = (roi.x + x, roi.y + y);
        if px < w && py < h + banner {
            image.put_pixel(px, py, *p);
        }
    }
    draw_box(&mut image, &roi);
    let mut y = MARGIN;
    for (line, scale) in lines.iter().zip(scales) {
        let at = (f64::from(MARGIN), f64::from(y));
        text(
            &mut image,
            at.0,
            at.1,
            &line.words,
            line.colour,
            i64::from(scale),
        );
        y += 8 * scale + MARGIN;
    }
    BurnedInKeyImage { image, roi }
}

/// The ROI's outline, just outside it so the overlay stays whole.
fn draw_box(image: &mut RgbImage, roi: &Roi) {
    let (x0, y0) = (f64::from(roi.x) - 1.0, f64::from(roi.y) - 1.0);
    let (x1, y1) = (f64::from(roi.x + roi.width), f64::from(roi.y + roi.height));
    for (a, b) in [
        ((x0, y0), (x1, y0)),
        ((x1, y0), (x1, y1)),
        ((x1, y1), (x0, y1)),
        ((x0, y1), (x0, y0)),
    ] {
        line(image, a, b, ROI_BOX, 1, false);
    }
}

/// The Secondary Capture Image modules (General Image, SC Equipment, Image Pixel) of `image`.
/// Patient, study, series and SOP common come from `dataset::put_common`.
pub fn put_key_image(obj: &mut InMemDicomObject, image: &RgbImage, content: &DicomMoment) {
    put(obj, tags::CONVERSION_TYPE, VR::CS, "WSD");
    // The pancreas is not a paired organ: laterality is known to be none.
    put(obj, tags::LATERALITY, VR::CS, "");
    put(obj, tags::INSTANCE_NUMBER, VR::IS, "1");
    put(obj, tags::PATIENT_ORIENTATION, VR::CS, "");
    put(obj, tags::CONTENT_DATE, VR::DA, content.date.as_str());
    put(obj, tags::CONTENT_TIME, VR::TM, content.time.as_str());
    put(
        obj,
        tags::IMAGE_TYPE,
        VR::CS,
        PrimitiveValue::Strs(["DERIVED".to_string(), "SECONDARY".to_string()].into()),
    );
    put(obj, tags::BURNED_IN_ANNOTATION, VR::CS, "YES");
    put(
        obj,
        tags::DERIVATION_DESCRIPTION,
        VR::ST,
        "CEUS pane of the key frame with the ROI's Grad-CAM heatmap, the ROI box and the \
         AI result burned in",
    );
    put_colour_pixels(
        obj,
        &ColourPixels {
            width: image.width(),
            height: image.height(),
            frames: None,
            photometric: "RGB",
            lossy: false,
        },
    );
    put(
        obj,
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::U8(even_length(image.as_raw().clone()).into()),
    );
}

/// DICOM values have even length: an odd pixel count of RGB bytes gets one zero byte.
fn even_length(mut bytes: Vec<u8>) -> Vec<u8> {
    if bytes.len() % 2 == 1 {
        bytes.push(0);
    }
    bytes
}

/// The SOP class of the key image.
pub const SOP_CLASS: &str = uids::SECONDARY_CAPTURE_IMAGE_STORAGE;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exam::{ResultTiming, Spread};
    use crate::model::metadata::Training;
    use crate::model::ModelIdentity;
    use image::GrayImage;

    fn result(not_for_clinical_use: bool) -> ExamResult {
        ExamResult {
            score: Some(0.83),
            label: Some("PDAC".into()),
            reason: None,
            threshold: 0.5,
            positive_class: "PDAC".into(),
            key_frame: None,
            frames: Vec::new(),
            spread: Spread::default(),
            roi: None,
            timing: ResultTiming::default(),
            enhancement: None,
            warnings: Vec::new(),
            model: ModelIdentity {
                name: "site-model".into(),
                content_hash: format!("sha256:{}", "ab".repeat(32)),
                quantization: "f32".into(),
                trained: true,
                training: Training::Trained,
                intended_use: "CEUS of pancreatic lesions".into(),
                not_for_clinical_use,
                source: "test".into(),
                path: None,
                classes: vec!["CP".into(), "PDAC".into()],
                positive_class: "PDAC".into(),
                threshold: 0.5,
            },
        }
    }

    fn picture() -> KeyFramePicture {
        KeyFramePicture {
            ceus_pane: GrayImage::from_pixel(576, 400, image::Luma([90])),
            roi_on_pane: Roi::new(100, 80, 120, 90),
            overlay: RgbImage::from_pixel(120, 90, Rgb([10, 200, 30])),
        }
    }

    fn count(image: &RgbImage, colour: [u8; 3]) -> usize {
        image.pixels().filter(|p| p.0 == colour).count()
    }

    #[test]
    fn not_for_clinical_use_is_burned_in_exactly_when_the_model_says_so() {
        let flagged = burn_in(&picture(), &result(true));
        let clinical = burn_in(&picture(), &result(false));
        assert!(
            count(&flagged.image, WARNING_TEXT) > 100,
            "the words are drawn"
        );
        assert_eq!(count(&clinical.image, WARNING_TEXT), 0);
        assert!(
            flagged.image.height() > clinical.image.height(),
            "the warning has a line of its own"
        );
    }

    #[test]
    fn the_overlay_sits_in_the_roi_with_its_box_around_it_below_the_banner() {
        let burned = burn_in(&picture(), &result(false));
        let banner = burned.image.height() - 400;
        assert_eq!(burned.roi, Roi::new(100, 80 + banner, 120, 90));
        assert_eq!(
            count(&burned.image, [10, 200, 30]),
            120 * 90,
            "overlay intact"
        );
        let corner = burned.image.get_pixel(99, 80 + banner - 1);
        assert_eq!(corner.0, ROI_BOX, "box just outside the ROI");
        let pane = burned.image.get_pixel(300, 300 + banner);
        assert_eq!(pane.0, [90, 90, 90], "the pane in gray below the banner");
    }
}
