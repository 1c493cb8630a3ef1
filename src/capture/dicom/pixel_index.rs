//! Where a DICOM file's Pixel Data lies, so that a frame can be read from the file alone.
//!
//! dicom-object reads the whole Pixel Data into memory, and dicom-pixeldata's
//! `decode_pixel_data_frame` hands an encapsulated codec a copy of every fragment
//! (`raw_pixel_data` clones the whole fragment sequence) for each frame it decodes: replaying a
//! cine of N frames copied the file N times. This module walks the element headers of the
//! data set (little endian transfer syntaxes only), skipping values, and records the byte
//! ranges of the top-level Pixel Data: the whole value when it is native, each fragment when
//! it is encapsulated. Nothing here decodes pixels; codecs stay dicom-rs's.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek};

/// (7FE0,0010) Pixel Data.
const PIXEL_DATA: (u16, u16) = (0x7FE0, 0x0010);
const ITEM: (u16, u16) = (0xFFFE, 0xE000);
const ITEM_END: (u16, u16) = (0xFFFE, 0xE00D);
const SEQUENCE_END: (u16, u16) = (0xFFFE, 0xE0DD);
const UNDEFINED: u32 = 0xFFFF_FFFF;
/// Nested sequences deeper than this are refused (the file is then read whole instead).
const MAX_DEPTH: u32 = 64;

#[derive(Debug, thiserror::Error)]
pub(crate) enum IndexError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Layout(String),
}

/// The byte ranges of the top-level Pixel Data in the file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PixelLayout {
    /// Native pixel data: `len` bytes from `start`.
    Native { start: u64, len: u64 },
    /// Encapsulated pixel data: the basic offset table and each fragment's (start, length).
    Encapsulated {
        offset_table: Vec<u32>,
        fragments: Vec<(u64, u32)>,
    },
}

/// A byte-counting reader over the file.
struct Walker {
    r: BufReader<File>,
    pos: u64,
    explicit_vr: bool,
}

impl Walker {
    fn bytes<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        let mut b = [0u8; N];
        self.r.read_exact(&mut b)?;
        self.pos += N as u64;
        Ok(b)
    }

    fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_le_bytes(self.bytes::<4>()?))
    }

    fn tag(&mut self) -> io::Result<(u16, u16)> {
        let b = self.bytes::<4>()?;
        Ok((
            u16::from_le_bytes([b[0], b[1]]),
            u16::from_le_bytes([b[2], b[3]]),
        ))
    }

    fn skip(&mut self, n: u64) -> io::Result<()> {
        let n_i64 = i64::try_from(n).map_err(|_| io::Error::other("length out of range"))?;
        self.r.seek_relative(n_i64)?;
        self.pos += n;
        Ok(())
    }

    /// The VR (explicit syntaxes; `None` when implicit) and value length of an element whose
    /// tag was just read. Items and delimiters (group FFFE) have no VR in either syntax.
    fn vr_and_length(
        &mut self,
        tag: (u16, u16),
        explicit: bool,
    ) -> io::Result<(Option<[u8; 2]>, u32)> {
        if !explicit || tag.0 == 0xFFFE {
            return Ok((None, self.u32()?));
        }
        let vr = self.bytes::<2>()?;
        let long = matches!(
            &vr,
            b"OB"
                | b"OD"
                | b"OF"
                | b"OL"
                | b"OV"
                | b"OW"
                | b"SQ"
                | b"SV"
                | b"UC"
                | b"UN"
                | b"UR"
                | b"UT"
                | b"UV"
        );
        let len = if long {
            self.skip(2)?;
            self.u32()?
        } else {
            u16::from_le_bytes(self.bytes::<2>()?) as u32
        };
        Ok((Some(vr), len))
    }

    /// Skips the value of an element (its header read), descending into undefined-length
    /// sequences.
    fn skip_value(
        &mut self,
        vr: Option<[u8; 2]>,
        len: u32,
        explicit: bool,
        depth: u32,
    ) -> Result<(), IndexError> {
        if len != UNDEFINED {
            return Ok(self.skip(len as u64)?);
        }
        // An undefined-length UN holds implicit VR little endian data (PS3.5 6.2.2).
        let nested_explicit = explicit && vr.as_ref() != Some(b"UN");
        self.skip_items(nested_explicit, depth + 1)
    }

    /// Skips the items of an undefined-length sequence, through its delimiter.
    fn skip_items(&mut self, explicit: bool, depth: u32) -> Result<(), IndexError> {
        if depth > MAX_DEPTH {
            return Err(IndexError::Layout("sequences nested too deep".into()));
        }
        loop {
            let tag = self.tag()?;
            let len = self.u32()?;
            match tag {
                SEQUENCE_END => return Ok(()),
                ITEM if len == UNDEFINED => self.skip_data_set(explicit, depth)?,
                ITEM => self.skip(len as u64)?,
                other => {
                    return Err(IndexError::Layout(format!(
                        "({:04X},{:04X}) inside a sequence, expected an item",
                        other.0, other.1
                    )))
                }
            }
        }
    }

    /// Skips the elements of an undefined-length item, through its delimiter.
    fn skip_data_set(&mut self, explicit: bool, depth: u32) -> Result<(), IndexError> {
        loop {
            let tag = self.tag()?;
            let (vr, len) = self.vr_and_length(tag, explicit)?;
            if tag == ITEM_END {
                return Ok(());
            }
            self.skip_value(vr, len, explicit, depth)?;
        }
    }
}

/// Finds the top-level Pixel Data of a DICOM file whose data set is in a little endian
/// transfer syntax (`explicit_vr`: explicit or implicit VR). The file meta group is always
/// explicit VR little endian.
pub(crate) fn locate_pixel_data(file: &File, explicit_vr: bool) -> Result<PixelLayout, IndexError> {
    let file_len = file.metadata()?.len();
    let mut w = Walker {
        r: BufReader::with_capacity(64 * 1024, file.try_clone()?),
        pos: 0,
        explicit_vr,
    };
    w.r.rewind()?;
    let head = w.r.fill_buf()?;
    let skip = if head.len() >= 132 && &head[128..132] == b"DICM" {
        132
    } else if head.len() >= 4 && &head[..4] == b"DICM" {
        4
    } else {
        return Err(IndexError::Layout("no DICM magic code".into()));
    };
    w.skip(skip)?;
    loop {
        let tag = w.tag()?;
        let explicit = tag.0 == 0x0002 || w.explicit_vr;
        let (vr, len) = w.vr_and_length(tag, explicit)?;
        if tag == PIXEL_DATA {
            return pixel_data(&mut w, len, file_len);
        }
        if tag > PIXEL_DATA {
            return Err(IndexError::Layout("no top-level Pixel Data".into()));
        }
        w.skip_value(vr, len, explicit, 0)?;
    }
}

/// Pixel Data's value, its header just read.
fn pixel_data(w: &mut Walker, len: u32, file_len: u64) -> Result<PixelLayout, IndexError> {
    if len != UNDEFINED {
        let (start, len) = (w.pos, len as u64);
        if start + len > file_len {
            return Err(IndexError::Layout(format!(
                "Pixel Data of {len} bytes at {start} runs past the end of the file ({file_len} bytes)"
            )));
        }
        return Ok(PixelLayout::Native { start, len });
    }
    let mut fragments = Vec::new();
    loop {
        let tag = w.tag()?;
        let len = w.u32()?;
        match tag {
            SEQUENCE_END => break,
            ITEM if len != UNDEFINED => {
                let start = w.pos;
                if start + len as u64 > file_len {
                    return Err(IndexError::Layout(format!(
                        "a Pixel Data fragment at {start} runs past the end of the file"
                    )));
                }
                fragments.push((start, len));
                w.skip(len as u64)?;
            }
            other => {
                return Err(IndexError::Layout(format!(
                    "({:04X},{:04X}) in encapsulated Pixel Data, expected a fragment item",
                    other.0, other.1
                )))
            }
        }
    }
    // The first item is the basic offset table.
    let Some((bot_start, bot_len)) = (!fragments.is_empty()).then(|| fragments.remove(0)) else {
        return Err(IndexError::Layout(
            "encapsulated Pixel Data without items".into(),
        ));
    };
    if bot_len % 4 != 0 {
        return Err(IndexError::Layout(format!(
            "basic offset table of {bot_len} bytes, not a multiple of 4"
        )));
    }
    let mut table = vec![0u8; bot_len as usize];
    read_at(w.r.get_ref(), bot_start, &mut table)?;
    let offset_table = table
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(PixelLayout::Encapsulated {
        offset_table,
        fragments,
    })
}

/// Reads `buf.len()` bytes of `file` at `offset`.
pub(crate) fn read_at(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, offset)
}
