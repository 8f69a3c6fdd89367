//! PNG before its decoder sees it: the header's size checked against the limits and
//! against what the file can hold, and every ancillary chunk but transparency dropped.

use std::borrow::Cow;

use super::{check_size, too_small_for, DecodeError};
use crate::config::ImageLimits;

const SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

/// Deflate's largest expansion: a 258-byte match in two one-bit codes.
const DEFLATE_MAX_RATIO: u64 = 1032;

/// The PNG with only IHDR, PLTE, tRNS, IDAT and IEND, once its header passes the limits.
/// ICC profiles, text and EXIF chunks are compressed and can inflate a thousandfold; no
/// gate reads them.
pub fn prepare<'a>(bytes: &'a [u8], limits: &ImageLimits) -> Result<Cow<'a, [u8]>, DecodeError> {
    let chunks = chunks(bytes)?;
    let ihdr = match chunks.first() {
        Some(c) if c.kind == *b"IHDR" && c.data.len() == 13 => c.data,
        _ => return Err(DecodeError::Corrupt("the PNG does not start with its IHDR header".into())),
    };
    let be32 = |at: usize| u32::from_be_bytes([ihdr[at], ihdr[at + 1], ihdr[at + 2], ihdr[at + 3]]);
    let (width, height, depth, colour) = (be32(0), be32(4), ihdr[8], ihdr[9]);
    check_size(width, height, limits)?;
    let channels: u64 = match colour {
        0 | 3 => 1,
        2 => 3,
        4 => 2,
        6 => 4,
        _ => return Err(DecodeError::Corrupt(format!("PNG colour type {colour} does not exist"))),
    };
    // Filtered scanlines: one filter byte and the row's bits, per row.
    let raw = u64::from(height) * (1 + (u64::from(width) * channels * u64::from(depth)).div_ceil(8));
    let needs = raw / DEFLATE_MAX_RATIO;
    if (bytes.len() as u64) < needs {
        return Err(too_small_for(width, height, bytes.len(), needs));
    }
    let keep = |c: &Chunk| matches!(&c.kind, b"IHDR" | b"PLTE" | b"tRNS" | b"IDAT" | b"IEND");
    if chunks.iter().all(keep) {
        return Ok(Cow::Borrowed(bytes));
    }
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(SIGNATURE);
    for c in chunks.iter().filter(|c| keep(c)) {
        out.extend_from_slice(c.whole);
    }
    Ok(Cow::Owned(out))
}

struct Chunk<'a> {
    kind: [u8; 4],
    data: &'a [u8],
    /// Length, type, data and CRC.
    whole: &'a [u8],
}

/// The chunks up to IEND; a chunk running past the end of the file or a missing IEND is
/// a truncated file.
fn chunks(bytes: &[u8]) -> Result<Vec<Chunk<'_>>, DecodeError> {
    let truncated = || DecodeError::Corrupt("the PNG is truncated".into());
    let mut rest = bytes
        .strip_prefix(SIGNATURE)
        .ok_or_else(|| DecodeError::Corrupt("not a PNG signature".into()))?;
    let mut out = Vec::new();
    loop {
        let (len, after) = rest.split_first_chunk::<4>().ok_or_else(truncated)?;
        let len = u32::from_be_bytes(*len) as usize;
        let whole = rest.get(..len.checked_add(12).ok_or_else(truncated)?).ok_or_else(truncated)?;
        let kind: [u8; 4] = after.first_chunk::<4>().copied().ok_or_else(truncated)?;
        out.push(Chunk {
            kind,
            data: &whole[8..8 + len],
            whole,
        });
        rest = &rest[whole.len()..];
        if kind == *b"IEND" {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        c.extend_from_slice(kind);
        c.extend_from_slice(data);
        c.extend_from_slice(&[0; 4]); // the decoder is not run here: the CRC is not read
        c
    }

    fn png(extra: &[(&[u8; 4], Vec<u8>)], width: u32, height: u32) -> Vec<u8> {
        let mut ihdr = width.to_be_bytes().to_vec();
        ihdr.extend_from_slice(&height.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        let mut out = SIGNATURE.to_vec();
        out.extend(chunk(b"IHDR", &ihdr));
        for (k, d) in extra {
            out.extend(chunk(k, d));
        }
        out.extend(chunk(b"IDAT", &[0; 16]));
        out.extend(chunk(b"IEND", &[]));
        out
    }

    #[test]
    fn metadata_chunks_are_dropped_unread() {
        let with = png(&[(b"iCCP", vec![7; 1 << 16]), (b"tEXt", vec![1; 100]), (b"tRNS", vec![0; 6])], 8, 8);
        let kept = prepare(&with, &ImageLimits::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&*kept, &png(&[(b"tRNS", vec![0; 6])][..], 8, 8)[..]);
        let plain = png(&[], 8, 8);
        assert!(matches!(prepare(&plain, &ImageLimits::default()), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn a_file_too_small_for_its_size_is_refused_before_decoding() {
        // 3000x3000 RGB is 27 MB of scanlines: deflate needs at least 26 KB for them.
        let err = prepare(&png(&[], 3000, 3000), &ImageLimits::default()).unwrap_err();
        assert!(matches!(err, DecodeError::Corrupt(ref m) if m.contains("cannot encode")), "{err:?}");
    }

    #[test]
    fn a_chunk_past_the_end_is_truncation() {
        let mut p = png(&[], 8, 8);
        p.truncate(p.len() - 6);
        assert!(matches!(prepare(&p, &ImageLimits::default()), Err(DecodeError::Corrupt(_))));
    }
}
