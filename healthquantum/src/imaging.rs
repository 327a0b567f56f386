//! Medical images: what an upload is, recognised by its first bytes (never by its name or declared
//! type), and a thumbnail of raster images.

use std::io::Cursor;

use aigronova_platform::Error;
use image::{ImageFormat, ImageReader, Limits};

/// The longest side of a thumbnail, in pixels.
pub const THUMBNAIL_SIDE: u32 = 256;
/// The largest raster image decoded for a thumbnail, per side.
const MAX_SIDE: u32 = 12_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaType {
    Png,
    Jpeg,
    Dicom,
}

impl MediaType {
    /// The type of `bytes` by their signature: PNG's 8-byte signature, JPEG's SOI marker and the
    /// `DICM` prefix after DICOM's 128-byte preamble.
    pub fn detect(bytes: &[u8]) -> Option<Self> {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Self::Png)
        } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(Self::Jpeg)
        } else if bytes.len() > 132 && &bytes[128..132] == b"DICM" {
            Some(Self::Dicom)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Jpeg => "image/jpeg",
            Self::Dicom => "application/dicom",
        }
    }
}

/// What an upload turned out to be.
#[derive(Debug)]
pub struct Examined {
    pub media_type: MediaType,
    pub width: u32,
    pub height: u32,
    /// A PNG thumbnail, for raster images.
    pub thumbnail: Option<Vec<u8>>,
}

/// Recognises `bytes` and, for a raster image, decodes it (within size limits) for its
/// dimensions and thumbnail. Anything else is refused, naming the `body` field.
pub fn examine(bytes: &[u8]) -> Result<Examined, Error> {
    let media_type = MediaType::detect(bytes)
        .ok_or_else(|| Error::invalid("body", "is not a PNG, JPEG or DICOM image (judged by its content)"))?;
    let format = match media_type {
        MediaType::Png => ImageFormat::Png,
        MediaType::Jpeg => ImageFormat::Jpeg,
        MediaType::Dicom => return Ok(Examined { media_type, width: 0, height: 0, thumbnail: None }),
    };
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(512 * 1024 * 1024);
    reader.limits(limits);
    let decoded = reader.decode().map_err(|error| {
        Error::invalid("body", format!("starts as {} but does not decode as one: {error}", media_type.as_str()))
    })?;
    let mut thumbnail = Vec::new();
    // A thumbnail is never larger than its image.
    let small = decoded.width() <= THUMBNAIL_SIDE && decoded.height() <= THUMBNAIL_SIDE;
    let thumbnailed = if small { decoded.clone() } else { decoded.thumbnail(THUMBNAIL_SIDE, THUMBNAIL_SIDE) };
    thumbnailed
        .write_to(&mut Cursor::new(&mut thumbnail), ImageFormat::Png)
        .map_err(|error| Error::invalid("body", format!("cannot make a thumbnail: {error}")))?;
    Ok(Examined { media_type, width: decoded.width(), height: decoded.height(), thumbnail: Some(thumbnail) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let mut bytes = Vec::new();
        image::RgbImage::from_pixel(width, height, image::Rgb([200, 10, 10]))
            .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
            .unwrap();
        bytes
    }

    #[test]
    fn images_are_recognised_by_content_and_get_a_thumbnail() {
        let examined = examine(&png(800, 400)).unwrap();
        assert_eq!((examined.media_type, examined.width, examined.height), (MediaType::Png, 800, 400));
        let thumbnail = image::load_from_memory(&examined.thumbnail.unwrap()).unwrap();
        assert_eq!((thumbnail.width(), thumbnail.height()), (256, 128));
        let small = image::load_from_memory(&examine(&png(8, 6)).unwrap().thumbnail.unwrap()).unwrap();
        assert_eq!((small.width(), small.height()), (8, 6), "never enlarged");

        let mut dicom = vec![0u8; 128];
        dicom.extend_from_slice(b"DICM\x02\x00\x00\x00");
        let examined = examine(&dicom).unwrap();
        assert_eq!((examined.media_type, examined.thumbnail.is_none()), (MediaType::Dicom, true));
    }

    #[test]
    fn an_executable_or_a_truncated_image_is_refused() {
        for bytes in [b"\x7fELF\x02\x01\x01".to_vec(), b"MZ\x90\x00".to_vec(), Vec::new(), png(10, 10)[..20].to_vec()] {
            assert!(matches!(examine(&bytes), Err(Error::InvalidArgument { ref field, .. }) if field == "body"));
        }
    }
}
