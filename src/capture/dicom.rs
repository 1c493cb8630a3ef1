//! DICOM files through the dicom-rs crates: single- and multi-frame ultrasound in RGB,
//! YBR_FULL, YBR_FULL_422, PALETTE COLOR and MONOCHROME1/2; uncompressed, RLE Lossless and
//! JPEG baseline (the codecs `dicom-pixeldata` builds in pure Rust).
//!
//! Only the requested frame is decoded, so a long cine costs one frame's work.

use dicom_dictionary_std::tags;
use dicom_object::{open_file, DefaultDicomObject};
use dicom_pixeldata::{ConvertOptions, DecodedPixelData, PhotometricInterpretation, PixelDecoder};
use image::{GrayImage, RgbImage};
use std::path::{Path, PathBuf};

use super::input_error::InputError;
use super::picture::{LoadedFrame, Picture};

fn transfer_syntax_name(uid: &str) -> String {
    use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};
    let uid = uid.trim_end_matches('\0');
    TransferSyntaxRegistry
        .get(uid)
        .map(|ts| ts.name().to_string())
        .unwrap_or_else(|| uid.to_string())
}

fn int_attr(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<i64> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_int::<i64>().ok())
}

/// A parsed DICOM file whose frames can be decoded one at a time.
pub struct DicomFile {
    path: PathBuf,
    obj: DefaultDicomObject,
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
        let obj = open_file(path).map_err(|e| fail(format!("cannot parse the file: {e}")))?;
        let transfer_syntax = transfer_syntax_name(obj.meta().transfer_syntax());
        let modality = string_attr(&obj, tags::MODALITY).unwrap_or_else(|| "?".into());
        if obj.element_opt(tags::PIXEL_DATA).ok().flatten().is_none() {
            return Err(fail("the file has no Pixel Data".into()));
        }
        let frames = int_attr(&obj, tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1) as u32;
        Ok(Self {
            path: path.to_path_buf(),
            obj,
            frames,
            modality,
            transfer_syntax,
        })
    }

    pub fn frames(&self) -> u32 {
        self.frames
    }

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
        if let Some(picture) = native_ybr_frame(obj, frame).map_err(|e| self.fail(e))? {
            return Ok(LoadedFrame {
                picture,
                frame,
                frames_in_file: frames,
                format: format!("DICOM {modality}, {}, {ts}", photometric_name(obj)),
            });
        }
        let decoded = obj
            .decode_pixel_data_frame(frame)
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
        let lut = PaletteLut::read(&self.obj).map_err(|e| self.fail(e))?;
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
fn native_ybr_frame(obj: &DefaultDicomObject, frame: u32) -> Result<Option<Picture>, String> {
    let pi = photometric_name(obj);
    if pi != "YBR_FULL" && pi != "YBR_FULL_422" {
        return Ok(None);
    }
    let pixel_data = obj
        .element(tags::PIXEL_DATA)
        .map_err(|e| format!("Pixel Data: {e}"))?;
    if matches!(
        pixel_data.value(),
        dicom_core::value::Value::PixelSequence(_)
    ) {
        return Ok(None);
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
    let bytes = pixel_data
        .to_bytes()
        .map_err(|e| format!("Pixel Data: {e}"))?;
    let pixels = rows * cols;
    // YBR_FULL_422 stores Y1 Y2 Cb Cr for each horizontal pair of pixels: 2 bytes a pixel.
    let frame_len = if pi == "YBR_FULL_422" {
        pixels * 2
    } else {
        pixels * 3
    };
    let start = frame as usize * frame_len;
    let data = bytes.get(start..start + frame_len).ok_or_else(|| {
        format!(
            "Pixel Data holds {} bytes, frame {frame} needs bytes {start}..{}: the file is truncated",
            bytes.len(),
            start + frame_len
        )
    })?;
    let mut rgb = RgbImage::new(cols as u32, rows as u32);
    let out = rgb.as_mut();
    if pi == "YBR_FULL_422" {
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
    Ok(Some(Picture::Rgb(rgb)))
}

/// A PALETTE COLOR lookup table, scaled to 8 bits per channel.
struct PaletteLut {
    first_mapped: i64,
    channels: [Vec<u8>; 3],
}

impl PaletteLut {
    fn read(obj: &DefaultDicomObject) -> Result<Self, String> {
        let descriptors = [
            tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
        ];
        let datas = [
            tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        ];
        let names = ["red", "green", "blue"];
        let mut first_mapped = 0;
        let mut channels: [Vec<u8>; 3] = Default::default();
        for i in 0..3 {
            let desc = obj
                .element(descriptors[i])
                .map_err(|_| {
                    format!(
                        "PALETTE COLOR without a {} palette descriptor (segmented palettes are not supported)",
                        names[i]
                    )
                })?
                .to_multi_int::<i64>()
                .map_err(|e| format!("{} palette descriptor: {e}", names[i]))?;
            if desc.len() != 3 {
                return Err(format!(
                    "{} palette descriptor has {} values, expected 3",
                    names[i],
                    desc.len()
                ));
            }
            // 0 entries means 2^16.
            let entries = if desc[0] == 0 {
                65536
            } else {
                desc[0] as usize
            };
            let bits = desc[2];
            first_mapped = desc[1];
            let bytes = obj
                .element(datas[i])
                .map_err(|_| format!("PALETTE COLOR without {} palette data", names[i]))?
                .to_bytes()
                .map_err(|e| format!("{} palette data: {e}", names[i]))?
                .to_vec();
            let table: Vec<u8> = if bytes.len() == entries {
                bytes // 8-bit entries packed one per byte
            } else if bytes.len() >= entries * 2 {
                bytes
                    .chunks_exact(2)
                    .take(entries)
                    .map(|b| {
                        let v = u16::from_le_bytes([b[0], b[1]]);
                        // 16-bit entries keep their top byte; 8-bit entries are already 0..255.
                        if bits > 8 {
                            (v >> 8) as u8
                        } else {
                            v as u8
                        }
                    })
                    .collect()
            } else {
                return Err(format!(
                    "{} palette data has {} bytes for {entries} entries",
                    names[i],
                    bytes.len()
                ));
            };
            channels[i] = table;
        }
        Ok(Self {
            first_mapped,
            channels,
        })
    }

    fn colour(&self, index: u16) -> [u8; 3] {
        let pick = |t: &Vec<u8>| {
            let i = (index as i64 - self.first_mapped).clamp(0, t.len() as i64 - 1) as usize;
            t[i]
        };
        [
            pick(&self.channels[0]),
            pick(&self.channels[1]),
            pick(&self.channels[2]),
        ]
    }
}
