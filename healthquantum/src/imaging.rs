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

/// Headers that a DICOM preamble, which PS3.10 leaves free, must not start with: an executable's
/// (Windows, ELF, Mach-O, a script, WebAssembly), an archive's or a compressed file's (ZIP, gzip,
/// 7z, RAR), a PDF's or markup's (HTML, SVG, XML), which would make the file both a DICOM image
/// and something a program would open as another kind of file.
const FOREIGN_PREAMBLES: [&[u8]; 15] = [
    b"MZ",
    b"\x7fELF",
    b"#!",
    b"\xca\xfe\xba\xbe",
    b"\xfe\xed\xfa\xce",
    b"\xfe\xed\xfa\xcf",
    b"\xce\xfa\xed\xfe",
    b"\xcf\xfa\xed\xfe",
    b"\0asm",
    b"PK\x03\x04",
    b"\x1f\x8b",
    b"7z\xbc\xaf\x27\x1c",
    b"Rar!\x1a\x07",
    b"%PDF",
    b"<",
];

/// Whether `bytes` end with a ZIP archive: an end-of-central-directory record in the last 64 KiB
/// whose comment fits in the file, right after a central directory that starts with its own
/// signature. ZIP readers look for that record from the end, and tolerate bytes before the archive
/// and after the record, so it makes a polyglot whatever the file starts with; the central
/// directory's signature keeps pixel data that happens to hold the record's from matching.
fn ends_with_zip(bytes: &[u8]) -> bool {
    const RECORD: usize = 22;
    let earliest = bytes.len().saturating_sub(RECORD + usize::from(u16::MAX) + 1024);
    (earliest..bytes.len().saturating_sub(RECORD - 1)).rev().any(|at| {
        let Some(record) = bytes.get(at..at + RECORD).filter(|record| record.starts_with(b"PK\x05\x06")) else {
            return false;
        };
        let comment = usize::from(u16::from_le_bytes([record[20], record[21]]));
        let directory = u32::from_le_bytes([record[12], record[13], record[14], record[15]]) as usize;
        // ZIP64 gives the directory's size as 0xFFFFFFFF and puts a locator right before the record.
        let zip64 = directory == 0xFFFF_FFFF
            && at.checked_sub(20).is_some_and(|locator| bytes[locator..].starts_with(b"PK\x06\x07"));
        at + RECORD + comment <= bytes.len()
            && (zip64
                || directory > 0
                    && at.checked_sub(directory).and_then(|start| bytes.get(start..start + 4)) == Some(b"PK\x01\x02"))
    })
}

/// Value representations whose length takes 4 bytes after 2 reserved ones (PS3.5 7.1.2).
const LONG_VRS: [&[u8; 2]; 13] =
    [b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"];

/// Checks what follows `DICM` is a DICOM file's meta information (PS3.10 7.1): group 0002
/// elements in explicit VR little endian, one of them the transfer syntax's UID; and that the
/// preamble is not another format's header. Returns what is wrong.
fn check_dicom(bytes: &[u8]) -> Result<(), &'static str> {
    if FOREIGN_PREAMBLES.iter().any(|header| bytes.starts_with(header)) {
        return Err("its preamble is another format's header (an executable, an archive, a PDF or markup)");
    }
    if ends_with_zip(bytes) {
        return Err("it ends with a ZIP archive");
    }
    let truncated = "its file meta information is cut short";
    let (mut at, mut transfer_syntax) = (132_usize, None);
    loop {
        let Some(header) = bytes.get(at..at + 8) else {
            if at < bytes.len() {
                return Err(truncated);
            }
            break;
        };
        if header[..2] != [0x02, 0x00] {
            break;
        }
        let vr = &header[4..6];
        if !vr.iter().all(u8::is_ascii_uppercase) {
            return Err("its file meta information is not in explicit VR little endian");
        }
        let (length, value_at) = if LONG_VRS.iter().any(|long| long[..] == *vr) {
            let length = bytes.get(at + 8..at + 12).ok_or(truncated)?;
            (u32::from_le_bytes(length.try_into().expect("4 bytes")) as usize, at + 12)
        } else {
            (usize::from(u16::from_le_bytes([header[6], header[7]])), at + 8)
        };
        let end = value_at.checked_add(length).ok_or(truncated)?;
        let value = bytes.get(value_at..end).ok_or(truncated)?;
        if header[2..4] == [0x10, 0x00] {
            transfer_syntax = Some(value);
        }
        at = end;
    }
    let uid = transfer_syntax.ok_or("its file meta information names no transfer syntax")?;
    let uid = uid.strip_suffix(b"\0").unwrap_or(uid);
    if uid.is_empty() || !uid.iter().all(|byte| byte.is_ascii_digit() || *byte == b'.') {
        return Err("its transfer syntax is not a UID");
    }
    Ok(())
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
        MediaType::Dicom => {
            check_dicom(bytes).map_err(|problem| Error::invalid("body", format!("starts as DICOM but {problem}")))?;
            return Ok(Examined { media_type, width: 0, height: 0, thumbnail: None });
        }
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

        let examined = examine(DICOM).unwrap();
        assert_eq!((examined.media_type, examined.thumbnail.is_none()), (MediaType::Dicom, true));
    }

    /// A DICOM file: an empty preamble, `DICM`, the file meta information and a one-pixel data set.
    const DICOM: &[u8] = include_bytes!("../../tests/fixtures/minimal.dcm");

    #[test]
    fn a_dicom_file_needs_its_meta_information_and_a_preamble_that_is_no_program() {
        let refused = |bytes: &[u8], expected: &str| match examine(bytes) {
            Err(Error::InvalidArgument { field, reason }) => {
                assert_eq!(field, "body");
                assert!(reason.contains(expected), "{reason}");
            }
            other => panic!("accepted or refused otherwise: {other:?}"),
        };
        for header in FOREIGN_PREAMBLES {
            let mut polyglot = DICOM.to_vec();
            polyglot[..header.len()].copy_from_slice(header);
            refused(&polyglot, "another format's header");
        }
        // A ZIP archive appended, found from the end as ZIP readers do, with a byte after it too.
        let mut zipped = DICOM.to_vec();
        let directory = [b"PK\x01\x02".as_slice(), &[0; 42]].concat();
        zipped.extend_from_slice(&directory);
        zipped.extend_from_slice(b"PK\x05\x06\0\0\0\0\x01\0\x01\0");
        zipped.extend_from_slice(&u32::try_from(directory.len()).unwrap().to_le_bytes());
        zipped.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        refused(&zipped, "ends with a ZIP archive");
        zipped.push(b'x');
        refused(&zipped, "ends with a ZIP archive");
        // ZIP64: the directory's size is in a record the locator before the end record points to.
        let mut zip64 = DICOM.to_vec();
        zip64.extend_from_slice(b"PK\x06\x07");
        zip64.extend_from_slice(&[0; 16]);
        zip64.extend_from_slice(b"PK\x05\x06\0\0\0\0\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\0\0");
        refused(&zip64, "ends with a ZIP archive");
        // The record's signature alone, without a central directory before it, is pixel data.
        let mut lookalike = DICOM.to_vec();
        lookalike.extend_from_slice(b"PK\x05\x06\0\0\0\0\0\0\0\0\x10\0\0\0\0\0\0\0\0\0");
        assert!(examine(&lookalike).is_ok());
        // `DICM` and anything after it.
        let mut junk = vec![0u8; 128];
        junk.extend_from_slice(b"DICM");
        junk.extend_from_slice(&[0xCC; 200]);
        refused(&junk, "names no transfer syntax");
        refused(&DICOM[..150], "cut short");
        let mut implicit = DICOM.to_vec();
        implicit[136..138].copy_from_slice(&[0x04, 0x00]);
        refused(&implicit, "explicit VR");
        let mut no_uid = DICOM.to_vec();
        let syntax = DICOM.windows(19).position(|window| window == b"1.2.840.10008.1.2.1").unwrap();
        no_uid[syntax..syntax + 4].copy_from_slice(b"abcd");
        refused(&no_uid, "not a UID");
    }

    #[test]
    fn an_executable_or_a_truncated_image_is_refused() {
        for bytes in [b"\x7fELF\x02\x01\x01".to_vec(), b"MZ\x90\x00".to_vec(), Vec::new(), png(10, 10)[..20].to_vec()] {
            assert!(matches!(examine(&bytes), Err(Error::InvalidArgument { ref field, .. }) if field == "body"));
        }
    }
}
