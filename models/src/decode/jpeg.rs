//! JPEG: the file's structure checked before decoding, then libjpeg-turbo.
//!
//! A forgiving decoder fills whatever a cut-off scan leaves with grey and reports success,
//! and a forged end-of-image marker after the cut hides the cut from a check of the last
//! bytes. So: every scan must be followed by a marker, the file must end with EOI, every
//! component's 64 coefficients must be brought to full precision by its scans (a
//! progressive file cut between scans fails here), and libjpeg-turbo must decode every
//! block without a warning (a file cut inside a scan fails there, whatever bytes follow:
//! "premature end of data segment").

use image::{metadata::Orientation, DynamicImage, RgbImage};
use turbojpeg::{Colorspace, Decompressor, Image, PixelFormat, ScalingFactor};

use super::{check_size, too_small_for, DecodeError, Scale};
use crate::config::ImageLimits;

/// Decoded at 1/`denom` of its size, `denom` as `scale` asks; the structure checks run on
/// the whole file whatever the scale.
pub fn decode(bytes: &[u8], limits: &ImageLimits, scale: Scale) -> Result<(RgbImage, u32), DecodeError> {
    let frame = Frame::read(bytes)?;
    check_size(frame.width, frame.height, limits)?;
    // Each 8x8 block of the first component carries at least one Huffman code (1 bit or
    // more) for its DC coefficient: fewer bytes than that cannot be the image declared.
    let blocks = u64::from(frame.width.div_ceil(8)) * u64::from(frame.height.div_ceil(8));
    let needs = blocks / 8;
    if (bytes.len() as u64) < needs {
        return Err(too_small_for(frame.width, frame.height, bytes.len(), needs));
    }
    frame.check_complete()?;
    let denom = match scale {
        Scale::Full => 1,
        Scale::Fit(min_side) => scale_for(frame.width.max(frame.height), min_side),
        Scale::Divide(d) if [1, 2, 4, 8].contains(&d) => d,
        Scale::Divide(d) => return Err(DecodeError::Corrupt(format!("no JPEG scale 1/{d}"))),
    };
    let image = decompress(bytes, denom)?;
    let orientation = frame.exif.and_then(Orientation::from_exif_chunk);
    let image = match orientation {
        None | Some(Orientation::NoTransforms) => image,
        Some(o) => {
            let mut d = DynamicImage::ImageRgb8(image);
            d.apply_orientation(o);
            d.into_rgb8()
        }
    };
    Ok((image, denom))
}

/// The largest DCT scale-down (8, 4, 2) that leaves the longer side at least `min_side`.
fn scale_for(side: u32, min_side: u32) -> u32 {
    [8, 4, 2].into_iter().find(|d| side.div_ceil(*d) >= min_side).unwrap_or(1)
}

/// libjpeg-turbo to RGB; CMYK (which it decodes only as CMYK) converted here, as Adobe
/// writes it (inverted), the convention of practically every CMYK JPEG.
fn decompress(bytes: &[u8], denom: u32) -> Result<RgbImage, DecodeError> {
    let failed = |e: turbojpeg::Error| DecodeError::Corrupt(format!("the JPEG could not be decoded: {e}"));
    let mut d = Decompressor::new().map_err(failed)?;
    let factor = ScalingFactor::new(1, denom as usize);
    d.set_scaling_factor(factor).map_err(failed)?;
    let header = d.read_header(bytes).map_err(failed)?.scaled(factor);
    let cmyk = matches!(header.colorspace, Colorspace::CMYK | Colorspace::YCCK);
    let (format, channels) = if cmyk { (PixelFormat::CMYK, 4) } else { (PixelFormat::RGB, 3) };
    let (w, h) = (header.width, header.height);
    let mut pixels = vec![0u8; w * h * channels];
    d.decompress(
        bytes,
        Image {
            pixels: pixels.as_mut_slice(),
            width: w,
            pitch: w * channels,
            height: h,
            format,
        },
    )
    .map_err(failed)?;
    if cmyk {
        pixels = pixels
            .chunks_exact(4)
            .flat_map(|p| {
                let k = u16::from(p[3]);
                [0, 1, 2].map(|i| (u16::from(p[i]) * k / 255) as u8)
            })
            .collect();
    }
    RgbImage::from_raw(w as u32, h as u32, pixels)
        .ok_or_else(|| DecodeError::Corrupt("the JPEG decoder returned fewer pixels than its size".into()))
}

/// What the markers say: the frame's size and components, and every scan's.
struct Frame<'a> {
    width: u32,
    height: u32,
    components: Vec<u8>,
    scans: Vec<Scan>,
    /// The EXIF segment after its "Exif\0\0" header (the TIFF structure).
    exif: Option<&'a [u8]>,
}

struct Scan {
    components: Vec<u8>,
    /// The spectral band (Ss..=Se) and the precision it brings the band to (Al).
    start: u8,
    end: u8,
    low_bit: u8,
}

fn truncated() -> DecodeError {
    DecodeError::Corrupt("the JPEG is truncated".into())
}

impl<'a> Frame<'a> {
    /// Walk the markers from SOI to EOI, skipping entropy-coded data (where FF is stuffed
    /// as FF 00 or is a restart marker).
    fn read(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let mut frame = Frame {
            width: 0,
            height: 0,
            components: Vec::new(),
            scans: Vec::new(),
            exif: None,
        };
        let mut at = 2;
        loop {
            // Markers may be preceded by fill bytes (FF).
            while bytes.get(at) == Some(&0xFF) && bytes.get(at + 1) == Some(&0xFF) {
                at += 1;
            }
            let (ff, marker) = (*bytes.get(at).ok_or_else(truncated)?, *bytes.get(at + 1).ok_or_else(truncated)?);
            if ff != 0xFF {
                return Err(DecodeError::Corrupt(format!("no JPEG marker where one must be (offset {at})")));
            }
            match marker {
                0xD9 => break,
                0x01 | 0xD0..=0xD7 => {
                    at += 2;
                    continue;
                }
                _ => {}
            }
            let len = usize::from(u16::from_be_bytes([
                *bytes.get(at + 2).ok_or_else(truncated)?,
                *bytes.get(at + 3).ok_or_else(truncated)?,
            ]));
            let segment = bytes.get(at + 4..at + 2 + len).filter(|_| len >= 2).ok_or_else(truncated)?;
            at += 2 + len;
            match marker {
                0xC0..=0xC2 => frame.read_sof(segment)?,
                0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => {
                    return Err(DecodeError::UnsupportedFormat);
                }
                0xE1 if frame.exif.is_none() => frame.exif = segment.strip_prefix(b"Exif\0\0"),
                0xDA => {
                    frame.scans.push(Scan::read(segment)?);
                    at = entropy_end(bytes, at).ok_or_else(truncated)?;
                }
                _ => {}
            }
        }
        if frame.components.is_empty() {
            return Err(DecodeError::Corrupt("the JPEG has no frame header".into()));
        }
        Ok(frame)
    }

    fn read_sof(&mut self, s: &[u8]) -> Result<(), DecodeError> {
        let bad = || DecodeError::Corrupt("bad JPEG frame header".into());
        let n = usize::from(*s.get(5).ok_or_else(bad)?);
        self.height = u32::from(u16::from_be_bytes([s[1], s[2]]));
        self.width = u32::from(u16::from_be_bytes([s[3], s[4]]));
        self.components = (0..n)
            .map(|i| s.get(6 + 3 * i).copied().ok_or_else(bad))
            .collect::<Result<_, _>>()?;
        Ok(())
    }

    /// Every component's 64 coefficients brought to full precision (Al = 0) by a scan.
    fn check_complete(&self) -> Result<(), DecodeError> {
        for &c in &self.components {
            let covered = self
                .scans
                .iter()
                .filter(|s| s.low_bit == 0 && s.components.contains(&c))
                .fold(0u64, |m, s| m | band(s.start, s.end));
            if covered != u64::MAX {
                return Err(DecodeError::Corrupt(format!(
                    "the JPEG is truncated: its scans end before component {c} is complete"
                )));
            }
        }
        Ok(())
    }
}

impl Scan {
    fn read(s: &[u8]) -> Result<Self, DecodeError> {
        let bad = || DecodeError::Corrupt("bad JPEG scan header".into());
        let n = usize::from(*s.first().ok_or_else(bad)?);
        let components = (0..n)
            .map(|i| s.get(1 + 2 * i).copied().ok_or_else(bad))
            .collect::<Result<_, _>>()?;
        let tail = s.get(1 + 2 * n..1 + 2 * n + 3).ok_or_else(bad)?;
        Ok(Scan {
            components,
            start: tail[0],
            end: tail[1],
            low_bit: tail[2] & 0x0F,
        })
    }
}

/// Coefficients start..=end as bits of a mask (sequential scans: 0..=63).
fn band(start: u8, end: u8) -> u64 {
    (start.min(63)..=end.min(63)).fold(0, |m, k| m | 1 << k)
}

/// The offset of the first marker after entropy-coded data starting at `at`.
fn entropy_end(bytes: &[u8], mut at: usize) -> Option<usize> {
    loop {
        at += bytes.get(at..)?.iter().position(|&b| b == 0xFF)?;
        match *bytes.get(at + 1)? {
            0x00 | 0xD0..=0xD7 | 0xFF => at += 1,
            _ => return Some(at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_cover_what_scans_name() {
        assert_eq!(band(0, 63), u64::MAX);
        assert_eq!(band(0, 0), 1);
        assert_eq!(band(1, 5) | band(6, 63) | band(0, 0), u64::MAX);
    }

    #[test]
    fn stuffed_bytes_and_restarts_are_inside_the_scan() {
        let data = [0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD3, 0x56, 0xFF, 0xD9];
        assert_eq!(entropy_end(&data, 0), Some(7));
        assert_eq!(entropy_end(&data[..7], 0), None);
    }
}
