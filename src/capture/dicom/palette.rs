//! PALETTE COLOR lookup tables (PS3.3 C.7.6.3.1.5-6), plain or segmented (C.7.9.2), read as
//! pydicom's `apply_color_lut` reads them and scaled to 8 bits per channel (16-bit entries
//! keep their high byte, as the reference decoder's images do).

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;

/// Indirect segments that point at further indirect segments deeper than this are refused
/// (a table pointing at itself would otherwise never end).
const MAX_INDIRECTION: u32 = 8;

/// One channel's tags: descriptor, plain data, segmented data.
struct ChannelTags {
    name: &'static str,
    descriptor: Tag,
    data: Tag,
    segmented: Tag,
}

const CHANNELS: [ChannelTags; 3] = [
    ChannelTags {
        name: "red",
        descriptor: tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
        data: tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        segmented: tags::SEGMENTED_RED_PALETTE_COLOR_LOOKUP_TABLE_DATA,
    },
    ChannelTags {
        name: "green",
        descriptor: tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
        data: tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        segmented: tags::SEGMENTED_GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
    },
    ChannelTags {
        name: "blue",
        descriptor: tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
        data: tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        segmented: tags::SEGMENTED_BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
    },
];

/// A PALETTE COLOR lookup table, scaled to 8 bits per channel.
pub(super) struct PaletteLut {
    /// The stored value mapped to the first entry (the descriptor's second value).
    first_mapped: i64,
    /// Each channel's entries, as many as the red descriptor says.
    channels: [Vec<u8>; 3],
}

/// A channel's descriptor: entries, first stored value mapped, bits per entry.
struct Descriptor {
    entries: usize,
    first_mapped: i64,
    bits: i64,
}

impl PaletteLut {
    /// The palette of `obj`; `big_endian` when its transfer syntax stores words big end
    /// first (segmented tables are read as raw bytes).
    pub(super) fn read(obj: &DefaultDicomObject, big_endian: bool) -> Result<Self, String> {
        // All channels index with the red descriptor, as pydicom does.
        let red = descriptor(obj, &CHANNELS[0])?;
        let mut channels: [Vec<u8>; 3] = Default::default();
        for (channel, tags) in channels.iter_mut().zip(&CHANNELS) {
            let own = descriptor(obj, tags)?;
            let mut table = channel_table(obj, tags, &own, big_endian)?;
            if table.len() < red.entries {
                return Err(format!(
                    "{} palette has {} entries, its descriptor says {}",
                    tags.name,
                    table.len(),
                    red.entries
                ));
            }
            table.truncate(red.entries);
            *channel = table;
        }
        Ok(Self {
            first_mapped: red.first_mapped,
            channels,
        })
    }

    /// The colour of stored value `index`: values below the first mapped take the first
    /// entry, values past the last take the last.
    pub(super) fn colour(&self, index: u16) -> [u8; 3] {
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

fn descriptor(obj: &DefaultDicomObject, tags: &ChannelTags) -> Result<Descriptor, String> {
    let name = tags.name;
    let desc = obj
        .element(tags.descriptor)
        .map_err(|_| format!("PALETTE COLOR without a {name} palette descriptor"))?
        .to_multi_int::<i64>()
        .map_err(|e| format!("{name} palette descriptor: {e}"))?;
    let [entries, first_mapped, bits] = desc[..] else {
        return Err(format!(
            "{name} palette descriptor has {} values, expected 3",
            desc.len()
        ));
    };
    if bits != 8 && bits != 16 {
        return Err(format!(
            "{name} palette descriptor gives {bits} bits per entry, expected 8 or 16"
        ));
    }
    // 0 entries means 2^16; the count is unsigned even where the first value is signed.
    let entries = match entries {
        0 => 65536,
        n => (n & 0xFFFF) as usize,
    };
    Ok(Descriptor {
        entries,
        first_mapped,
        bits,
    })
}

/// One channel's entries in 8 bits, from its plain or its segmented data.
fn channel_table(
    obj: &DefaultDicomObject,
    tags: &ChannelTags,
    desc: &Descriptor,
    big_endian: bool,
) -> Result<Vec<u8>, String> {
    let name = tags.name;
    let to_8bit = |v: u16| {
        if desc.bits == 16 {
            (v >> 8) as u8
        } else {
            v as u8
        }
    };
    if let Some(plain) = obj.element_opt(tags.data).ok().flatten() {
        let bytes = plain
            .to_bytes()
            .map_err(|e| format!("{name} palette data: {e}"))?;
        return if bytes.len() == desc.entries {
            Ok(bytes.to_vec()) // 8-bit entries packed one per byte
        } else if bytes.len() >= desc.entries * 2 {
            // Entries in 16-bit words (dicom-rs holds OW values in the machine's order,
            // little endian on every target ceusd builds for).
            let words = bytes.chunks_exact(2).take(desc.entries);
            Ok(words
                .map(|b| to_8bit(u16::from_le_bytes([b[0], b[1]])))
                .collect())
        } else {
            Err(format!(
                "{name} palette data has {} bytes for {} entries",
                bytes.len(),
                desc.entries
            ))
        };
    }
    let Some(segmented) = obj.element_opt(tags.segmented).ok().flatten() else {
        return Err(format!(
            "PALETTE COLOR without {name} palette data (neither {} nor segmented {})",
            tags.data, tags.segmented
        ));
    };
    let words = segmented
        .to_multi_int::<u16>()
        .map_err(|e| format!("segmented {name} palette data: {e}"))?;
    let lut = SegmentedLut::new(&words, desc.bits == 8, big_endian)
        .expand(0, None, None, 0)
        .map_err(|e| format!("segmented {name} palette data: {e}"))?;
    Ok(lut.into_iter().map(to_8bit).collect())
}

/// Segmented lookup table data (PS3.3 C.7.9.2) as a sequence of words: 16-bit words, or,
/// for 8-bit entries, the data's bytes in file order (as pydicom reads them).
struct SegmentedLut {
    words: Vec<u16>,
    bytewise: bool,
    big_endian: bool,
}

impl SegmentedLut {
    fn new(data: &[u16], bytewise: bool, big_endian: bool) -> Self {
        let words = if !bytewise {
            data.to_vec()
        } else {
            let bytes = |w: &u16| {
                if big_endian {
                    w.to_be_bytes()
                } else {
                    w.to_le_bytes()
                }
            };
            data.iter().flat_map(bytes).map(u16::from).collect()
        };
        Self {
            words,
            bytewise,
            big_endian,
        }
    }

    /// The entries of the segments from word `start`: all of them, or the first
    /// `max_segments` for an indirect segment, whose linear segments may start from
    /// `previous`, the entry before the indirect one.
    fn expand(
        &self,
        start: usize,
        max_segments: Option<usize>,
        previous: Option<u16>,
        depth: u32,
    ) -> Result<Vec<u16>, String> {
        if depth > MAX_INDIRECTION {
            return Err(format!(
                "indirect segments nested more than {MAX_INDIRECTION} deep"
            ));
        }
        let w = &self.words;
        let mut lut: Vec<u16> = Vec::new();
        let mut at = start;
        let mut segments = 0;
        // `at + 1`: a trailing pad word is not a segment.
        while at + 1 < w.len() {
            let (opcode, length) = (w[at], w[at + 1] as usize);
            at += 2;
            match opcode {
                0 => {
                    let values = w.get(at..at + length).ok_or_else(|| {
                        format!("a discrete segment at word {} runs past the end", at - 2)
                    })?;
                    lut.extend_from_slice(values);
                    at += length;
                }
                1 => {
                    let from = lut.last().copied().or(previous).ok_or_else(|| {
                        "the first segment is linear, with no value to start from".to_string()
                    })?;
                    let to = *w.get(at).ok_or("a linear segment without its end value")?;
                    at += 1;
                    lut.extend(linear_segment(from, to, length));
                }
                2 => {
                    let last = *lut
                        .last()
                        .ok_or("the first segment is indirect, with nothing before it")?;
                    let offset = self.indirect_offset(at)?;
                    at += if self.bytewise { 4 } else { 2 };
                    lut.extend(self.expand(offset, Some(length), Some(last), depth + 1)?);
                }
                other => return Err(format!("unknown segment type {other} at word {}", at - 2)),
            }
            segments += 1;
            if Some(segments) == max_segments {
                break;
            }
        }
        Ok(lut)
    }

    /// The word an indirect segment copies from: a 32-bit offset, least significant 16-bit
    /// word first (for 8-bit entries, two words' bytes in the file's order).
    fn indirect_offset(&self, at: usize) -> Result<usize, String> {
        let w = &self.words;
        let [low, high] = if self.bytewise {
            let b = w
                .get(at..at + 4)
                .ok_or("an indirect segment without its offset")?;
            let pair = |a: u16, b: u16| {
                if self.big_endian {
                    a << 8 | b
                } else {
                    b << 8 | a
                }
            };
            [pair(b[0], b[1]), pair(b[2], b[3])]
        } else {
            let b = w
                .get(at..at + 2)
                .ok_or("an indirect segment without its offset")?;
            [b[0], b[1]]
        };
        Ok(((high as usize) << 16) | low as usize)
    }
}

/// `length` entries rising (or falling) from after `from` to `to`, rounded as pydicom
/// rounds them: `numpy.around(numpy.linspace(from + step, to, length))`, half to even.
fn linear_segment(from: u16, to: u16, length: usize) -> impl Iterator<Item = u16> {
    let (y0, y1) = (from as f64, to as f64);
    let step = (y1 - y0) / length as f64;
    let start = y0 + step;
    let spacing = if length > 1 {
        (y1 - start) / (length - 1) as f64
    } else {
        0.0
    };
    (0..length).map(move |i| {
        if from == to || i + 1 == length {
            to
        } else {
            (i as f64 * spacing + start).round_ties_even() as u16
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(words: &[u16]) -> Result<Vec<u16>, String> {
        SegmentedLut::new(words, false, false).expand(0, None, None, 0)
    }

    #[test]
    fn discrete_linear_and_indirect_segments_expand_as_the_standard_describes() {
        // discrete 0, 10; linear to 20 over 2; indirect: the first 2 segments again.
        let words = [0, 2, 0, 10, 1, 2, 20, 2, 2, 0, 0];
        assert_eq!(expand(&words).unwrap(), [0, 10, 15, 20, 0, 10, 15, 20]);
    }

    #[test]
    fn linear_segments_round_half_to_even_as_numpy() {
        // from 0 to 5 over 2: 2.5 → 2, then 5.
        assert_eq!(linear_segment(0, 5, 2).collect::<Vec<_>>(), [2, 5]);
        // from 0 to 3 over 2: 1.5 → 2, then 3.
        assert_eq!(linear_segment(0, 3, 2).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(linear_segment(9, 9, 3).collect::<Vec<_>>(), [9, 9, 9]);
        assert_eq!(linear_segment(10, 0, 2).collect::<Vec<_>>(), [5, 0]);
    }

    #[test]
    fn malformed_segments_are_refused_with_the_reason() {
        let e = expand(&[1, 2, 20]).unwrap_err();
        assert!(e.contains("first segment is linear"), "{e}");
        let e = expand(&[0, 5, 1, 2]).unwrap_err();
        assert!(e.contains("runs past the end"), "{e}");
        let e = expand(&[7, 1, 0]).unwrap_err();
        assert!(e.contains("unknown segment type 7"), "{e}");
        // An indirect segment that copies the segments from the start, itself included.
        let e = expand(&[0, 1, 5, 2, 2, 0, 0]).unwrap_err();
        assert!(e.contains("nested more than"), "{e}");
    }
}
