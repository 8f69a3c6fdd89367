//! Image bytes -> RGB pixels, with hard limits checked from the header before any pixel
//! buffer is allocated (a 20-byte PNG can claim 100,000 x 100,000 pixels).

mod jpeg;
mod png;

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};

use crate::config::ImageLimits;

/// Why an image could not be decoded; the message is safe to show the caller.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("the image is empty")]
    Empty,
    #[error("the image is {size} bytes, over the limit of {limit}")]
    TooManyBytes { size: usize, limit: usize },
    #[error("the image is {width}x{height} pixels, over the limit ({limit})")]
    TooManyPixels { width: u32, height: u32, limit: String },
    #[error("unsupported image format (send JPEG or PNG)")]
    UnsupportedFormat,
    #[error("the image could not be decoded: {0}")]
    Corrupt(String),
}

impl DecodeError {
    /// Over a size limit (413 in the API) rather than malformed (400).
    pub fn is_too_large(&self) -> bool {
        matches!(self, DecodeError::TooManyBytes { .. } | DecodeError::TooManyPixels { .. })
    }
}

/// Formats accepted: what access-control cameras and enrolment stations send.
const FORMATS: &[ImageFormat] = &[
    ImageFormat::Jpeg,
    ImageFormat::Png,
    ImageFormat::WebP,
    ImageFormat::Bmp,
    ImageFormat::Gif,
    ImageFormat::Pnm,
];

/// Decode to 8-bit RGB with the EXIF orientation applied. Grey, alpha, palette and
/// 16-bit images are converted; alpha is dropped.
///
/// Memory per decode is bounded before any pixel buffer exists: by `max_pixels` from the
/// header, and by what the file's size can encode (`too_small_for`), so a small file never
/// costs a large decode. PNG metadata (ICC profiles, text, EXIF: compressed chunks that
/// can inflate a thousandfold) is dropped unread; no gate uses colour management.
pub fn decode(bytes: &[u8], limits: &ImageLimits) -> Result<RgbImage, DecodeError> {
    decode_scaled(bytes, limits, Scale::Full).map(|(image, _)| image)
}

/// How small a JPEG may be decoded. libjpeg-turbo scales in the DCT domain: the entropy
/// decoding is the same, the inverse transforms, colour conversion and every later resize
/// work on a fraction of the pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    Full,
    /// The largest divisor of 8, 4, 2 that keeps the longer side at least this long.
    Fit(u32),
    /// Exactly this divisor (1, 2, 4 or 8).
    Divide(u32),
}

/// As [`decode`], a JPEG at the given scale; every other format at full size. Returns the
/// image and the divisor it was decoded at.
pub fn decode_scaled(bytes: &[u8], limits: &ImageLimits, scale: Scale) -> Result<(RgbImage, u32), DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    if bytes.len() > limits.max_image_bytes {
        return Err(DecodeError::TooManyBytes {
            size: bytes.len(),
            limit: limits.max_image_bytes,
        });
    }
    match image::guess_format(bytes) {
        Ok(ImageFormat::Jpeg) => jpeg::decode(bytes, limits, scale),
        Ok(ImageFormat::Png) => other(&png::prepare(bytes, limits)?, ImageFormat::Png, limits).map(|i| (i, 1)),
        Ok(f) if FORMATS.contains(&f) => other(bytes, f, limits).map(|i| (i, 1)),
        _ => Err(DecodeError::UnsupportedFormat),
    }
}

/// The header's size against the pixel limits.
fn check_size(width: u32, height: u32, limits: &ImageLimits) -> Result<(), DecodeError> {
    if width == 0 || height == 0 {
        return Err(DecodeError::Corrupt("zero width or height".into()));
    }
    if width > limits.max_side || height > limits.max_side || u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(DecodeError::TooManyPixels {
            width,
            height,
            limit: format!("{} pixels, {} a side", limits.max_pixels, limits.max_side),
        });
    }
    Ok(())
}

/// An image whose file is too small to encode the size its header declares: refused
/// before its pixel buffer is allocated.
fn too_small_for(width: u32, height: u32, size: usize, needs: u64) -> DecodeError {
    DecodeError::Corrupt(format!(
        "the image declares {width}x{height} pixels, which {size} bytes cannot encode (at least {needs} needed)"
    ))
}

/// PNG and the other formats, through the image crate's decoders.
fn other(bytes: &[u8], format: ImageFormat, limits: &ImageLimits) -> Result<RgbImage, DecodeError> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut decoder_limits = Limits::default();
    decoder_limits.max_image_width = Some(limits.max_side);
    decoder_limits.max_image_height = Some(limits.max_side);
    // RGBA 16-bit is the widest buffer a decoder allocates; leave room for its scratch.
    decoder_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8).saturating_add(64 << 20));
    reader.limits(decoder_limits);
    let mut decoder = reader.into_decoder().map_err(limit_or_corrupt)?;
    let (width, height) = decoder.dimensions();
    check_size(width, height, limits)?;
    let orientation = decoder.orientation().ok();
    let mut image = DynamicImage::from_decoder(decoder).map_err(limit_or_corrupt)?;
    if let Some(o) = orientation {
        image.apply_orientation(o);
    }
    Ok(image.into_rgb8())
}

fn limit_or_corrupt(e: image::ImageError) -> DecodeError {
    match e {
        image::ImageError::Limits(l) => DecodeError::TooManyPixels {
            width: 0,
            height: 0,
            limit: l.to_string(),
        },
        image::ImageError::Unsupported(_) => DecodeError::UnsupportedFormat,
        other => DecodeError::Corrupt(other.to_string()),
    }
}

/// A valid PNG whose header claims `width` x `height` RGB pixels and carries none: a
/// decompression-bomb probe for tests and drills (a decoder that trusts the header would
/// allocate width x height x 3 bytes). Only in tests and with the `test-hooks` feature.
#[cfg(any(test, feature = "test-hooks"))]
pub fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    let encoder = image::codecs::png::PngEncoder::new(&mut bytes);
    // Encoding one pixel into a Vec cannot fail.
    let _ = image::ImageEncoder::write_image(encoder, &[0, 0, 0], 1, 1, image::ExtendedColorType::Rgb8);
    bytes[16..20].copy_from_slice(&width.to_be_bytes());
    bytes[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    bytes
}

#[cfg(any(test, feature = "test-hooks"))]
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32, color: image::ExtendedColorType) -> Vec<u8> {
        let channels = color.bits_per_pixel() as usize / 8;
        let data = vec![100u8; width as usize * height as usize * channels];
        let mut out = Vec::new();
        image::codecs::png::PngEncoder::new(&mut out)
            .write_image(&data, width, height, color)
            .unwrap_or_else(|e| panic!("encode: {e}"));
        out
    }
    use image::ImageEncoder;

    #[test]
    fn odd_colour_types_decode_to_rgb() {
        use image::ExtendedColorType::*;
        for color in [L8, La8, Rgba8, L16, Rgb16, Rgba16] {
            let img = decode(&png(7, 5, color), &ImageLimits::default()).unwrap_or_else(|e| panic!("{color:?}: {e}"));
            assert_eq!(img.dimensions(), (7, 5), "{color:?}");
        }
    }

    #[test]
    fn empty_and_garbage_are_refused() {
        assert_eq!(decode(b"", &ImageLimits::default()), Err(DecodeError::Empty));
        assert_eq!(
            decode(b"hello, not an image", &ImageLimits::default()),
            Err(DecodeError::UnsupportedFormat)
        );
    }

    #[test]
    fn truncated_png_is_a_clean_error() {
        let mut bytes = png(64, 64, image::ExtendedColorType::Rgb8);
        bytes.truncate(bytes.len() / 2);
        assert!(matches!(decode(&bytes, &ImageLimits::default()), Err(DecodeError::Corrupt(_))));
    }

    #[test]
    fn header_claiming_huge_size_is_refused_before_allocation() {
        for (w, h) in [(60000, 60000), (10000, 10000)] {
            let err = decode(&png_claiming(w, h), &ImageLimits::default()).unwrap_err();
            assert!(err.is_too_large(), "{w}x{h}: {err:?}");
        }
    }

    #[test]
    fn byte_limit_applies() {
        let limits = ImageLimits {
            max_image_bytes: 10,
            ..ImageLimits::default()
        };
        let err = decode(&png(8, 8, image::ExtendedColorType::Rgb8), &limits).unwrap_err();
        assert!(matches!(err, DecodeError::TooManyBytes { .. }));
    }

    fn testdata(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata").join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; run python3 models/fetch.py", path.display()))
    }

    /// obama.jpg re-encoded as `kind` requires.
    fn jpeg(kind: &str) -> Vec<u8> {
        let rgb = decode(&testdata("obama.jpg"), &ImageLimits::default()).unwrap_or_else(|e| panic!("{e}"));
        let (w, h) = (rgb.width() as u16, rgb.height() as u16);
        let mut out = Vec::new();
        let mut enc = jpeg_encoder::Encoder::new(&mut out, 90);
        let (pixels, colour) = match kind {
            "progressive" => {
                enc.set_progressive(true);
                (rgb.into_raw(), jpeg_encoder::ColorType::Rgb)
            }
            "restart" => {
                enc.set_restart_interval(3);
                (rgb.into_raw(), jpeg_encoder::ColorType::Rgb)
            }
            "grey" => (
                image::DynamicImage::ImageRgb8(rgb).into_luma8().into_raw(),
                jpeg_encoder::ColorType::Luma,
            ),
            "cmyk" => {
                // Printers' CMYK (ink, 255 = full): R = (255 - C)(255 - K) / 255.
                let cmyk = rgb.pixels().flat_map(|p| {
                    let max = u32::from(p.0.iter().copied().max().unwrap_or(0)).max(1);
                    let ink = |v: u8| (255 - 255 * u32::from(v) / max) as u8;
                    [ink(p.0[0]), ink(p.0[1]), ink(p.0[2]), (255 - max) as u8]
                });
                (cmyk.collect(), jpeg_encoder::ColorType::Cmyk)
            }
            "rotated" => {
                // EXIF: big-endian TIFF, one IFD entry, Orientation (0x0112) = 6 (90 degrees clockwise).
                let exif = b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x06\0\0\0\0\0\0";
                enc.add_app_segment(1, exif).unwrap_or_else(|e| panic!("{e}"));
                (rgb.into_raw(), jpeg_encoder::ColorType::Rgb)
            }
            _ => (rgb.into_raw(), jpeg_encoder::ColorType::Rgb),
        };
        enc.encode(&pixels, w, h, colour).unwrap_or_else(|e| panic!("{kind}: {e}"));
        out
    }

    fn mean(img: &RgbImage) -> [f64; 3] {
        let n = f64::from(img.width() * img.height());
        let mut m = [0.0; 3];
        for p in img.pixels() {
            for (m, v) in m.iter_mut().zip(p.0) {
                *m += f64::from(v) / n;
            }
        }
        m
    }

    #[test]
    fn every_kind_of_complete_jpeg_decodes_to_the_same_picture() {
        let reference = decode(&testdata("obama.jpg"), &ImageLimits::default()).unwrap_or_else(|e| panic!("{e}"));
        let want = mean(&reference);
        for kind in ["baseline", "progressive", "restart", "grey", "cmyk"] {
            let img = decode(&jpeg(kind), &ImageLimits::default()).unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(img.dimensions(), reference.dimensions(), "{kind}");
            let got = mean(&img);
            let tolerance = if kind == "grey" { 40.0 } else { 6.0 };
            for c in 0..3 {
                assert!((got[c] - want[c]).abs() < tolerance, "{kind}: mean {got:?} against {want:?}");
            }
        }
        // The same pixels and encoder settings as "baseline", plus the EXIF segment.
        let upright = decode(&jpeg("baseline"), &ImageLimits::default()).unwrap_or_else(|e| panic!("{e}"));
        let rotated = decode(&jpeg("rotated"), &ImageLimits::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            rotated.dimensions(),
            (upright.height(), upright.width()),
            "EXIF orientation 6 is applied"
        );
        assert_eq!(rotated.get_pixel(upright.height() - 1, 0), upright.get_pixel(0, 0));
    }

    /// At 1/2, 1/4 and 1/8 every kind of JPEG is the same picture, smaller (EXIF
    /// orientation, CMYK and progressive included); `Fit` picks the largest divisor that
    /// keeps the longer side; other formats are always decoded whole.
    #[test]
    fn a_scaled_decode_is_the_picture_at_a_fraction_of_its_size() {
        let limits = ImageLimits::default();
        for kind in ["baseline", "progressive", "restart", "grey", "cmyk", "rotated"] {
            let bytes = jpeg(kind);
            let full = decode(&bytes, &limits).unwrap_or_else(|e| panic!("{kind}: {e}"));
            let want = mean(&full);
            for d in [2, 4, 8] {
                let (img, got) = decode_scaled(&bytes, &limits, Scale::Divide(d)).unwrap_or_else(|e| panic!("{kind} 1/{d}: {e}"));
                assert_eq!(got, d);
                assert_eq!(
                    img.dimensions(),
                    (full.width().div_ceil(d), full.height().div_ceil(d)),
                    "{kind} 1/{d}"
                );
                let m = mean(&img);
                for c in 0..3 {
                    assert!((m[c] - want[c]).abs() < 3.0, "{kind} 1/{d}: mean {m:?} against {want:?}");
                }
            }
        }
        let bytes = jpeg("baseline");
        let full = decode(&bytes, &limits).unwrap_or_else(|e| panic!("{e}"));
        let side = full.width().max(full.height());
        let divisor = |min_side| decode_scaled(&bytes, &limits, Scale::Fit(min_side)).map(|(_, d)| d).ok();
        assert_eq!(divisor(side), Some(1));
        assert_eq!(divisor(side / 2), Some(2));
        assert_eq!(divisor(side / 8), Some(8));
        assert!(decode_scaled(&bytes, &limits, Scale::Divide(3)).is_err());
        let png = png(64, 48, image::ExtendedColorType::Rgb8);
        assert_eq!(
            decode_scaled(&png, &limits, Scale::Fit(8)).map(|(i, d)| (i.dimensions(), d)).ok(),
            Some(((64, 48), 1))
        );
        // The structure checks come first at any scale: a cut file with a forged end.
        let mut cut = bytes[..bytes.len() * 2 / 3].to_vec();
        cut.extend_from_slice(&[0xFF, 0xD9]);
        assert!(decode_scaled(&cut, &limits, Scale::Divide(8)).is_err());
    }

    /// A JPEG cut anywhere and given a forged end-of-image marker is refused, as is the cut
    /// alone: at 70 cut points in each of a baseline, a progressive and a restart-marker file.
    #[test]
    fn a_cut_jpeg_is_refused_whatever_bytes_follow() {
        let mut tried = 0;
        for kind in ["baseline", "progressive", "restart"] {
            let whole = jpeg(kind);
            for i in 0..70 {
                let cut = whole.len() * (10 + i) / 82;
                for tail in [&[][..], &[0xFF, 0xD9][..]] {
                    let mut forged = whole[..cut].to_vec();
                    forged.extend_from_slice(tail);
                    let result = decode(&forged, &ImageLimits::default());
                    assert!(
                        matches!(result, Err(DecodeError::Corrupt(_))),
                        "{kind} cut at {cut} of {} with {tail:x?} appended: {:?}",
                        whole.len(),
                        result.map(|i| i.dimensions())
                    );
                    tried += 1;
                }
            }
        }
        assert_eq!(tried, 420);
    }

    #[test]
    fn a_small_jpeg_declaring_a_huge_size_is_refused_before_decoding() {
        let small = RgbImage::from_pixel(64, 64, image::Rgb([90, 60, 50]));
        let mut bytes = Vec::new();
        jpeg_encoder::Encoder::new(&mut bytes, 90)
            .encode(small.as_raw(), 64, 64, jpeg_encoder::ColorType::Rgb)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(bytes.len() < 10_000);
        // Rewrite the frame header (SOF0) to claim 12000 x 3333 pixels.
        let sof = bytes
            .windows(2)
            .position(|w| w == [0xFF, 0xC0])
            .unwrap_or_else(|| panic!("no SOF0"));
        bytes[sof + 5..sof + 7].copy_from_slice(&3333u16.to_be_bytes());
        bytes[sof + 7..sof + 9].copy_from_slice(&12000u16.to_be_bytes());
        let err = decode(&bytes, &ImageLimits::default()).unwrap_err();
        assert!(matches!(err, DecodeError::Corrupt(ref m) if m.contains("cannot encode")), "{err:?}");
    }
}
