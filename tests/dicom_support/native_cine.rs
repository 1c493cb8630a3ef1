//! Writes an uncompressed (Explicit VR Little Endian) RGB ultrasound cine, frame by frame, so
//! that a cine larger than memory can be written: the header through dicom-object, then the
//! Pixel Data element's header and each frame's bytes appended (Pixel Data is the data set's
//! last element). Shared by tests/dicom_cine_frames.rs and benches/dicom_cine.rs.

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use image::RgbImage;
use std::io::{BufWriter, Write};
use std::path::Path;

/// Writes `frames` frames of `width`x`height`, frame `i` being `frame(i)`, at `frame_time_ms`.
pub fn write_native_rgb_cine(
    path: &Path,
    width: u32,
    height: u32,
    frames: u32,
    frame_time_ms: f64,
    mut frame: impl FnMut(u32) -> RgbImage,
) -> std::io::Result<()> {
    let mut obj = InMemDicomObject::new_empty();
    let mut put = |tag, vr, value: PrimitiveValue| obj.put(DataElement::new(tag, vr, value));
    let sop_class = uids::ULTRASOUND_MULTI_FRAME_IMAGE_STORAGE;
    let sop_instance = "2.25.1234567890123456789";
    put(tags::SOP_CLASS_UID, VR::UI, sop_class.into());
    put(tags::SOP_INSTANCE_UID, VR::UI, sop_instance.into());
    put(tags::MODALITY, VR::CS, "US".into());
    put(tags::FRAME_TIME, VR::DS, format!("{frame_time_ms}").into());
    put(tags::NUMBER_OF_FRAMES, VR::IS, format!("{frames}").into());
    put(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(3u16));
    put(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "RGB".into());
    put(
        tags::PLANAR_CONFIGURATION,
        VR::US,
        PrimitiveValue::from(0u16),
    );
    put(tags::ROWS, VR::US, PrimitiveValue::from(height as u16));
    put(tags::COLUMNS, VR::US, PrimitiveValue::from(width as u16));
    put(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(8u16));
    put(tags::BITS_STORED, VR::US, PrimitiveValue::from(8u16));
    put(tags::HIGH_BIT, VR::US, PrimitiveValue::from(7u16));
    put(
        tags::PIXEL_REPRESENTATION,
        VR::US,
        PrimitiveValue::from(0u16),
    );
    let file = obj
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                .media_storage_sop_class_uid(sop_class)
                .media_storage_sop_instance_uid(sop_instance),
        )
        .map_err(std::io::Error::other)?;
    let mut out = BufWriter::new(std::fs::File::create(path)?);
    file.write_all(&mut out).map_err(std::io::Error::other)?;
    let frame_len = width as u64 * height as u64 * 3;
    let len = u32::try_from(frame_len * frames as u64)
        .map_err(|_| std::io::Error::other("Pixel Data over 4 GiB"))?;
    // (7FE0,0010) OB, 2 reserved bytes, 32-bit length; frames of 3 bytes a pixel, padded even.
    out.write_all(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0])?;
    out.write_all(&(len + len % 2).to_le_bytes())?;
    for i in 0..frames {
        let img = frame(i);
        assert_eq!(img.dimensions(), (width, height), "frame {i}");
        out.write_all(img.as_raw())?;
    }
    if len % 2 == 1 {
        out.write_all(&[0])?;
    }
    out.flush()
}
