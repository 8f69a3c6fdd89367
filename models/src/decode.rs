//! Image bytes -> RGB pixels, with hard limits checked from the header before any pixel
//! buffer is allocated (a 20-byte PNG can claim 100,000 x 100,000 pixels).

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
pub fn decode(bytes: &[u8], limits: &ImageLimits) -> Result<RgbImage, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    if bytes.len() > limits.max_image_bytes {
        return Err(DecodeError::TooManyBytes {
            size: bytes.len(),
            limit: limits.max_image_bytes,
        });
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    match reader.format() {
        Some(f) if FORMATS.contains(&f) => {}
        _ => return Err(DecodeError::UnsupportedFormat),
    }
    if reader.format() == Some(ImageFormat::Jpeg) && !jpeg_is_complete(bytes) {
        // The JPEG decoder fills a cut-off scan with grey and reports success; a face
        // half made of grey must not reach the gates.
        return Err(DecodeError::Corrupt(
            "the JPEG is truncated (no end-of-image marker after its last scan)".into(),
        ));
    }
    let mut decoder_limits = Limits::default();
    decoder_limits.max_image_width = Some(limits.max_side);
    decoder_limits.max_image_height = Some(limits.max_side);
    // RGBA 16-bit is the widest buffer a decoder allocates; leave room for its scratch.
    decoder_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8).saturating_add(64 << 20));
    reader.limits(decoder_limits);
    let mut decoder = reader.into_decoder().map_err(limit_or_corrupt)?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(DecodeError::Corrupt("zero width or height".into()));
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(DecodeError::TooManyPixels {
            width,
            height,
            limit: format!("{} pixels", limits.max_pixels),
        });
    }
    let orientation = decoder.orientation().ok();
    let mut image = DynamicImage::from_decoder(decoder).map_err(limit_or_corrupt)?;
    if let Some(o) = orientation {
        image.apply_orientation(o);
    }
    Ok(image.into_rgb8())
}

/// A complete JPEG has an end-of-image marker (FF D9) after the start of its last scan
/// (FF DA). Inside entropy-coded data every FF byte is stuffed (FF 00) or a restart
/// marker, so FF D9 there can only be the real end; an EXIF thumbnail's own FF D9 comes
/// before the main image's scans.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last = |marker: u8| bytes.windows(2).rposition(|w| w[0] == 0xFF && w[1] == marker);
    match (last(0xDA), last(0xD9)) {
        (Some(sos), Some(eoi)) => eoi > sos,
        _ => false,
    }
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
/// allocate width x height x 3 bytes).
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
}
