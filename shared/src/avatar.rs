//! Avatar images: cheap validation of an upload ([`inspect`]) and the square, resized,
//! metadata-free PNG renditions stored for it ([`process`]).
//!
//! The image type is decided by the content (magic bytes), never by a file name or a
//! client-sent content type. Dimensions are read from the header and checked before any pixel
//! is decoded, and decoding runs under memory limits derived from the pixel budget, so a small
//! file claiming to be enormous (a "decompression bomb") is refused cheaply.

use std::io::Cursor;

use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::imageops::FilterType as ResizeFilter;
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits};

/// Side of the large rendition, in pixels.
pub const LARGE_SIZE: u32 = 256;
/// Side of the small rendition, in pixels.
pub const SMALL_SIZE: u32 = 64;

/// Worst-case bytes per decoded pixel for the accepted formats (16-bit RGBA PNG).
const MAX_BYTES_PER_PIXEL: u64 = 8;
/// Allowance for decoders' working buffers on top of the decoded image.
const DECODER_HEADROOM_BYTES: u64 = 16 * 1024 * 1024;

/// The accepted image types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageKind {
    Png,
    Jpeg,
    WebP,
    Gif,
}

impl ImageKind {
    /// The MIME type, e.g. `image/png`.
    pub fn content_type(self) -> &'static str {
        match self {
            ImageKind::Png => "image/png",
            ImageKind::Jpeg => "image/jpeg",
            ImageKind::WebP => "image/webp",
            ImageKind::Gif => "image/gif",
        }
    }

    /// The usual file extension, without a dot.
    pub fn extension(self) -> &'static str {
        match self {
            ImageKind::Png => "png",
            ImageKind::Jpeg => "jpg",
            ImageKind::WebP => "webp",
            ImageKind::Gif => "gif",
        }
    }

    fn from_format(format: ImageFormat) -> Option<Self> {
        match format {
            ImageFormat::Png => Some(ImageKind::Png),
            ImageFormat::Jpeg => Some(ImageKind::Jpeg),
            ImageFormat::WebP => Some(ImageKind::WebP),
            ImageFormat::Gif => Some(ImageKind::Gif),
            _ => None,
        }
    }

    fn format(self) -> ImageFormat {
        match self {
            ImageKind::Png => ImageFormat::Png,
            ImageKind::Jpeg => ImageFormat::Jpeg,
            ImageKind::WebP => ImageFormat::WebP,
            ImageKind::Gif => ImageFormat::Gif,
        }
    }
}

/// What [`inspect`] learned from an upload's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    pub kind: ImageKind,
    pub width: u32,
    pub height: u32,
}

/// Why an upload cannot become an avatar. The messages are meant for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AvatarError {
    #[error("the image file is too large (the limit is {max_bytes} bytes)")]
    TooLarge { max_bytes: usize },
    #[error("unsupported image type: upload a PNG, JPEG, WebP or GIF image")]
    UnsupportedType,
    #[error("the image has too many pixels (the limit is {max} pixels)")]
    TooManyPixels { max: u64 },
    #[error("the image is damaged or could not be read: {0}")]
    Corrupt(String),
}

/// The stored renditions of an avatar: freshly encoded PNGs, no metadata carried over.
#[derive(Clone, PartialEq, Eq)]
pub struct ProcessedAvatar {
    /// [`LARGE_SIZE`]×[`LARGE_SIZE`] PNG.
    pub large: Vec<u8>,
    /// [`SMALL_SIZE`]×[`SMALL_SIZE`] PNG.
    pub small: Vec<u8>,
}

impl std::fmt::Debug for ProcessedAvatar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessedAvatar")
            .field("large", &format_args!("{} bytes", self.large.len()))
            .field("small", &format_args!("{} bytes", self.small.len()))
            .finish()
    }
}

/// Validate an upload without decoding its pixels: at most `max_bytes` long, a PNG, JPEG,
/// WebP or GIF by its content, non-zero dimensions, and at most `max_pixels` pixels.
/// Cheap enough to call on the request path.
pub fn inspect(bytes: &[u8], max_bytes: usize, max_pixels: u64) -> Result<ImageInfo, AvatarError> {
    if bytes.len() > max_bytes {
        return Err(AvatarError::TooLarge { max_bytes });
    }
    let format = image::guess_format(bytes).map_err(|_| AvatarError::UnsupportedType)?;
    let kind = ImageKind::from_format(format).ok_or(AvatarError::UnsupportedType)?;

    let mut reader = ImageReader::with_format(Cursor::new(bytes), kind.format());
    reader.limits(decode_limits(max_pixels));
    let (width, height) = reader.into_dimensions().map_err(|e| from_image_error(e, max_pixels))?;
    if width == 0 || height == 0 {
        return Err(AvatarError::Corrupt("the image has no pixels".into()));
    }
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(AvatarError::TooManyPixels { max: max_pixels });
    }
    Ok(ImageInfo { kind, width, height })
}

/// Validate an upload completely: [`inspect`], then decode every pixel (under the same
/// memory limits), so a truncated or corrupt file is refused at upload rather than by the
/// job. CPU-heavy like [`process`]: run it on a blocking thread.
pub fn validate(bytes: &[u8], max_bytes: usize, max_pixels: u64) -> Result<ImageInfo, AvatarError> {
    let info = inspect(bytes, max_bytes, max_pixels)?;
    decode(bytes, info.kind, max_pixels)?;
    Ok(info)
}

/// Turn an upload into the stored renditions: validate it like [`inspect`] (no size limit
/// here: check that at upload), decode it under memory limits derived from `max_pixels`,
/// apply its EXIF orientation, crop the centred square, resize it to [`LARGE_SIZE`] and
/// [`SMALL_SIZE`], and encode both as new PNGs (so no EXIF, GPS or other metadata survives).
/// Animated GIF/WebP keep their first frame.
///
/// CPU-heavy (decoding and resampling can take a large fraction of a second): async callers
/// must run it on a blocking thread, `tokio::task::spawn_blocking(move || process(&bytes, max))`,
/// never directly on the runtime.
pub fn process(bytes: &[u8], max_pixels: u64) -> Result<ProcessedAvatar, AvatarError> {
    let info = inspect(bytes, usize::MAX, max_pixels)?;
    let image = decode(bytes, info.kind, max_pixels)?;

    // Normalise to 8 bits per channel, keeping transparency only when there is an alpha channel.
    let image = if image.color().has_alpha() {
        DynamicImage::ImageRgba8(image.into_rgba8())
    } else {
        DynamicImage::ImageRgb8(image.into_rgb8())
    };

    let (width, height) = (image.width(), image.height());
    let side = width.min(height);
    let square = image.crop_imm((width - side) / 2, (height - side) / 2, side, side);
    drop(image);

    let large = square.resize_exact(LARGE_SIZE, LARGE_SIZE, ResizeFilter::Lanczos3);
    drop(square);
    let small = large.resize_exact(SMALL_SIZE, SMALL_SIZE, ResizeFilter::Lanczos3);

    Ok(ProcessedAvatar { large: encode_png(&large)?, small: encode_png(&small)? })
}

/// Limits for reading an image of at most `max_pixels` pixels.
fn decode_limits(max_pixels: u64) -> Limits {
    let side = u32::try_from(max_pixels).unwrap_or(u32::MAX);
    let mut limits = Limits::default();
    limits.max_image_width = Some(side);
    limits.max_image_height = Some(side);
    limits.max_alloc = Some(max_pixels.saturating_mul(MAX_BYTES_PER_PIXEL).saturating_add(DECODER_HEADROOM_BYTES));
    limits
}

fn decode(bytes: &[u8], kind: ImageKind, max_pixels: u64) -> Result<DynamicImage, AvatarError> {
    let err = |e| from_image_error(e, max_pixels);
    let limits = decode_limits(max_pixels);
    let mut reader = ImageReader::with_format(Cursor::new(bytes), kind.format());
    reader.limits(limits.clone());
    let mut decoder = reader.into_decoder().map_err(err)?;
    // A broken EXIF block is no reason to refuse the picture: just don't rotate it.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    // As `ImageReader::decode` does: the output buffer counts against the allocation limit,
    // and the decoder gets what is left.
    let mut remaining = limits;
    remaining.reserve(decoder.total_bytes()).map_err(err)?;
    decoder.set_limits(remaining).map_err(err)?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(err)?;
    image.apply_orientation(orientation);
    Ok(image)
}

fn encode_png(image: &DynamicImage) -> Result<Vec<u8>, AvatarError> {
    let mut out = Vec::new();
    let encoder = PngEncoder::new_with_quality(&mut out, CompressionType::Best, FilterType::Adaptive);
    image.write_with_encoder(encoder).map_err(|e| AvatarError::Corrupt(format!("could not encode the avatar: {e}")))?;
    Ok(out)
}

fn from_image_error(error: ImageError, max_pixels: u64) -> AvatarError {
    match error {
        ImageError::Limits(_) => AvatarError::TooManyPixels { max: max_pixels },
        ImageError::Unsupported(_) => AvatarError::UnsupportedType,
        other => AvatarError::Corrupt(other.to_string()),
    }
}

/// The media keys of an avatar's two sizes, by the avatar's key.
pub fn avatar_files(key: &str) -> [String; 2] {
    [format!("avatars/{key}-{LARGE_SIZE}.png"), format!("avatars/{key}-{SMALL_SIZE}.png")]
}

#[cfg(test)]
mod tests {
    use image::codecs::gif::GifEncoder;
    use image::codecs::jpeg::JpegEncoder;
    use image::codecs::webp::WebPEncoder;
    use image::{ExtendedColorType, ImageEncoder, Rgb, RgbImage, Rgba, RgbaImage};

    use super::*;

    const MAX_BYTES: usize = 5 * 1024 * 1024;
    const MAX_PIXELS: u64 = 40_000_000;

    const RED: Rgb<u8> = Rgb([255, 0, 0]);
    const BLUE: Rgb<u8> = Rgb([0, 0, 255]);

    fn png(img: &RgbImage) -> Vec<u8> {
        let mut out = Vec::new();
        PngEncoder::new(&mut out)
            .write_image(img.as_raw(), img.width(), img.height(), ExtendedColorType::Rgb8)
            .unwrap();
        out
    }

    fn jpeg(img: &RgbImage, exif: Option<Vec<u8>>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = JpegEncoder::new_with_quality(&mut out, 95);
        if let Some(exif) = exif {
            encoder.set_exif_metadata(exif).unwrap();
        }
        encoder.write_image(img.as_raw(), img.width(), img.height(), ExtendedColorType::Rgb8).unwrap();
        out
    }

    fn gif(img: &RgbImage) -> Vec<u8> {
        let rgba: RgbaImage = DynamicImage::ImageRgb8(img.clone()).into_rgba8();
        let mut out = Vec::new();
        GifEncoder::new(&mut out).encode(rgba.as_raw(), rgba.width(), rgba.height(), ExtendedColorType::Rgba8).unwrap();
        out
    }

    fn webp(img: &RgbImage) -> Vec<u8> {
        let mut out = Vec::new();
        WebPEncoder::new_lossless(&mut out)
            .write_image(img.as_raw(), img.width(), img.height(), ExtendedColorType::Rgb8)
            .unwrap();
        out
    }

    /// 300×200: the left and right 50 px columns red, the centre 200×200 blue.
    fn red_sides_blue_centre() -> RgbImage {
        RgbImage::from_fn(300, 200, |x, _| if (50..250).contains(&x) { BLUE } else { RED })
    }

    fn noisy(width: u32, height: u32) -> RgbImage {
        let mut state = 0x1234_5678_u32;
        RgbImage::from_fn(width, height, |_, _| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let [a, b, c, _] = state.to_le_bytes();
            Rgb([a, b, c])
        })
    }

    fn decode_png(bytes: &[u8]) -> RgbaImage {
        assert_eq!(image::guess_format(bytes).unwrap(), ImageFormat::Png);
        image::load_from_memory_with_format(bytes, ImageFormat::Png).unwrap().into_rgba8()
    }

    fn close(actual: Rgba<u8>, expected: Rgb<u8>, tolerance: u8) -> bool {
        actual.0[..3].iter().zip(expected.0).all(|(&a, e)| a.abs_diff(e) <= tolerance)
    }

    fn has_chunk(png: &[u8], name: &[u8; 4]) -> bool {
        png.windows(4).any(|w| w == name)
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFF_u32;
        for &byte in bytes {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }

    /// A valid 1×1 PNG whose IHDR claims `width`×`height` (with a correct CRC).
    fn png_claiming(width: u32, height: u32) -> Vec<u8> {
        let mut bytes = png(&RgbImage::from_pixel(1, 1, BLUE));
        // signature (8) | length (4) | "IHDR" (4) | width (4) | height (4) | 5 more | crc (4)
        assert_eq!(&bytes[12..16], b"IHDR");
        bytes[16..20].copy_from_slice(&width.to_be_bytes());
        bytes[20..24].copy_from_slice(&height.to_be_bytes());
        let crc = crc32(&bytes[12..29]);
        bytes[29..33].copy_from_slice(&crc.to_be_bytes());
        bytes
    }

    #[test]
    fn crc32_matches_the_reference_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn content_types() {
        assert_eq!(ImageKind::Png.content_type(), "image/png");
        assert_eq!(ImageKind::Jpeg.content_type(), "image/jpeg");
        assert_eq!(ImageKind::WebP.content_type(), "image/webp");
        assert_eq!(ImageKind::Gif.content_type(), "image/gif");
    }

    #[test]
    fn inspect_reads_kind_and_dimensions_of_every_accepted_type() {
        let img = red_sides_blue_centre();
        for (bytes, kind) in [
            (png(&img), ImageKind::Png),
            (jpeg(&img, None), ImageKind::Jpeg),
            (gif(&img), ImageKind::Gif),
            (webp(&img), ImageKind::WebP),
        ] {
            let info = inspect(&bytes, MAX_BYTES, MAX_PIXELS).unwrap();
            assert_eq!(info, ImageInfo { kind, width: 300, height: 200 });
        }
    }

    #[test]
    fn png_is_cropped_and_resized_to_both_sizes() {
        let out = process(&png(&red_sides_blue_centre()), MAX_PIXELS).unwrap();
        let large = decode_png(&out.large);
        let small = decode_png(&out.small);
        assert_eq!(large.dimensions(), (256, 256));
        assert_eq!(small.dimensions(), (64, 64));
    }

    #[test]
    fn crop_is_centred() {
        let out = process(&png(&red_sides_blue_centre()), MAX_PIXELS).unwrap();
        for img in [decode_png(&out.large), decode_png(&out.small)] {
            let (w, h) = img.dimensions();
            for (x, y) in [(0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1), (w / 2, h / 2)] {
                let p = *img.get_pixel(x, y);
                assert!(close(p, BLUE, 2), "pixel ({x},{y}) of {w}×{h} is {p:?}");
            }
        }
    }

    #[test]
    fn portrait_crop_is_centred_too() {
        // 100×180: top and bottom 40 rows red, centre 100×100 blue.
        let img = RgbImage::from_fn(100, 180, |_, y| if (40..140).contains(&y) { BLUE } else { RED });
        let out = process(&png(&img), MAX_PIXELS).unwrap();
        let large = decode_png(&out.large);
        for (x, y) in [(0, 0), (255, 0), (0, 255), (255, 255)] {
            assert!(close(*large.get_pixel(x, y), BLUE, 2));
        }
    }

    #[test]
    fn every_accepted_type_is_processed() {
        let img = red_sides_blue_centre();
        for bytes in [png(&img), jpeg(&img, None), gif(&img), webp(&img)] {
            let out = process(&bytes, MAX_PIXELS).unwrap();
            assert_eq!(decode_png(&out.large).dimensions(), (256, 256));
            assert_eq!(decode_png(&out.small).dimensions(), (64, 64));
            let centre = *decode_png(&out.large).get_pixel(128, 128);
            assert!(close(centre, BLUE, 40), "{centre:?}");
        }
    }

    #[test]
    fn transparency_is_kept() {
        let img = RgbaImage::from_pixel(10, 10, Rgba([0, 255, 0, 0]));
        let mut bytes = Vec::new();
        PngEncoder::new(&mut bytes).write_image(img.as_raw(), 10, 10, ExtendedColorType::Rgba8).unwrap();
        let out = process(&bytes, MAX_PIXELS).unwrap();
        assert_eq!(decode_png(&out.large).get_pixel(100, 100).0[3], 0);
    }

    #[test]
    fn text_is_unsupported() {
        let text = b"hello, this is not an image at all\n";
        assert_eq!(inspect(text, MAX_BYTES, MAX_PIXELS), Err(AvatarError::UnsupportedType));
        assert_eq!(process(text, MAX_PIXELS), Err(AvatarError::UnsupportedType));
        assert_eq!(inspect(b"", MAX_BYTES, MAX_PIXELS), Err(AvatarError::UnsupportedType));
        // A recognised format that is not accepted (BMP magic) is unsupported too.
        assert_eq!(
            inspect(b"BM\0\0\0\0\0\0\0\0\0\0\0\0\0\0", MAX_BYTES, MAX_PIXELS),
            Err(AvatarError::UnsupportedType)
        );
    }

    #[test]
    fn type_comes_from_content_not_name() {
        // What a client uploads as "avatar.png" with `Content-Type: image/png` but is a JPEG:
        // only the bytes reach `inspect`, and they say JPEG.
        let dir = std::env::temp_dir().join(format!("parley-avatar-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("avatar.png");
        std::fs::write(&path, jpeg(&red_sides_blue_centre(), None)).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();

        let info = inspect(&bytes, MAX_BYTES, MAX_PIXELS).unwrap();
        assert_eq!(info.kind, ImageKind::Jpeg);
        assert_eq!(info.kind.content_type(), "image/jpeg");
        let out = process(&bytes, MAX_PIXELS).unwrap();
        assert_eq!(decode_png(&out.large).dimensions(), (256, 256));
    }

    #[test]
    fn truncated_png_is_corrupt() {
        let bytes = png(&noisy(300, 200));
        let truncated = &bytes[..bytes.len() / 2];
        // The header is intact, so the cheap check passes...
        assert!(inspect(truncated, MAX_BYTES, MAX_PIXELS).is_ok());
        // ...but decoding fails.
        assert!(
            matches!(process(truncated, MAX_PIXELS), Err(AvatarError::Corrupt(_))),
            "{:?}",
            process(truncated, MAX_PIXELS)
        );
        assert!(matches!(validate(truncated, MAX_BYTES, MAX_PIXELS), Err(AvatarError::Corrupt(_))));
        assert!(validate(&bytes, MAX_BYTES, MAX_PIXELS).is_ok());
        // Cut inside the header: corrupt as well, already at inspect.
        assert!(matches!(inspect(&bytes[..20], MAX_BYTES, MAX_PIXELS), Err(AvatarError::Corrupt(_))));
    }

    #[test]
    fn huge_dimensions_are_refused_before_decoding() {
        let bomb = png_claiming(100_000, 100_000);
        assert!(bomb.len() < 100);
        assert_eq!(inspect(&bomb, MAX_BYTES, MAX_PIXELS), Err(AvatarError::TooManyPixels { max: MAX_PIXELS }));
        assert_eq!(process(&bomb, MAX_PIXELS), Err(AvatarError::TooManyPixels { max: MAX_PIXELS }));
        // Each side within limits, the product not.
        let wide = png_claiming(10_000, 5_000);
        assert_eq!(inspect(&wide, MAX_BYTES, MAX_PIXELS), Err(AvatarError::TooManyPixels { max: MAX_PIXELS }));
        // The limit is inclusive.
        let exact = png(&RgbImage::new(20, 10));
        assert!(inspect(&exact, MAX_BYTES, 200).is_ok());
        assert_eq!(inspect(&exact, MAX_BYTES, 199), Err(AvatarError::TooManyPixels { max: 199 }));
    }

    #[test]
    fn zero_dimensions_are_corrupt() {
        let bytes = png_claiming(0, 10);
        assert!(matches!(inspect(&bytes, MAX_BYTES, MAX_PIXELS), Err(AvatarError::Corrupt(_))));
    }

    #[test]
    fn too_many_bytes_are_refused_first() {
        let bytes = png(&red_sides_blue_centre());
        assert_eq!(
            inspect(&bytes, bytes.len() - 1, MAX_PIXELS),
            Err(AvatarError::TooLarge { max_bytes: bytes.len() - 1 })
        );
        assert!(inspect(&bytes, bytes.len(), MAX_PIXELS).is_ok());
        // The size check comes before anything else, even for garbage.
        assert_eq!(inspect(&[0u8; 10], 9, MAX_PIXELS), Err(AvatarError::TooLarge { max_bytes: 9 }));
    }

    /// A big-endian TIFF/EXIF block holding only an orientation tag.
    fn exif_with_orientation(value: u16) -> Vec<u8> {
        let mut exif = b"MM\0\x2a\0\0\0\x08".to_vec();
        exif.extend_from_slice(&1u16.to_be_bytes()); // one entry
        exif.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
        exif.extend_from_slice(&3u16.to_be_bytes()); // SHORT
        exif.extend_from_slice(&1u32.to_be_bytes()); // count
        exif.extend_from_slice(&value.to_be_bytes());
        exif.extend_from_slice(&[0, 0]); // padding
        exif.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
        exif
    }

    #[test]
    fn metadata_is_dropped_and_exif_orientation_applied() {
        // 300×200, top half red, bottom half blue, tagged "rotate 90° clockwise": shown upright
        // it is 200×300 with the red half on the right.
        let img = RgbImage::from_fn(300, 200, |_, y| if y < 100 { RED } else { BLUE });
        let bytes = jpeg(&img, Some(exif_with_orientation(6)));
        assert!(has_chunk(&bytes, b"Exif"));

        let out = process(&bytes, MAX_PIXELS).unwrap();
        for png in [&out.large, &out.small] {
            assert!(!has_chunk(png, b"eXIf"));
            assert!(!has_chunk(png, b"Exif"));
            assert!(!has_chunk(png, b"MM\0\x2a"));
        }
        let large = decode_png(&out.large);
        assert!(close(*large.get_pixel(20, 128), BLUE, 40), "{:?}", large.get_pixel(20, 128));
        assert!(close(*large.get_pixel(235, 128), RED, 40), "{:?}", large.get_pixel(235, 128));
    }

    #[test]
    fn png_exif_chunk_is_not_copied() {
        let img = red_sides_blue_centre();
        let mut bytes = Vec::new();
        let mut encoder = PngEncoder::new(&mut bytes);
        encoder.set_exif_metadata(exif_with_orientation(1)).unwrap();
        encoder.write_image(img.as_raw(), 300, 200, ExtendedColorType::Rgb8).unwrap();
        assert!(has_chunk(&bytes, b"eXIf"));

        let out = process(&bytes, MAX_PIXELS).unwrap();
        assert!(!has_chunk(&out.large, b"eXIf"));
        assert!(!has_chunk(&out.small, b"eXIf"));
    }

    #[test]
    fn error_messages_are_user_facing() {
        assert_eq!(
            AvatarError::TooLarge { max_bytes: 1024 }.to_string(),
            "the image file is too large (the limit is 1024 bytes)"
        );
        assert_eq!(
            AvatarError::UnsupportedType.to_string(),
            "unsupported image type: upload a PNG, JPEG, WebP or GIF image"
        );
        assert_eq!(
            AvatarError::TooManyPixels { max: 100 }.to_string(),
            "the image has too many pixels (the limit is 100 pixels)"
        );
    }
}
