//! MJPEG frames decoded for what each consumer needs. Most of an exam needs only the panes'
//! gray at the coarse level of the quality checks (8x8 block means, column and row profiles):
//! libjpeg-turbo (the `mozjpeg` crate's build of it) gives the luma plane at 1/8 scale in the
//! DCT domain, one value per 8x8 block, without the inverse transforms, chroma or colour
//! conversion of a full decode. What remains is the entropy decoding, which no JPEG decoder can
//! skip without restart markers; it grows with the frame's compressed size.

use image::GrayImage;

use crate::roi::Roi;

/// The scale of the reduced decode: 1/8, one value per 8x8 block.
pub const BLOCK: u32 = 8;

/// A frame that does not decode as the source announced it.
#[derive(Debug, thiserror::Error)]
pub enum MjpegError {
    #[error("MJPEG frame: {0}")]
    Decode(String),
    #[error("MJPEG frame decodes to {got_w}x{got_h}, the source announced {width}x{height}")]
    Size {
        width: u32,
        height: u32,
        got_w: u32,
        got_h: u32,
    },
}

/// The luma plane of a JPEG at 1/8 scale (each value is its 8x8 block's mean), checking the
/// picture's size against what the source announced.
pub fn block_means(data: &[u8], width: u32, height: u32) -> Result<GrayImage, MjpegError> {
    // libjpeg reports errors by unwinding out of its error handler (the `mozjpeg` crate's
    // documented contract): caught here, so a corrupt frame is an error, not a crash.
    let decoded = std::panic::catch_unwind(|| -> std::io::Result<(u32, u32, u32, Vec<u8>)> {
        let mut decompress = mozjpeg::Decompress::new_mem(data)?;
        let (full_w, full_h) = decompress.size();
        decompress.scale(1);
        let mut started = decompress.grayscale()?;
        let (w, h) = (started.width() as u32, started.height() as u32);
        let luma = started.read_scanlines::<u8>()?;
        started.finish()?;
        Ok((full_w as u32, full_h as u32, w.max(1) * h.max(1), luma))
    });
    let (got_w, got_h, expected, luma) = match decoded {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => return Err(MjpegError::Decode(e.to_string())),
        Err(panic) => return Err(MjpegError::Decode(panic_message(panic))),
    };
    if (got_w, got_h) != (width, height) || luma.len() != expected as usize {
        return Err(MjpegError::Size {
            width,
            height,
            got_w,
            got_h,
        });
    }
    GrayImage::from_raw(width.div_ceil(BLOCK), height.div_ceil(BLOCK), luma)
        .ok_or_else(|| MjpegError::Decode("internal: block means buffer size".into()))
}

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "libjpeg error".into())
}

/// `region` of the full-size frame at full size, each pixel its block's mean: the geometry the
/// quality checks expect (pane widths, shifts in pixels), at the detail of block means.
pub fn region_from_blocks(blocks: &GrayImage, region: &Roi) -> GrayImage {
    let (bw, bh) = (blocks.width() as usize, blocks.height() as usize);
    let raw = blocks.as_raw();
    let columns: Vec<usize> = (region.x..region.x + region.width)
        .map(|x| ((x / BLOCK) as usize).min(bw - 1))
        .collect();
    let width = region.width as usize;
    let mut out = Vec::with_capacity(width * region.height as usize);
    let mut previous_block_row = None;
    for y in region.y..region.y + region.height {
        let block_row = ((y / BLOCK) as usize).min(bh - 1);
        if previous_block_row == Some(block_row) {
            // The eight lines of a block row are the same: copy the one built.
            let start = out.len() - width;
            out.extend_from_within(start..);
            continue;
        }
        let row = &raw[block_row * bw..][..bw];
        out.extend(columns.iter().map(|&c| row[c]));
        previous_block_row = Some(block_row);
    }
    GrayImage::from_raw(region.width, region.height, out).unwrap_or_default()
}
