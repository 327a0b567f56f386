//! Medical images: what an upload is, recognised by its first bytes (never by its name or declared
//! type), and a thumbnail of raster images.

use std::{
    io::Cursor,
    sync::{Arc, LazyLock},
};

use aigronova_platform::Error;
use image::{ImageFormat, ImageReader, Limits};
use tokio::sync::Semaphore;

/// The longest side of a thumbnail, in pixels.
pub const THUMBNAIL_SIDE: u32 = 256;
/// The largest raster image decoded for a thumbnail, per side.
const MAX_SIDE: u32 = 12_000;
/// The most pixels of a raster image decoded for a thumbnail. Compression lets a small upload
/// claim many more (a 12000×12000 PNG of zeros takes 420 KB), so the header decides before any
/// pixel is decoded.
const MAX_PIXELS: u64 = 40_000_000;
/// What a decoder may allocate: the largest image accepted at 8 bytes a pixel (16-bit RGBA), the
/// widest pixels PNG and JPEG decode to.
const MAX_DECODED_BYTES: u64 = MAX_PIXELS * 8;

/// How many uploads are examined at once, at most: one per CPU up to four, which keeps the CPUs
/// busy while bounding the memory decodes take (at most [`MAX_DECODED_BYTES`] each) however many
/// uploads arrive together. Taken before the examination goes to a blocking thread, so that
/// waiting uploads hold no thread.
pub(crate) static EXAMINATIONS: LazyLock<Arc<Semaphore>> = LazyLock::new(|| {
    let slots = std::thread::available_parallelism().map_or(1, usize::from).min(4);
    Arc::new(Semaphore::new(slots))
});

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

/// The bytes before `DICM` in a DICOM file, which PS3.10 leaves free.
const PREAMBLE: usize = 128;

/// Headers that a DICOM preamble must not start with: an executable's (Windows, ELF, Mach-O, a
/// script, WebAssembly), an archive's or a compressed file's (ZIP, gzip, bzip2, xz, Zstandard, LZ4,
/// 7z, RAR, CAB), a PDF's or markup's (HTML, SVG, XML), which would make the file both a DICOM
/// image and something a program would open as another kind of file.
const FOREIGN_PREAMBLES: [&[u8]; 20] = [
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
    b"BZh",
    b"\xfd7zXZ\0",
    b"\x28\xb5\x2f\xfd",
    b"\x04\x22\x4d\x18",
    b"7z\xbc\xaf\x27\x1c",
    b"Rar!\x1a\x07",
    b"MSCF",
    b"%PDF",
    b"<",
];

/// Byte-order marks, UTF-8's and UTF-16's, which readers of text skip before its first character.
const BYTE_ORDER_MARKS: [&[u8]; 3] = [b"\xef\xbb\xbf", b"\xfe\xff", b"\xff\xfe"];

/// Whether the preamble of `bytes` makes them another kind of file too: one of
/// [`FOREIGN_PREAMBLES`] at its start or after the NULs, ASCII whitespace and byte-order marks
/// that readers skip, or `%PDF` anywhere in it, since PDF readers look for that in the first
/// 1024 bytes.
fn foreign_preamble(bytes: &[u8]) -> bool {
    let preamble = &bytes[..bytes.len().min(PREAMBLE)];
    let mut blank = 0;
    loop {
        let rest = &preamble[blank..];
        if let Some(mark) = BYTE_ORDER_MARKS.into_iter().find(|mark| rest.starts_with(mark)) {
            blank += mark.len();
        } else if rest.first().is_some_and(|byte| *byte == 0 || byte.is_ascii_whitespace()) {
            blank += 1;
        } else {
            break;
        }
    }
    // From each blank byte too, for a header that starts with one (WebAssembly's NUL).
    (0..=blank).any(|at| FOREIGN_PREAMBLES.iter().any(|header| bytes[at..].starts_with(header)))
        || preamble.windows(4).any(|window| window == b"%PDF")
}

/// How far from its end ZIP readers look for a file's end-of-central-directory record: the
/// record's 22 bytes, its longest comment, and 1 KiB for bytes after it that some tolerate.
const ZIP_TAIL: usize = 22 + 65_535 + 1024;

/// Whether `bytes` end with what ZIP readers take for an archive: an end-of-central-directory
/// record in their last [`ZIP_TAIL`] bytes that points to a central directory (`PK\x01\x02` where
/// its size or its offset says), or that a ZIP64 locator precedes (whatever its size says). Readers look for that record
/// from the end, tolerate bytes before the archive and after the record, and extract what it
/// points to even when its comment length runs past the end, so that length is not checked. The
/// signature alone, which compressed pixel data holds by chance about once in 30,000 files, is
/// not an archive.
fn ends_with_zip(bytes: &[u8]) -> bool {
    const RECORD: usize = 22;
    let directory_at = |start: usize| bytes.get(start..start + 4) == Some(b"PK\x01\x02".as_slice());
    let earliest = bytes.len().saturating_sub(ZIP_TAIL);
    (earliest..bytes.len().saturating_sub(RECORD - 1)).rev().any(|at| {
        let Some(record) = bytes.get(at..at + RECORD).filter(|record| record.starts_with(b"PK\x05\x06")) else {
            return false;
        };
        let size = u32::from_le_bytes([record[12], record[13], record[14], record[15]]) as usize;
        let offset = u32::from_le_bytes([record[16], record[17], record[18], record[19]]) as usize;
        // ZIP64 puts a locator right before the record, and readers follow it whatever the
        // record's own size and offset say.
        let zip64 = at.checked_sub(20).is_some_and(|locator| bytes[locator..].starts_with(b"PK\x06\x07"));
        zip64 || size > 0 && (at.checked_sub(size).is_some_and(directory_at) || directory_at(offset))
    })
}

/// Value representations whose length takes 4 bytes after 2 reserved ones (PS3.5 7.1.2).
const LONG_VRS: [&[u8; 2]; 13] =
    [b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"];

/// Checks what follows `DICM` is a DICOM file's meta information (PS3.10 7.1): group 0002
/// elements in explicit VR little endian, one of them the transfer syntax's UID; that the
/// preamble is not another format's header; and that no ZIP archive ends the file. Returns what
/// is wrong.
fn check_dicom(bytes: &[u8]) -> Result<(), &'static str> {
    if foreign_preamble(bytes) {
        return Err("its preamble is another format's header (an executable, an archive, a PDF or markup)");
    }
    if ends_with_zip(bytes) {
        return Err("it ends with a ZIP archive");
    }
    let truncated = "its file meta information is cut short";
    let (mut at, mut transfer_syntax) = (PREAMBLE + 4, None);
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

/// Refuses a raster image of `width`×`height` pixels, read from its header, that is larger than
/// what is decoded for a thumbnail.
fn check_size(width: u32, height: u32) -> Result<(), Error> {
    let refused = |limit: String| {
        Error::invalid("body", format!("is an image of {width}×{height} pixels: at most {limit} are accepted"))
    };
    if width > MAX_SIDE || height > MAX_SIDE {
        return Err(refused(format!("{MAX_SIDE} pixels a side")));
    }
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(refused(format!("{} megapixels", MAX_PIXELS / 1_000_000)));
    }
    Ok(())
}

/// Recognises `bytes` and, for a raster image, decodes it (within size limits) for its
/// dimensions and thumbnail. Anything else is refused, naming the `body` field.
///
/// Call it on a blocking thread, holding a permit of [`EXAMINATIONS`].
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
    let reader = |limits: Limits| {
        let mut opened = ImageReader::with_format(Cursor::new(bytes), format);
        opened.limits(limits);
        opened
    };
    let undecodable = |error: image::ImageError| {
        Error::invalid("body", format!("starts as {} but does not decode as one: {error}", media_type.as_str()))
    };
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    // The header alone first: an image too large is refused, naming its size, before any pixel is decoded.
    let (width, height) = reader(limits.clone()).into_dimensions().map_err(undecodable)?;
    check_size(width, height)?;
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    let decoded = reader(limits).decode().map_err(undecodable)?;
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

    /// Bytes that readers skip before a header: NULs, ASCII whitespace and byte-order marks.
    const BLANKS: [&[u8]; 6] =
        [b" \r\n\t", b"\0\0\0", b"\xef\xbb\xbf", b"\xfe\xff", b"\xff\xfe\0\0", b"\0\xef\xbb\xbf\n"];

    /// The fixture with its preamble starting with `start`.
    fn with_preamble(start: &[u8]) -> Vec<u8> {
        let mut bytes = DICOM.to_vec();
        bytes[..start.len()].copy_from_slice(start);
        bytes
    }

    #[test]
    fn a_preamble_of_zeros_or_a_tiff_header_is_accepted() {
        // A TIFF header makes a dual-personality DICOM and TIFF file, which PS3.10 allows.
        for start in [b"".as_slice(), b"II*\0\x08\0\0\0", b"MM\0*\0\0\0\x08", b"\0\0\0\0II*\0"] {
            let examined = examine(&with_preamble(start)).unwrap_or_else(|error| panic!("{start:?}: {error:?}"));
            assert_eq!(examined.media_type, MediaType::Dicom);
        }
    }

    #[test]
    fn a_preamble_hiding_another_format_after_blank_bytes_is_refused() {
        let polyglots: [&[u8]; 13] = [
            b" \n<html><script>alert(1)</script>",
            b"\t<svg onload=alert(1)>",
            b"\xef\xbb\xbf<html>",
            b"\xef\xbb\xbf#!/bin/sh\n",
            b"\xff\xfe<\0h\0t\0m\0l\0>\0",
            b"\0\0\0%PDF-1.4",
            b"II*\0\x08\0\0\0 trailing %PDF-1.4",
            b"\0\0\0\0asm\x01\0\0\0",
            b"BZh91AY&SY",
            b"\xfd7zXZ\0",
            b"\x28\xb5\x2f\xfd",
            b"\r\n7z\xbc\xaf\x27\x1c",
            b"MSCF\0\0\0\0",
        ];
        for start in polyglots {
            match examine(&with_preamble(start)) {
                Err(Error::InvalidArgument { field, reason }) => {
                    assert_eq!(field, "body");
                    assert!(reason.contains("another format's header"), "{start:?}: {reason}");
                }
                other => panic!("{start:?} accepted or refused otherwise: {other:?}"),
            }
        }
        // `%PDF` at the end of the preamble, right before `DICM`, too.
        let mut late = DICOM.to_vec();
        late[124..128].copy_from_slice(b"%PDF");
        let reason = match examine(&late) {
            Err(Error::InvalidArgument { reason, .. }) => reason,
            other => panic!("accepted or refused otherwise: {other:?}"),
        };
        assert!(reason.contains("another format's header"), "{reason}");
    }

    /// CRC-32 as PNG chunks carry it (ISO 3309, reflected, polynomial 0xEDB88320).
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0_u32;
        for byte in bytes {
            crc ^= u32::from(*byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }

    /// A one-pixel PNG whose header claims `width`×`height` pixels, with the header's CRC fixed.
    fn png_claiming(width: u32, height: u32) -> Vec<u8> {
        let mut bytes = png(1, 1);
        // After the signature, IHDR: its length, type, width, height, 5 more bytes, then its CRC.
        assert_eq!(&bytes[12..16], b"IHDR");
        bytes[16..20].copy_from_slice(&width.to_be_bytes());
        bytes[20..24].copy_from_slice(&height.to_be_bytes());
        let crc = crc32(&bytes[12..29]);
        bytes[29..33].copy_from_slice(&crc.to_be_bytes());
        bytes
    }

    #[test]
    fn an_image_too_large_to_decode_is_refused_by_its_header() {
        assert_eq!(png_claiming(1, 1), png(1, 1), "the CRC is the encoder's");
        let refusal = |width: u32, height: u32| match examine(&png_claiming(width, height)) {
            Err(Error::InvalidArgument { field, reason }) if field == "body" => reason,
            other => panic!("{width}×{height} accepted or refused otherwise: {other:?}"),
        };
        assert_eq!(refusal(12_000, 12_000), "is an image of 12000×12000 pixels: at most 40 megapixels are accepted");
        assert_eq!(refusal(7_000, 6_000), "is an image of 7000×6000 pixels: at most 40 megapixels are accepted");
        assert_eq!(refusal(12_001, 1), "is an image of 12001×1 pixels: at most 12000 pixels a side are accepted");
        assert_eq!(refusal(1, 65_535), "is an image of 1×65535 pixels: at most 12000 pixels a side are accepted");
        assert!(check_size(MAX_SIDE, 3_333).is_ok());
        assert!(check_size(8_000, 5_000).is_ok());
        assert!(check_size(MAX_SIDE, 3_334).is_err());
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
            refused(&with_preamble(header), "another format's header");
            for blank in BLANKS {
                refused(&with_preamble(&[blank, header].concat()), "another format's header");
            }
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
        // A ZIP64 locator before a record whose own size is real, or 0: readers follow the locator.
        for size in [46_u32, 0] {
            let mut zip64 = DICOM.to_vec();
            zip64.extend_from_slice(b"PK\x06\x07");
            zip64.extend_from_slice(&[0; 16]);
            zip64.extend_from_slice(b"PK\x05\x06\0\0\0\0\x01\0\x01\0");
            zip64.extend_from_slice(&size.to_le_bytes());
            zip64.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0, 0]);
            refused(&zip64, "ends with a ZIP archive");
        }
        // A record whose comment would run past the end: ZIP readers extract the archive all the same.
        let mut overlong = DICOM.to_vec();
        overlong.extend_from_slice(&directory);
        overlong.extend_from_slice(b"PK\x05\x06\0\0\0\0\x01\0\x01\0");
        overlong.extend_from_slice(&u32::try_from(directory.len()).unwrap().to_le_bytes());
        overlong.extend_from_slice(&[0, 0, 0, 0]);
        overlong.extend_from_slice(&500_u16.to_le_bytes());
        refused(&overlong, "ends with a ZIP archive");
        // Either signature alone, as compressed pixel data may hold by chance, is no archive.
        for signature in [b"PK\x05\x06", b"PK\x06\x07"] {
            let mut signed = DICOM.to_vec();
            signed.extend_from_slice(signature);
            signed.extend_from_slice(&[0x10; 30]);
            assert!(check_dicom(&signed).is_ok(), "{signature:?} alone");
        }
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
