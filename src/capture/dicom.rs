//! DICOM files through the dicom-rs crates: single- and multi-frame ultrasound in RGB,
//! YBR_FULL, YBR_FULL_422, PALETTE COLOR (plain or segmented tables) and MONOCHROME1/2;
//! uncompressed, RLE Lossless, JPEG and JPEG 2000 (the codecs `dicom-pixeldata` builds in
//! pure Rust; JPEG 2000 through `openjp2`, a Rust port of OpenJPEG).
//!
//! Only the requested frame is read and decoded, so a long cine costs one frame's work per
//! frame: in the little endian syntaxes the header is parsed once and each frame's bytes (the
//! native frame, or its fragments) are read from the file when it is asked for
//! (`pixel_index`); other files are read whole, as dicom-rs reads them.

mod palette;
mod pixel_index;

use dicom_core::value::PixelFragmentSequence;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{open_file, DefaultDicomObject, OpenFileOptions};
use dicom_pixeldata::{ConvertOptions, DecodedPixelData, PhotometricInterpretation, PixelDecoder};
use image::{GrayImage, RgbImage};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use palette::PaletteLut;
use pixel_index::{locate_pixel_data, read_at, PixelLayout};

use super::input_error::InputError;
use super::picture::{LoadedFrame, Picture};

/// The transfer syntax's name, or its UID when dicom-rs does not know it.
fn transfer_syntax_name(uid: &str) -> String {
    let uid = uid.trim_end_matches('\0');
    registered_name(uid).unwrap_or_else(|| uid.to_string())
}

fn registered_name(uid: &str) -> Option<String> {
    use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};
    TransferSyntaxRegistry
        .get(uid)
        .map(|ts| ts.name().to_string())
}

/// Retired from the standard (so deprecated in dicom-rs's dictionary), still in archives.
const EXPLICIT_VR_BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";

/// The transfer syntaxes whose pixel data is decoded here, each checked against pydicom on
/// files in `tests/data/dicom` (`tests/dicom_decode.rs`); the README lists the same.
const SUPPORTED_TRANSFER_SYNTAXES: [(&str, &str); 11] = [
    (uids::IMPLICIT_VR_LITTLE_ENDIAN, "Implicit VR Little Endian"),
    (uids::EXPLICIT_VR_LITTLE_ENDIAN, "Explicit VR Little Endian"),
    (EXPLICIT_VR_BIG_ENDIAN, "Explicit VR Big Endian"),
    (
        uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
        "Deflated Explicit VR Little Endian",
    ),
    (uids::RLE_LOSSLESS, "RLE Lossless"),
    (uids::JPEG_BASELINE8_BIT, "JPEG Baseline"),
    (uids::JPEG_EXTENDED12_BIT, "JPEG Extended"),
    (uids::JPEG_LOSSLESS, "JPEG Lossless"),
    (uids::JPEG_LOSSLESS_SV1, "JPEG Lossless SV1"),
    (uids::JPEG2000_LOSSLESS, "JPEG 2000 Lossless"),
    (uids::JPEG2000, "JPEG 2000"),
];

/// Refuses a transfer syntax outside [`SUPPORTED_TRANSFER_SYNTAXES`], naming it and listing
/// those that are decoded.
fn check_transfer_syntax(path: &Path, uid: &str) -> Result<(), InputError> {
    let uid = uid.trim_end_matches('\0');
    if SUPPORTED_TRANSFER_SYNTAXES.iter().any(|(u, _)| *u == uid) {
        return Ok(());
    }
    let supported: Vec<String> = SUPPORTED_TRANSFER_SYNTAXES
        .iter()
        .map(|(uid, name)| format!("{name} ({uid})"))
        .collect();
    Err(InputError::Unsupported {
        path: path.to_path_buf(),
        what: format!(
            "the pixel data's transfer syntax {uid} ({})",
            registered_name(uid).unwrap_or_else(|| "a UID unknown to dicom-rs".into())
        ),
        reason: format!("ceusd decodes {}", supported.join(", ")),
    })
}

fn int_attr(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<i64> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_int::<i64>().ok())
}

/// Where a file's frames come from.
enum Pixels {
    /// The whole file is in `DicomFile::obj`, Pixel Data included.
    InObject,
    /// Native pixel data, `len` bytes from `start`, read a frame at a time. `scratch` is the
    /// header as a one-frame object whose Pixel Data is replaced by each frame read.
    Native {
        file: File,
        start: u64,
        len: u64,
        scratch: Mutex<DefaultDicomObject>,
    },
    /// Encapsulated pixel data, each frame's fragments (start, length) read when the frame
    /// is. `scratch` is the header with as many fragments as frames, all empty but the one
    /// being decoded, which holds that frame's fragments joined: the codec is given frame k
    /// of an object that has the file's frame count and attributes, so it decodes exactly
    /// as from the whole file, without every other frame's bytes.
    Fragments {
        file: File,
        frame_fragments: Vec<Vec<(u64, u32)>>,
        scratch: Mutex<DefaultDicomObject>,
    },
}

/// A parsed DICOM file whose frames can be decoded one at a time.
pub struct DicomFile {
    path: PathBuf,
    /// The data set: without Pixel Data unless `pixels` is `InObject`.
    obj: DefaultDicomObject,
    pixels: Pixels,
    frames: u32,
    modality: String,
    transfer_syntax: String,
}

impl DicomFile {
    pub fn open(path: &Path) -> Result<Self, InputError> {
        let fail = |reason: String| InputError::Dicom {
            path: path.to_path_buf(),
            reason,
        };
        let (obj, pixels) = match open_by_frame(path) {
            Some(opened) => opened,
            None => (
                open_file(path).map_err(|e| fail(format!("cannot parse the file: {e}")))?,
                Pixels::InObject,
            ),
        };
        check_transfer_syntax(path, obj.meta().transfer_syntax())?;
        let transfer_syntax = transfer_syntax_name(obj.meta().transfer_syntax());
        let modality = string_attr(&obj, tags::MODALITY).unwrap_or_else(|| "?".into());
        if matches!(pixels, Pixels::InObject)
            && obj.element_opt(tags::PIXEL_DATA).ok().flatten().is_none()
        {
            return Err(fail("the file has no Pixel Data".into()));
        }
        let frames = frame_count(&obj);
        Ok(Self {
            path: path.to_path_buf(),
            obj,
            pixels,
            frames,
            modality,
            transfer_syntax,
        })
    }

    /// Whether frames are read from the file one at a time (rather than from the whole file
    /// held in memory).
    pub fn reads_by_frame(&self) -> bool {
        !matches!(self.pixels, Pixels::InObject)
    }

    pub fn frames(&self) -> u32 {
        self.frames
    }

    /// The data set's attributes. Pixel Data is among them only for files read whole
    /// ([`DicomFile::reads_by_frame`] false).
    pub fn object(&self) -> &DefaultDicomObject {
        &self.obj
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Decodes frame `frame` (from 0).
    pub fn frame(&self, frame: u32) -> Result<LoadedFrame, InputError> {
        let (obj, frames, modality, ts) = (
            &self.obj,
            self.frames,
            &self.modality,
            &self.transfer_syntax,
        );
        if frame >= frames {
            return Err(InputError::NoSuchFrame {
                path: self.path.clone(),
                frame,
                frames,
            });
        }
        if let Some(picture) = self.native_ybr(frame).map_err(|e| self.fail(e))? {
            return Ok(LoadedFrame {
                picture,
                frame,
                frames_in_file: frames,
                format: format!("DICOM {modality}, {}, {ts}", photometric_name(obj)),
            });
        }
        // The object the codec reads, and the frame's index in it.
        let (guard, index) = self.frame_object(frame)?;
        let source: &DefaultDicomObject = match &guard {
            Some(scratch) => scratch,
            None => obj,
        };
        let decoded = source
            .decode_pixel_data_frame(index)
            .map_err(|e| self.fail(format!("cannot decode frame {frame} ({ts}): {e}")))?;
        // The decoded photometric interpretation: codecs that convert colour (JPEG) report RGB.
        let pi = decoded.photometric_interpretation().clone();
        let picture = self.picture_of(&decoded, &pi, frame)?;
        Ok(LoadedFrame {
            picture,
            frame,
            frames_in_file: frames,
            format: format!("DICOM {modality}, {pi}, {ts}"),
        })
    }

    /// The object holding frame `frame`'s pixel data for dicom-pixeldata, and the frame's
    /// index in it: the file's own object, or the scratch object with the frame read in.
    fn frame_object(
        &self,
        frame: u32,
    ) -> Result<(Option<MutexGuard<'_, DefaultDicomObject>>, u32), InputError> {
        let lock = |scratch| lock_scratch(scratch, self);
        match &self.pixels {
            Pixels::InObject => Ok((None, frame)),
            Pixels::Native { scratch, .. } => {
                let bytes = self.native_frame_bytes(frame, native_frame_len(&self.obj))?;
                let mut scratch = lock(scratch)?;
                scratch.put(DataElement::new(
                    tags::PIXEL_DATA,
                    VR::OB,
                    PrimitiveValue::U8(bytes.into()),
                ));
                Ok((Some(scratch), 0))
            }
            Pixels::Fragments {
                file,
                frame_fragments,
                scratch,
            } => {
                let fragments = frame_fragments.get(frame as usize).ok_or_else(|| {
                    self.fail(format!("frame {frame} has no Pixel Data fragment"))
                })?;
                let bytes = read_fragments(file, fragments)
                    .map_err(|e| self.fail(format!("frame {frame}: reading its fragments: {e}")))?;
                let mut scratch = lock(scratch)?;
                let mut bytes = Some(bytes);
                scratch.update_value(tags::PIXEL_DATA, |value| {
                    if let Some(slots) = value.fragments_mut() {
                        for slot in slots.iter_mut().filter(|s| !s.is_empty()) {
                            *slot = Vec::new();
                        }
                        if let (Some(slot), Some(bytes)) =
                            (slots.get_mut(frame as usize), bytes.take())
                        {
                            *slot = bytes;
                        }
                    }
                });
                Ok((Some(scratch), frame))
            }
        }
    }

    /// `len` bytes of native frame `frame`, read from the file; an error naming the Pixel
    /// Data's size when the frame lies past its end.
    fn native_frame_bytes(&self, frame: u32, frame_len: usize) -> Result<Vec<u8>, InputError> {
        let Pixels::Native {
            file, start, len, ..
        } = &self.pixels
        else {
            return Err(self.fail("internal: native frame of encapsulated pixel data".into()));
        };
        let at = frame as u64 * frame_len as u64;
        if at + frame_len as u64 > *len {
            return Err(self.fail(format!(
                "Pixel Data holds {len} bytes, frame {frame} needs bytes {at}..{}: the file is truncated",
                at + frame_len as u64
            )));
        }
        let mut bytes = vec![0u8; frame_len];
        read_at(file, start + at, &mut bytes)
            .map_err(|e| self.fail(format!("frame {frame}: reading its pixels: {e}")))?;
        Ok(bytes)
    }

    /// Native YBR_FULL/YBR_FULL_422 frame `frame` converted here (`None`: not such a frame).
    fn native_ybr(&self, frame: u32) -> Result<Option<Picture>, String> {
        let Some(layout) = native_ybr_layout(&self.obj, &self.pixels)? else {
            return Ok(None);
        };
        match &self.pixels {
            Pixels::InObject => {
                let pixel_data = self
                    .obj
                    .element(tags::PIXEL_DATA)
                    .map_err(|e| format!("Pixel Data: {e}"))?;
                let bytes = pixel_data
                    .to_bytes()
                    .map_err(|e| format!("Pixel Data: {e}"))?;
                let start = frame as usize * layout.frame_len;
                let data = bytes.get(start..start + layout.frame_len).ok_or_else(|| {
                    format!(
                        "Pixel Data holds {} bytes, frame {frame} needs bytes {start}..{}: the file is truncated",
                        bytes.len(),
                        start + layout.frame_len
                    )
                })?;
                layout.to_rgb(data).map(Some)
            }
            Pixels::Native { .. } => {
                let data =
                    self.native_frame_bytes(frame, layout.frame_len)
                        .map_err(|e| match e {
                            InputError::Dicom { reason, .. } => reason,
                            other => other.to_string(),
                        })?;
                layout.to_rgb(&data).map(Some)
            }
            Pixels::Fragments { .. } => Ok(None),
        }
    }

    /// Frame `frame`, decoded by dicom-pixeldata, as a picture in its photometric
    /// interpretation `pi`.
    fn picture_of(
        &self,
        decoded: &DecodedPixelData,
        pi: &PhotometricInterpretation,
        frame: u32,
    ) -> Result<Picture, InputError> {
        match (pi, decoded.samples_per_pixel()) {
            (
                PhotometricInterpretation::Rgb
                | PhotometricInterpretation::YbrFull
                | PhotometricInterpretation::YbrFull422,
                3,
            ) => {
                let img = decoded
                    .to_dynamic_image_with_options(0, &ConvertOptions::new().force_8bit())
                    .map_err(|e| self.fail(format!("frame {frame}: {e}")))?;
                Ok(Picture::Rgb(img.to_rgb8()))
            }
            (PhotometricInterpretation::PaletteColor, 1) => self.palette_picture(decoded, frame),
            (
                PhotometricInterpretation::Monochrome1 | PhotometricInterpretation::Monochrome2,
                1,
            ) => self.gray_picture(decoded, pi, frame),
            (other, spp) => Err(self.unsupported(
                format!("photometric interpretation {other} with {spp} sample(s) per pixel"),
                "expected RGB, YBR_FULL, YBR_FULL_422, PALETTE COLOR or MONOCHROME1/2",
            )),
        }
    }

    /// A PALETTE COLOR frame through the file's lookup tables.
    fn palette_picture(
        &self,
        decoded: &DecodedPixelData,
        frame: u32,
    ) -> Result<Picture, InputError> {
        let data = decoded
            .frame_data(0)
            .map_err(|e| self.fail(format!("frame {frame}: {e}")))?;
        let indices: Vec<u16> = match decoded.bits_allocated() {
            8 => data.iter().map(|v| *v as u16).collect(),
            16 => data
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .collect(),
            other => {
                return Err(self.unsupported(
                    format!("PALETTE COLOR with {other} bits allocated"),
                    "expected 8 or 16",
                ))
            }
        };
        let big_endian =
            self.obj.meta().transfer_syntax().trim_end_matches('\0') == EXPLICIT_VR_BIG_ENDIAN;
        let lut = PaletteLut::read(&self.obj, big_endian).map_err(|e| self.fail(e))?;
        let mut rgb = RgbImage::new(decoded.columns(), decoded.rows());
        for (px, idx) in rgb.pixels_mut().zip(indices) {
            px.0 = lut.colour(idx);
        }
        Ok(Picture::Rgb(rgb))
    }

    /// A MONOCHROME1/2 frame in 8-bit gray (MONOCHROME1 inverted).
    fn gray_picture(
        &self,
        decoded: &DecodedPixelData,
        pi: &PhotometricInterpretation,
        frame: u32,
    ) -> Result<Picture, InputError> {
        if decoded.bits_allocated() == 8 {
            // 8-bit ultrasound gray is used as stored (no windowing), as exported images are.
            let data = decoded
                .frame_data(0)
                .map_err(|e| self.fail(format!("frame {frame}: {e}")))?;
            let (rows, cols) = (decoded.rows(), decoded.columns());
            let invert = matches!(pi, PhotometricInterpretation::Monochrome1);
            let pixels: Vec<u8> = data
                .iter()
                .take((rows * cols) as usize)
                .map(|v| if invert { 255 - v } else { *v })
                .collect();
            Ok(Picture::Gray(
                GrayImage::from_raw(cols, rows, pixels)
                    .ok_or_else(|| self.fail(format!("frame {frame}: short pixel data")))?,
            ))
        } else {
            // Deeper gray goes through the file's modality and VOI LUTs to 8 bits.
            let img = decoded
                .to_dynamic_image_with_options(0, &ConvertOptions::new().force_8bit())
                .map_err(|e| self.fail(format!("frame {frame}: {e}")))?;
            Ok(Picture::Gray(img.to_luma8()))
        }
    }

    fn fail(&self, reason: String) -> InputError {
        InputError::Dicom {
            path: self.path.clone(),
            reason,
        }
    }

    fn unsupported(&self, what: String, reason: &str) -> InputError {
        InputError::Unsupported {
            path: self.path.clone(),
            what,
            reason: reason.to_string(),
        }
    }
}

/// Loads frame `frame` (from 0) of a DICOM file.
pub fn load_frame(path: &Path, frame: u32) -> Result<LoadedFrame, InputError> {
    DicomFile::open(path)?.frame(frame)
}

fn string_attr(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<String> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok().map(|s| s.trim().to_string()))
}

fn photometric_name(obj: &DefaultDicomObject) -> String {
    obj.element_opt(tags::PHOTOMETRIC_INTERPRETATION)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok().map(|s| s.trim().to_string()))
        .unwrap_or_default()
}

/// YBR_FULL → RGB as DICOM PS3.3 C.7.6.3.1.2 defines it (and pydicom computes it).
#[inline]
fn ybr_full_to_rgb(y: u8, cb: u8, cr: u8) -> [u8; 3] {
    let (y, cb, cr) = (y as f32, cb as f32 - 128.0, cr as f32 - 128.0);
    let r = y + 1.402 * cr + 0.5;
    let g = y - (0.114 * 1.772 / 0.587) * cb - (0.299 * 1.402 / 0.587) * cr + 0.5;
    let b = y + 1.772 * cb + 0.5;
    let q = |v: f32| v.floor().clamp(0.0, 255.0) as u8;
    [q(r), q(g), q(b)]
}

/// Uncompressed YBR_FULL and YBR_FULL_422 frames, converted here rather than by
/// dicom-pixeldata: its YBR conversion (0.10) adds the Cb term of green where the standard
/// subtracts it, and it does not unpack the 2-bytes-per-pixel layout of native YBR_FULL_422.
/// Compressed YBR (JPEG) is converted by the codec and is not handled here.
struct YbrLayout {
    subsampled_422: bool,
    rows: usize,
    cols: usize,
    planar: bool,
    /// Bytes a frame.
    frame_len: usize,
}

/// The layout of a native YBR_FULL/YBR_FULL_422 frame; `None` when the pixel data is
/// something else.
fn native_ybr_layout(
    obj: &DefaultDicomObject,
    pixels: &Pixels,
) -> Result<Option<YbrLayout>, String> {
    let pi = photometric_name(obj);
    if pi != "YBR_FULL" && pi != "YBR_FULL_422" {
        return Ok(None);
    }
    match pixels {
        Pixels::Fragments { .. } => return Ok(None),
        Pixels::Native { .. } => {}
        Pixels::InObject => {
            let pixel_data = obj
                .element(tags::PIXEL_DATA)
                .map_err(|e| format!("Pixel Data: {e}"))?;
            if matches!(
                pixel_data.value(),
                dicom_core::value::Value::PixelSequence(_)
            ) {
                return Ok(None);
            }
        }
    }
    let rows = int_attr(obj, tags::ROWS).unwrap_or(0) as usize;
    let cols = int_attr(obj, tags::COLUMNS).unwrap_or(0) as usize;
    let bits = int_attr(obj, tags::BITS_ALLOCATED).unwrap_or(0);
    if rows == 0 || cols == 0 {
        return Err("Rows or Columns missing or zero".into());
    }
    if bits != 8 {
        return Err(format!(
            "{pi} with {bits} bits allocated is not supported (expected 8)"
        ));
    }
    let planar = int_attr(obj, tags::PLANAR_CONFIGURATION).unwrap_or(0) == 1;
    let subsampled_422 = pi == "YBR_FULL_422";
    let pixels = rows * cols;
    // YBR_FULL_422 stores Y1 Y2 Cb Cr for each horizontal pair of pixels: 2 bytes a pixel.
    let frame_len = if subsampled_422 {
        pixels * 2
    } else {
        pixels * 3
    };
    Ok(Some(YbrLayout {
        subsampled_422,
        rows,
        cols,
        planar,
        frame_len,
    }))
}

impl YbrLayout {
    /// One frame's bytes (`frame_len` of them) to RGB.
    fn to_rgb(&self, data: &[u8]) -> Result<Picture, String> {
        let (rows, cols, planar) = (self.rows, self.cols, self.planar);
        let pixels = rows * cols;
        let mut rgb = RgbImage::new(cols as u32, rows as u32);
        let out = rgb.as_mut();
        if self.subsampled_422 {
            if cols % 2 != 0 {
                return Err("YBR_FULL_422 with an odd number of columns".into());
            }
            for (pair, chunk) in data.chunks_exact(4).enumerate() {
                let (y1, y2, cb, cr) = (chunk[0], chunk[1], chunk[2], chunk[3]);
                out[pair * 6..pair * 6 + 3].copy_from_slice(&ybr_full_to_rgb(y1, cb, cr));
                out[pair * 6 + 3..pair * 6 + 6].copy_from_slice(&ybr_full_to_rgb(y2, cb, cr));
            }
        } else {
            for i in 0..pixels {
                let (y, cb, cr) = if planar {
                    (data[i], data[pixels + i], data[2 * pixels + i])
                } else {
                    (data[3 * i], data[3 * i + 1], data[3 * i + 2])
                };
                out[3 * i..3 * i + 3].copy_from_slice(&ybr_full_to_rgb(y, cb, cr));
            }
        }
        Ok(Picture::Rgb(rgb))
    }
}

fn lock_scratch<'a>(
    scratch: &'a Mutex<DefaultDicomObject>,
    file: &DicomFile,
) -> Result<MutexGuard<'a, DefaultDicomObject>, InputError> {
    scratch
        .lock()
        .map_err(|_| file.fail("an earlier frame's decoding panicked".into()))
}

fn frame_count(obj: &DefaultDicomObject) -> u32 {
    int_attr(obj, tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1) as u32
}

/// Bytes a native frame takes in Pixel Data: as dicom-pixeldata slices frames, or as
/// YBR_FULL_422 packs them (2 bytes a pixel, converted here).
fn native_frame_len(obj: &DefaultDicomObject) -> usize {
    let attr = |tag| int_attr(obj, tag).unwrap_or(0).max(0) as usize;
    let pixels = attr(tags::ROWS) * attr(tags::COLUMNS);
    let bits = attr(tags::BITS_ALLOCATED);
    if photometric_name(obj) == "YBR_FULL_422" && bits == 8 {
        return pixels * 2;
    }
    let samples = pixels * attr(tags::SAMPLES_PER_PIXEL);
    if bits == 1 {
        samples / 8
    } else {
        samples * bits.div_ceil(8)
    }
}

/// Whether decoding a native frame depends on nothing but its bytes, so that a one-frame
/// object decodes it as the whole file would: dicom-pixeldata picks rescale, window and VOI
/// LUT function values by frame index, which only matters when there are several.
fn native_decoding_is_per_frame_free(obj: &DefaultDicomObject) -> bool {
    let functional_groups = [
        tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
        tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
    ];
    if functional_groups
        .iter()
        .any(|t| obj.element_opt(*t).ok().flatten().is_some())
    {
        return false;
    }
    [
        tags::WINDOW_CENTER,
        tags::WINDOW_WIDTH,
        tags::RESCALE_INTERCEPT,
        tags::RESCALE_SLOPE,
        tags::VOILUT_FUNCTION,
    ]
    .iter()
    .all(|t| match obj.element_opt(*t).ok().flatten() {
        None => true,
        Some(e) => e.value().multiplicity() <= 1,
    })
}

/// Each frame's fragments: one each, all of them for a single frame, or as the basic offset
/// table groups them (its offsets count from the first fragment's item header, 8 bytes
/// before the fragment's data). `None` when the frames cannot be told apart.
fn fragments_by_frame(
    offset_table: &[u32],
    fragments: Vec<(u64, u32)>,
    frames: u32,
) -> Option<Vec<Vec<(u64, u32)>>> {
    let frames = frames as usize;
    if fragments.len() == frames {
        return Some(fragments.into_iter().map(|f| vec![f]).collect());
    }
    if fragments.is_empty() {
        return None;
    }
    if frames == 1 {
        return Some(vec![fragments]);
    }
    let ascending = offset_table.first() == Some(&0) && offset_table.is_sorted();
    if offset_table.len() != frames || !ascending {
        return None;
    }
    let first_item = fragments[0].0.checked_sub(8)?;
    let mut by_frame = vec![Vec::new(); frames];
    for fragment in fragments {
        let offset = fragment.0.checked_sub(8 + first_item)?;
        // The frame whose offset is the last one not past this fragment's.
        let frame = offset_table.partition_point(|&o| o as u64 <= offset) - 1;
        by_frame[frame].push(fragment);
    }
    by_frame.iter().all(|f| !f.is_empty()).then_some(by_frame)
}

/// The bytes of a frame's fragments, joined.
fn read_fragments(file: &File, fragments: &[(u64, u32)]) -> std::io::Result<Vec<u8>> {
    let total = fragments.iter().map(|&(_, len)| len as usize).sum();
    let mut bytes = vec![0u8; total];
    let mut at = 0;
    for &(start, len) in fragments {
        read_at(file, start, &mut bytes[at..at + len as usize])?;
        at += len as usize;
    }
    Ok(bytes)
}

/// Opens a file to be read a frame at a time: its header parsed, its Pixel Data located but
/// not read. `None` when the file is not one this covers (other transfer syntaxes, several
/// fragments a frame without an offset table, per-frame decoding parameters, anything
/// unexpected): it is then read
/// whole, and any error is reported from that.
fn open_by_frame(path: &Path) -> Option<(DefaultDicomObject, Pixels)> {
    let header = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .ok()?;
    let ts = header
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    let native = ts == uids::IMPLICIT_VR_LITTLE_ENDIAN || ts == uids::EXPLICIT_VR_LITTLE_ENDIAN;
    let per_fragment_codec = [
        uids::JPEG_BASELINE8_BIT,
        uids::JPEG_EXTENDED12_BIT,
        uids::JPEG_LOSSLESS,
        uids::JPEG_LOSSLESS_SV1,
        uids::JPEG2000_LOSSLESS,
        uids::JPEG2000,
        uids::RLE_LOSSLESS,
    ]
    .contains(&ts.as_str());
    if !native && !per_fragment_codec {
        return None;
    }
    let file = File::open(path).ok()?;
    let layout = locate_pixel_data(&file, ts != uids::IMPLICIT_VR_LITTLE_ENDIAN).ok()?;
    let frames = frame_count(&header);
    match layout {
        PixelLayout::Native { start, len } if native => {
            let frame_len = native_frame_len(&header) as u64;
            if frame_len == 0
                || frames as u64 * frame_len > len
                || !native_decoding_is_per_frame_free(&header)
            {
                return None;
            }
            let mut scratch = header.clone();
            scratch.put(DataElement::new(
                tags::NUMBER_OF_FRAMES,
                VR::IS,
                PrimitiveValue::from("1"),
            ));
            let pixels = Pixels::Native {
                file,
                start,
                len,
                scratch: Mutex::new(scratch),
            };
            Some((header, pixels))
        }
        PixelLayout::Encapsulated {
            offset_table,
            fragments,
        } if per_fragment_codec => {
            // With one fragment a frame the file's offset table is kept; otherwise it
            // describes fragments the scratch object does not have.
            let one_each = fragments.len() == frames as usize;
            let frame_fragments = fragments_by_frame(&offset_table, fragments, frames)?;
            let offset_table = if one_each { offset_table } else { Vec::new() };
            let mut scratch = header.clone();
            scratch.put(DataElement::new(
                tags::PIXEL_DATA,
                VR::OB,
                PixelFragmentSequence::new(offset_table, vec![Vec::new(); frames as usize]),
            ));
            let pixels = Pixels::Fragments {
                file,
                frame_fragments,
                scratch: Mutex::new(scratch),
            };
            Some((header, pixels))
        }
        _ => None,
    }
}
