//! A captured frame as it leaves its source, and the conversion of a region of it to the 8-bit
//! gray the rest of the pipeline works in.
//!
//! Conversion goes straight from the source's pixel format to the gray of the region that is
//! needed (the CEUS pane, the B-mode pane), never through a full-frame RGB image:
//! - YUV formats (YUYV, UYVY, NV12) already carry luma: it is read directly, chroma is never
//!   touched. Capture cards deliver HDMI/SDI video in limited ("studio") range, Y' in 16..235,
//!   unless told otherwise; limited range is expanded to 0..255 so that gray levels mean what
//!   they meant in the scanner's RGB output. Luma is BT.601 or BT.709 depending on the source;
//!   the model's training images were made with Pillow's `convert("L")` (BT.601 weights on
//!   RGB). For gray pixels (all of B-mode, gray CEUS maps) both are the same value; for
//!   saturated colours they differ (pure red: 76 in BT.601, 54 in BT.709), so a colour-mapped
//!   CEUS pane is best captured as RGB, or from a source known to use BT.601.
//! - RGB24/BGR24: Pillow's `convert("L")`, exactly.
//! - GREY: the value itself.
//! - MJPEG: decoded by `zune-jpeg` to RGB, then Pillow's luma. (Reading the JPEG's own luma
//!   plane would be faster, but where a colour map's dark end leaves the RGB gamut, e.g. a
//!   dark gold CEUS pixel, the decoded RGB clips and Pillow's luma of it, which is what a
//!   training pipeline computed from the same JPEG, differs from the plane by a few levels.)
//!   `gray_regions` with `Detail::BlockMeans` does read the luma plane, at 1/8 scale, for the
//!   per-frame checks that need no more (`capture::mjpeg`).

use image::GrayImage;
use std::time::Duration;

use super::mjpeg::MjpegError;
use crate::pixels::pillow_luma;
use crate::roi::{Roi, RoiError};

/// Pixel formats a source can deliver (V4L2 FourCC names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum PixelFormat {
    Yuyv,
    Uyvy,
    Nv12,
    Mjpeg,
    Rgb24,
    Bgr24,
    Grey,
}

impl PixelFormat {
    pub const ALL: [PixelFormat; 7] = [
        PixelFormat::Yuyv,
        PixelFormat::Uyvy,
        PixelFormat::Nv12,
        PixelFormat::Mjpeg,
        PixelFormat::Rgb24,
        PixelFormat::Bgr24,
        PixelFormat::Grey,
    ];

    pub fn fourcc(self) -> &'static str {
        match self {
            PixelFormat::Yuyv => "YUYV",
            PixelFormat::Uyvy => "UYVY",
            PixelFormat::Nv12 => "NV12",
            PixelFormat::Mjpeg => "MJPG",
            PixelFormat::Rgb24 => "RGB3",
            PixelFormat::Bgr24 => "BGR3",
            PixelFormat::Grey => "GREY",
        }
    }

    /// Bytes of the first plane per pixel (None for compressed formats).
    pub fn bytes_per_pixel(self) -> Option<usize> {
        match self {
            PixelFormat::Yuyv | PixelFormat::Uyvy => Some(2),
            PixelFormat::Nv12 | PixelFormat::Grey => Some(1),
            PixelFormat::Rgb24 | PixelFormat::Bgr24 => Some(3),
            PixelFormat::Mjpeg => None,
        }
    }

    /// Bytes a whole frame needs with `stride` bytes per line of the first plane.
    pub fn frame_len(self, stride: usize, height: u32) -> Option<usize> {
        let h = height as usize;
        match self {
            // NV12: a full-resolution Y plane, then interleaved CbCr at half height.
            PixelFormat::Nv12 => Some(stride * h + stride * h.div_ceil(2)),
            PixelFormat::Mjpeg => None,
            _ => Some(stride * h),
        }
    }
}

impl std::fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.fourcc())
    }
}

impl std::str::FromStr for PixelFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let upper = s.to_ascii_uppercase();
        PixelFormat::ALL
            .into_iter()
            .find(|f| f.fourcc() == upper || format!("{f:?}").to_ascii_uppercase() == upper)
            .ok_or_else(|| {
                format!("unknown pixel format '{s}' (expected YUYV, UYVY, NV12, MJPEG, RGB24, BGR24 or GREY)")
            })
    }
}

/// How a YUV source encodes luma.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LumaRange {
    /// Y' in 16..235 (CEA-861 video over HDMI/SDI): expanded to 0..255.
    #[default]
    Limited,
    /// Y' in 0..255.
    Full,
}

/// One frame from a source.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Counts frames as the source produced them; a gap means frames were lost upstream.
    pub sequence: u64,
    /// Capture time on a monotonic clock (the driver's buffer timestamp where there is one;
    /// the cine's frame time for replays), from the source's start.
    pub timestamp: Duration,
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
    /// Bytes per line of the first plane (0 for MJPEG).
    pub stride: usize,
    pub data: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{format} frame {width}x{height} with stride {stride}: {len} bytes, expected at least {expected}")]
    ShortBuffer {
        format: PixelFormat,
        width: u32,
        height: u32,
        stride: usize,
        len: usize,
        expected: usize,
    },
    #[error("{format} frame {width}x{height}: stride {stride} is shorter than a line")]
    BadStride {
        format: PixelFormat,
        width: u32,
        height: u32,
        stride: usize,
    },
    #[error(transparent)]
    Mjpeg(#[from] MjpegError),
    #[error(transparent)]
    Region(#[from] RoiError),
}

/// Limited-range luma expanded to full range: round((y - 16) * 255 / 219), clamped.
const fn limited_to_full() -> [u8; 256] {
    let mut lut = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let v = (i as i32 - 16) * 255 * 2 + 219; // 2x for rounding half up
        let v = if v < 0 { 0 } else { v / (219 * 2) };
        lut[i] = if v > 255 { 255 } else { v as u8 };
        i += 1;
    }
    lut
}

static LIMITED_TO_FULL: [u8; 256] = limited_to_full();

impl Frame {
    /// A decoded picture as a frame: gray as GREY, colour as RGB24.
    pub fn from_picture(
        picture: super::picture::Picture,
        sequence: u64,
        timestamp: Duration,
    ) -> Self {
        let (width, height) = (picture.width(), picture.height());
        let (format, stride, data) = match picture {
            super::picture::Picture::Gray(g) => (PixelFormat::Grey, width as usize, g.into_raw()),
            super::picture::Picture::Rgb(c) => {
                (PixelFormat::Rgb24, 3 * width as usize, c.into_raw())
            }
        };
        Frame {
            sequence,
            timestamp,
            width,
            height,
            format,
            stride,
            data,
        }
    }

    /// Checks that the buffer holds what the format, size and stride promise.
    pub fn validate(&self) -> Result<(), ConvertError> {
        let Some(bpp) = self.format.bytes_per_pixel() else {
            return Ok(()); // compressed: checked when decoded
        };
        if self.stride < self.width as usize * bpp {
            return Err(ConvertError::BadStride {
                format: self.format,
                width: self.width,
                height: self.height,
                stride: self.stride,
            });
        }
        // The last line need not be padded to the full stride.
        let expected = self.format.frame_len(self.stride, self.height).unwrap_or(0)
            - (self.stride - self.width as usize * bpp);
        if self.data.len() < expected {
            return Err(ConvertError::ShortBuffer {
                format: self.format,
                width: self.width,
                height: self.height,
                stride: self.stride,
                len: self.data.len(),
                expected,
            });
        }
        Ok(())
    }

    /// The 8-bit gray of `region` (see the module comment for each format).
    pub fn gray_region(&self, region: &Roi, range: LumaRange) -> Result<GrayImage, ConvertError> {
        region.check_within(self.width, self.height)?;
        self.validate()?;
        if self.format == PixelFormat::Mjpeg {
            let rgb = decode_jpeg_rgb(&self.data, self.width, self.height)?;
            return Ok(pillow_gray_of(&rgb, self.width, region));
        }
        let (x0, y0) = (region.x as usize, region.y as usize);
        let (w, h) = (region.width as usize, region.height as usize);
        let mut out = vec![0u8; w * h];
        let expand = |y: u8| match range {
            LumaRange::Limited => LIMITED_TO_FULL[y as usize],
            LumaRange::Full => y,
        };
        match self.format {
            PixelFormat::Yuyv | PixelFormat::Uyvy => {
                // Luma is every other byte: even bytes for YUYV, odd for UYVY.
                let offset = if self.format == PixelFormat::Yuyv {
                    0
                } else {
                    1
                };
                for (row, dst) in out.chunks_exact_mut(w).enumerate() {
                    let line = &self.data[(y0 + row) * self.stride..];
                    let src = &line[2 * x0 + offset..2 * (x0 + w)];
                    for (d, s) in dst.iter_mut().zip(src.iter().step_by(2)) {
                        *d = expand(*s);
                    }
                }
            }
            PixelFormat::Nv12 | PixelFormat::Grey => {
                let is_yuv = self.format == PixelFormat::Nv12;
                for (row, dst) in out.chunks_exact_mut(w).enumerate() {
                    let start = (y0 + row) * self.stride + x0;
                    let src = &self.data[start..start + w];
                    if is_yuv && range == LumaRange::Limited {
                        for (d, s) in dst.iter_mut().zip(src) {
                            *d = LIMITED_TO_FULL[*s as usize];
                        }
                    } else {
                        dst.copy_from_slice(src);
                    }
                }
            }
            PixelFormat::Rgb24 | PixelFormat::Bgr24 => {
                let (r, b) = if self.format == PixelFormat::Rgb24 {
                    (0, 2)
                } else {
                    (2, 0)
                };
                for (row, dst) in out.chunks_exact_mut(w).enumerate() {
                    let start = (y0 + row) * self.stride + 3 * x0;
                    let src = &self.data[start..start + 3 * w];
                    for (d, px) in dst.iter_mut().zip(src.chunks_exact(3)) {
                        *d = pillow_luma(px[r], px[1], px[b]);
                    }
                }
            }
            PixelFormat::Mjpeg => {} // decoded above
        }
        GrayImage::from_raw(region.width, region.height, out).ok_or_else(|| {
            ConvertError::Mjpeg(MjpegError::Decode("internal: gray buffer size".into()))
        })
    }

    /// The gray of several regions of one frame, decoding an MJPEG frame once. With
    /// `Detail::BlockMeans` an MJPEG frame is decoded at 1/8 scale and each region comes at
    /// full size but with every pixel its 8x8 block's mean (`capture::mjpeg`); other formats,
    /// whose gray costs little, always come in full.
    pub fn gray_regions(
        &self,
        regions: &[Roi],
        range: LumaRange,
        detail: Detail,
    ) -> Result<Vec<GrayImage>, ConvertError> {
        if self.format != PixelFormat::Mjpeg {
            return regions.iter().map(|r| self.gray_region(r, range)).collect();
        }
        for region in regions {
            region.check_within(self.width, self.height)?;
        }
        Ok(match detail {
            Detail::Full => {
                let rgb = decode_jpeg_rgb(&self.data, self.width, self.height)?;
                regions
                    .iter()
                    .map(|r| pillow_gray_of(&rgb, self.width, r))
                    .collect()
            }
            Detail::BlockMeans => {
                let blocks = super::mjpeg::block_means(&self.data, self.width, self.height)?;
                regions
                    .iter()
                    .map(|r| super::mjpeg::region_from_blocks(&blocks, r))
                    .collect()
            }
        })
    }
}

/// How much of an MJPEG frame's detail a consumer needs (see `Frame::gray_regions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Every pixel, as `gray_region` gives it.
    Full,
    /// 8x8 block means: enough for the mean, black and frozen frames and probe motion.
    BlockMeans,
}

/// Pillow's luma of `region` of a decoded RGB picture `width` pixels wide (checked region).
fn pillow_gray_of(rgb: &[u8], width: u32, region: &Roi) -> GrayImage {
    let line = 3 * width as usize;
    let (x0, y0, w) = (region.x as usize, region.y as usize, region.width as usize);
    let mut out = vec![0u8; w * region.height as usize];
    for (row, dst) in out.chunks_exact_mut(w.max(1)).enumerate() {
        let start = (y0 + row) * line + 3 * x0;
        let src = &rgb[start..start + 3 * w];
        for (d, px) in dst.iter_mut().zip(src.chunks_exact(3)) {
            *d = pillow_luma(px[0], px[1], px[2]);
        }
    }
    GrayImage::from_raw(region.width, region.height, out).unwrap_or_default()
}

/// Decodes a JPEG to interleaved RGB, checking its size.
fn decode_jpeg_rgb(data: &[u8], width: u32, height: u32) -> Result<Vec<u8>, ConvertError> {
    use zune_core::bytestream::ZCursor;
    use zune_core::colorspace::ColorSpace;
    use zune_core::options::DecoderOptions;
    let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(data), options);
    let pixels = decoder
        .decode()
        .map_err(|e| ConvertError::Mjpeg(MjpegError::Decode(e.to_string())))?;
    let info = decoder
        .info()
        .ok_or_else(|| ConvertError::Mjpeg(MjpegError::Decode("no image header".into())))?;
    let (got_w, got_h) = (info.width as u32, info.height as u32);
    if (got_w, got_h) != (width, height) || pixels.len() < 3 * (width * height) as usize {
        return Err(ConvertError::Mjpeg(MjpegError::Size {
            width,
            height,
            got_w,
            got_h,
        }));
    }
    Ok(pixels)
}
