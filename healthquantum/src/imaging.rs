//! Medical images: what an upload is, recognised by its first bytes (never by its name), checked
//! against the type it was declared as, and a thumbnail of raster images.

use std::{
    fmt,
    io::Cursor,
    sync::{Arc, LazyLock},
    time::Duration,
};

use aigronova_platform::Error;
use image::{ImageDecoder, ImageFormat, ImageReader, Limits};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The longest side of a thumbnail, in pixels.
pub const THUMBNAIL_SIDE: u32 = 256;
/// The largest raster image decoded for a thumbnail, per side.
const MAX_SIDE: u32 = 12_000;
/// The most pixels of a raster image decoded for a thumbnail. Compression lets a small upload
/// claim many more (a 12000×12000 PNG of zeros takes 420 KB), so the header decides before any
/// pixel is decoded.
const MAX_PIXELS: u64 = 40_000_000;
/// The most bytes a raster image is decoded to, and what a decoder may allocate: the largest image
/// accepted at 4 bytes a pixel (8-bit RGBA). A PNG of wider pixels (16-bit channels, which decode
/// to up to 8 bytes a pixel) is accepted with fewer pixels, so that a small upload cannot claim
/// twice the memory of any other.
const MAX_DECODED_BYTES: u64 = MAX_PIXELS * 4;

/// How many uploads are examined at once, at most: one per CPU up to four, which keeps the CPUs
/// busy while bounding the memory decodes take (at most [`MAX_DECODED_BYTES`] each) however many
/// uploads arrive together. Taken before the examination goes to a blocking thread, so that
/// waiting uploads hold no thread.
pub(crate) static EXAMINATIONS: LazyLock<Arc<Semaphore>> = LazyLock::new(|| {
    let slots = std::thread::available_parallelism().map_or(1, usize::from).min(4);
    Arc::new(Semaphore::new(slots))
});

/// How long an upload waits for a slot of [`EXAMINATIONS`] before it is refused: well within the
/// gateway's deadline (10 s by default), so that a burst of uploads slow to decode gets a quick
/// "retry later" rather than running out the deadline, which the gateway counts as a failure of
/// the service.
pub(crate) const EXAMINATION_WAIT: Duration = Duration::from_secs(2);

/// A slot of `slots` to examine an upload in, waited for at most `wait`; after that the upload is
/// refused with `resource_exhausted` (HTTP 429), which says to retry and is no failure of the
/// service.
pub(crate) async fn examination_slot(slots: &Arc<Semaphore>, wait: Duration) -> Result<OwnedSemaphorePermit, Error> {
    match tokio::time::timeout(wait, slots.clone().acquire_owned()).await {
        Ok(permit) => Ok(permit.expect("the semaphore is never closed")),
        Err(_) => Err(Error::Refused(Box::new(aigronova_platform::error::retry_later(
            2,
            "too many images are being examined; retry in a few seconds",
        )))),
    }
}

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
        } else if bytes.get(128..132) == Some(b"DICM") {
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

    /// What bytes of this type are, in a sentence: "a PNG image".
    fn described(self) -> &'static str {
        match self {
            Self::Png => "a PNG image",
            Self::Jpeg => "a JPEG image",
            Self::Dicom => "a DICOM file",
        }
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The media type that leaves the type of an upload to its content.
pub const UNSPECIFIED: &str = "application/octet-stream";

/// What an upload's `Content-Type` declares it to be: one of the [`MediaType`]s, or `None` for
/// [`UNSPECIFIED`]. Parameters are ignored and the type's case too; any other type is refused.
pub fn declared_type(content_type: &str) -> Result<Option<MediaType>, Error> {
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    let accepted = "send image/png, image/jpeg or application/dicom, or application/octet-stream to have the \
                    content decide";
    match essence.as_str() {
        "image/png" => Ok(Some(MediaType::Png)),
        // `image/jpg` is no registered type, but many clients send it for a JPEG.
        "image/jpeg" | "image/jpg" => Ok(Some(MediaType::Jpeg)),
        "application/dicom" => Ok(Some(MediaType::Dicom)),
        UNSPECIFIED => Ok(None),
        "" => Err(Error::invalid("Content-Type", format!("is required: {accepted}"))),
        _ => Err(Error::invalid("Content-Type", format!("{essence} is not a type of image accepted here: {accepted}"))),
    }
}

/// The type of `bytes`, judged by their content, which must be the `declared` one when there is
/// one. Refuses bytes of no known type (naming the `body`) and a declared type the bytes are not
/// (naming the `Content-Type`).
pub fn recognise(bytes: &[u8], declared: Option<MediaType>) -> Result<MediaType, Error> {
    let media_type = MediaType::detect(bytes).ok_or_else(|| unrecognised(bytes))?;
    match declared {
        Some(declared) if declared != media_type => {
            // Named by kind, not by the type's name, which the client may have written otherwise (`image/jpg`).
            Err(Error::invalid(
                "Content-Type",
                format!("the body is {}, not {} as it says", media_type.described(), declared.described()),
            ))
        }
        _ => Ok(media_type),
    }
}

/// The refusal of bytes of no known type; one that reads as a DICOM data set without the file
/// header (its magic `DICM` first; a first element in explicit VR of any even group up to the
/// pixel data's, its value representation one of DICOM's and its length undefined or within the
/// bytes; or a first element of group 0002 or 0008 in implicit VR, with an even length that
/// fits) is told so.
fn unrecognised(bytes: &[u8]) -> Error {
    let first_group = bytes.len() >= 8 && matches!(bytes[..2], [0x02, 0x00] | [0x08, 0x00]);
    let explicit = bytes.len() >= 8 && {
        let group = u16::from_le_bytes([bytes[0], bytes[1]]);
        let vr = &bytes[4..6];
        let fits = if LONG_VRS.iter().any(|long| long[..] == *vr) {
            bytes.len() >= 12 && bytes[6..8] == [0, 0] && {
                let length = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
                length == UNDEFINED_LENGTH || usize::try_from(length).is_ok_and(|length| length <= bytes.len() - 12)
            }
        } else {
            usize::from(u16::from_le_bytes([bytes[6], bytes[7]])) <= bytes.len() - 8
        };
        (0x0002..=0x7FE0).contains(&group)
            && group.is_multiple_of(2)
            && VRS.iter().any(|known| known[..] == *vr)
            && fits
    };
    let implicit = first_group && bytes[3] == 0 && {
        let length = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
        length.is_multiple_of(2) && length <= 1024 && length <= bytes.len() - 8
    };
    let headerless_dicom = bytes.starts_with(b"DICM") || explicit || implicit;
    if headerless_dicom {
        return Error::invalid(
            "body",
            "reads as a DICOM data set without the file header a DICOM file begins with (a 128-byte preamble, \
             then DICM and the file meta information, PS3.10): save it as a DICOM file",
        );
    }
    Error::invalid("body", "is not a PNG, JPEG or DICOM image (judged by its content)")
}

/// The bytes before `DICM` in a DICOM file, which PS3.10 leaves free.
const PREAMBLE: usize = 128;

/// Headers that a DICOM preamble must not start with: an executable's or a program's (Windows,
/// ELF, Mach-O and Java classes, a script, WebAssembly, Android DEX, Lua bytecode, Flash, a
/// Windows shortcut), an archive's or a compressed file's (ZIP, gzip, bzip2, xz, Zstandard, LZ4,
/// 7z, RAR, CAB, ar and Debian packages, RPM, XAR), a document's (PDF, PostScript, RTF, OLE2
/// compound files such as Office documents and installers, compiled HTML help) or markup's (HTML,
/// SVG, XML), which would make the file both a DICOM image and something a program would open as
/// another kind of file.
const FOREIGN_PREAMBLES: [&[u8]; 33] = [
    b"MZ",
    b"\x7fELF",
    b"#!",
    b"\xca\xfe\xba\xbe",
    b"\xfe\xed\xfa\xce",
    b"\xfe\xed\xfa\xcf",
    b"\xce\xfa\xed\xfe",
    b"\xcf\xfa\xed\xfe",
    b"\0asm",
    b"dex\n",
    b"\x1bLua",
    b"FWS",
    b"CWS",
    b"ZWS",
    b"L\0\0\0\x01\x14\x02\0",
    b"PK\x03\x04",
    b"\x1f\x8b",
    b"BZh",
    b"\xfd7zXZ\0",
    b"\x28\xb5\x2f\xfd",
    b"\x04\x22\x4d\x18",
    b"7z\xbc\xaf\x27\x1c",
    b"Rar!\x1a\x07",
    b"MSCF",
    b"!<arch>\n",
    b"\xed\xab\xee\xdb",
    b"xar!",
    b"%PDF",
    b"%!PS",
    b"{\\rtf",
    b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
    b"ITSF",
    b"<",
];

/// Byte-order marks, UTF-8's and UTF-16's, which readers of text skip before its first character.
const BYTE_ORDER_MARKS: [&[u8]; 3] = [b"\xef\xbb\xbf", b"\xfe\xff", b"\xff\xfe"];

/// Whether the start of `bytes` (a DICOM preamble, or what follows an image's end) makes them
/// another kind of file too: one of [`FOREIGN_PREAMBLES`] at its start or after the NULs, ASCII
/// whitespace and byte-order marks that readers skip, or `%PDF` anywhere in its first
/// [`PREAMBLE`] bytes, since PDF readers look for that in the first 1024 bytes.
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

/// Refuses an image, of any type, that is also a document or an archive: image readers ignore
/// what does not belong to the image, while PDF readers look for their header in the first 1024
/// bytes and ZIP readers for the archive from the end.
fn also_another_kind(bytes: &[u8]) -> Result<(), &'static str> {
    if holds_pdf_header(bytes) {
        return Err("it holds a PDF header in its first 1024 bytes");
    }
    if ends_with_zip(bytes) {
        return Err("it ends with a ZIP archive");
    }
    Ok(())
}

/// Whether `byte` is padding: a NUL or ASCII whitespace.
fn is_padding(byte: u8) -> bool {
    byte == 0 || byte.is_ascii_whitespace()
}

/// Pictures a JPEG may have after its own, as cameras store a second one (a depth map, a preview).
const MAX_TRAILING_PICTURES: usize = 4;

/// Checks what follows an image's end, which readers do not read, so that nothing travels as the
/// image that is not one: padding (NULs, ASCII whitespace) only, and after a JPEG, whole JPEG
/// pictures too (at most [`MAX_TRAILING_PICTURES`]).
fn check_trailer(media_type: MediaType, trailer: &[u8]) -> Result<(), &'static str> {
    let mut rest = trailer;
    for _ in 0..=MAX_TRAILING_PICTURES {
        rest = &rest[rest.iter().take_while(|byte| is_padding(**byte)).count()..];
        if rest.is_empty() {
            return Ok(());
        }
        if media_type != MediaType::Jpeg {
            return Err("has data after its IEND chunk that is not padding: send the image alone");
        }
        if !rest.starts_with(&[0xFF, 0xD8]) {
            return Err(
                "has data after its end that is neither padding nor another JPEG picture: send the image alone",
            );
        }
        if crate::jpeg::claimed(rest).is_some_and(|claimed| check_size(claimed.width, claimed.height).is_err()) {
            return Err("has a picture after its end larger than the images accepted here");
        }
        let end =
            crate::jpeg::check_strict(rest).map_err(|_| "has a picture after its end that is not a whole JPEG")?;
        rest = &rest[end..];
    }
    Err("has more than 4 pictures after its own")
}

/// What a PNG's chunks say of its image: its header's data and its compressed image data, in
/// the IDAT chunks that hold it.
struct PngChunks<'a> {
    header: Option<&'a [u8]>,
    /// Whether it has a `tRNS` chunk, which decodes to an alpha channel.
    transparency: bool,
    data: Vec<&'a [u8]>,
    /// Where the IEND chunk ends: what follows is not the image's.
    end: usize,
}

/// Walks a PNG's chunks, from the one after its signature to IEND: each must be whole, its type
/// four letters and its CRC right, and IEND empty. The decoder checks the CRCs of the chunks it
/// reads, but passes over an ancillary chunk whose CRC is wrong and stops at the image's last
/// data, so that a file cut before its IEND chunk, or damaged after its pixels, would be kept as
/// it came.
fn png_chunks(bytes: &[u8]) -> Result<PngChunks<'_>, String> {
    let mut chunks = PngChunks { header: None, transparency: false, data: Vec::new(), end: 0 };
    let mut at = 8;
    // Whether the chunk before was an IDAT: the image data is in consecutive IDAT chunks.
    let mut in_data = false;
    let mut profile_seen = false;
    loop {
        let Some(header) = bytes.get(at..at + 8) else {
            return Err("is cut short: it has no IEND chunk".to_owned());
        };
        let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let kind = &header[4..8];
        if !kind.iter().all(u8::is_ascii_alphabetic) {
            return Err("is damaged: a chunk's type is not four letters".to_owned());
        }
        let name = String::from_utf8_lossy(kind);
        // PNG limits a chunk's length to 2^31 - 1 bytes.
        let end = usize::try_from(length).ok().filter(|_| length < 1 << 31).map(|length| at + 8 + length);
        // The CRC covers the chunk's type and data.
        let Some((covered, crc, next)) =
            end.and_then(|end| Some((bytes.get(at + 4..end)?, bytes.get(end..end + 4)?, end + 4)))
        else {
            return Err(format!("is cut short: its {name} chunk is not whole"));
        };
        if crc32fast::hash(covered).to_be_bytes() != crc {
            return Err(format!("is damaged: its {name} chunk fails its CRC"));
        }
        let data = &covered[4..];
        match kind {
            b"IEND" if !data.is_empty() => return Err("is damaged: its IEND chunk is not empty".to_owned()),
            b"IEND" => {
                chunks.end = next;
                return Ok(chunks);
            }
            b"IHDR" => chunks.header = chunks.header.or(Some(data)),
            b"IDAT" if !in_data && !chunks.data.is_empty() => {
                return Err("is damaged: its IDAT chunks are not consecutive".to_owned());
            }
            b"IDAT" => chunks.data.push(data),
            b"tRNS" => chunks.transparency = true,
            // The colour profile the decoder unpacks: the first, before the image data.
            b"iCCP" if chunks.data.is_empty() && !profile_seen => {
                profile_seen = true;
                if !profile_unpacks_within(data, MAX_UNPACKED_PROFILE) {
                    return Err(format!(
                        "its colour profile (iCCP chunk) unpacks to more than {} MB: send the image without it",
                        MAX_UNPACKED_PROFILE / 1_000_000
                    ));
                }
            }
            _ => {}
        }
        in_data = kind == b"IDAT";
        at = next;
    }
}

/// The most a PNG's compressed colour profile (its first `iCCP` chunk before the image data) may
/// unpack to: its decoder unpacks it whenever it reads the image's header, besides the pixels.
/// (Text chunks, `zTXt` and `iTXt`, it keeps compressed.)
const MAX_UNPACKED_PROFILE: u64 = 8_000_000;

/// Whether the compressed profile of a PNG's `iCCP` chunk, whose data is `data` (a name, its NUL,
/// the compression method, then the zlib stream), unpacks to at most `limit` bytes. Data that does
/// not unpack is left to the decoder, which says what it makes of it.
fn profile_unpacks_within(data: &[u8], limit: u64) -> bool {
    let Some(compressed) = data.iter().position(|byte| *byte == 0).and_then(|nul| data.get(nul + 2..)) else {
        return true;
    };
    let mut inflater = flate2::Decompress::new(true);
    let mut scratch = vec![0; 64 * 1024];
    loop {
        let read = usize::try_from(inflater.total_in()).unwrap_or(compressed.len()).min(compressed.len());
        let before = (inflater.total_in(), inflater.total_out());
        let Ok(status) = inflater.decompress(&compressed[read..], &mut scratch, flate2::FlushDecompress::None) else {
            return true;
        };
        if inflater.total_out() > limit {
            return false;
        }
        if status == flate2::Status::StreamEnd || (inflater.total_in(), inflater.total_out()) == before {
            return true;
        }
    }
}

/// Adam7's passes: first column and row, and the steps between them.
const ADAM7: [(u64, u64, u64, u64); 7] =
    [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)];

/// How many bytes a PNG's image data decompresses to, by its header (each row with its filter
/// byte, pass by pass when interlaced); `None` for a header the decoder refuses.
fn png_data_size(header: &[u8]) -> Option<u64> {
    let field = |at: usize| Some(u64::from(u32::from_be_bytes(header.get(at..at + 4)?.try_into().ok()?)));
    let (width, height) = (field(0)?, field(4)?);
    let depth = u64::from(*header.get(8)?);
    let channels = match header.get(9)? {
        0 | 3 => 1,
        2 => 3,
        4 => 2,
        6 => 4,
        _ => return None,
    };
    let row = |columns: u64| if columns == 0 { 0 } else { 1 + (columns * channels * depth).div_ceil(8) };
    match header.get(12)? {
        0 => Some(height * row(width)),
        1 => Some(
            ADAM7
                .iter()
                .map(|(x, y, dx, dy)| {
                    height.saturating_sub(*y).div_ceil(*dy) * row(width.saturating_sub(*x).div_ceil(*dx))
                })
                .sum(),
        ),
        _ => None,
    }
}

/// How many bytes the pixels of a PNG whose IHDR data is `header` decode to: a pixel of a palette
/// image decodes to 8-bit RGBA at most, a channel of 16 bits to 2 bytes, of 8 bits or fewer to 1,
/// and grey or RGB with `transparency` (a `tRNS` chunk) gains an alpha channel.
fn png_decoded_size(header: &[u8], transparency: bool) -> Option<u64> {
    let field = |at: usize| Some(u64::from(u32::from_be_bytes(header.get(at..at + 4)?.try_into().ok()?)));
    let channel = if *header.get(8)? == 16 { 2 } else { 1 };
    let alpha = u64::from(transparency);
    let pixel = match header.get(9)? {
        0 => (1 + alpha) * channel,
        2 => (3 + alpha) * channel,
        3 => 4,
        4 => 2 * channel,
        6 => 4 * channel,
        _ => return None,
    };
    Some(field(0)? * field(4)? * pixel)
}

/// Decompresses a PNG's image data, keeping none of it, to check that it ends with its last row
/// and its Adler-32 checksum holds: a PNG whose CRCs were made again over damaged data, or that
/// holds rows its header does not count, would otherwise be kept, its damage shown as pixels.
/// Call it once the image's size is known to be within bounds: the work is one pass over it.
fn check_png_data(chunks: &PngChunks<'_>) -> Result<(), String> {
    // The decoder says what is wrong with a header, or with an image that has no data.
    let Some(expected) = chunks.header.and_then(png_data_size) else { return Ok(()) };
    if chunks.data.is_empty() {
        return Ok(());
    }
    let damaged = |_| "is damaged: its compressed image data is malformed or fails its Adler-32 check".to_owned();
    let too_much = || "is damaged: its image data holds more rows than its header gives".to_owned();
    let mut inflater = flate2::Decompress::new(true);
    let mut scratch = vec![0; 64 * 1024];
    let mut ended = false;
    for data in &chunks.data {
        let mut input = *data;
        while !input.is_empty() {
            if ended {
                return Err("is damaged: data follows the end of its compressed image data".to_owned());
            }
            let before = inflater.total_in();
            let status = inflater.decompress(input, &mut scratch, flate2::FlushDecompress::None).map_err(damaged)?;
            input = &input[usize::try_from(inflater.total_in() - before).unwrap_or(input.len())..];
            if inflater.total_out() > expected {
                return Err(too_much());
            }
            ended = status == flate2::Status::StreamEnd;
        }
    }
    // What the inflater holds back once it has every byte.
    while !ended {
        let before = inflater.total_out();
        let status = inflater.decompress(&[], &mut scratch, flate2::FlushDecompress::Finish).map_err(damaged)?;
        if inflater.total_out() > expected {
            return Err(too_much());
        }
        ended = status == flate2::Status::StreamEnd;
        if !ended && inflater.total_out() == before {
            return Err("is cut short: its compressed image data ends before its end".to_owned());
        }
    }
    if inflater.total_out() < expected {
        return Err("is cut short: its image data ends before its last row".to_owned());
    }
    Ok(())
}

/// Whether `%PDF` is in the first 1024 bytes of `bytes`, where PDF readers look for a document's
/// header: a file with one opens as a document too. Four given bytes turn up in that span of
/// compressed data about once in four million files.
fn holds_pdf_header(bytes: &[u8]) -> bool {
    bytes[..bytes.len().min(1024)].windows(4).any(|window| window == b"%PDF")
}

/// How far from its end ZIP readers look for a file's end-of-central-directory record: the
/// record's 22 bytes, its longest comment, and 1 KiB for bytes after it that some tolerate.
const ZIP_TAIL: usize = 22 + 65_535 + 1024;

/// Whether `bytes` end with what ZIP readers take for an archive: an end-of-central-directory
/// record in their last [`ZIP_TAIL`] bytes that points to a central directory (`PK\x01\x02` where
/// its size or its offset says), that a ZIP64 locator precedes (whatever its size says), or that
/// is an empty archive's (no entries, no directory). Readers look for that record
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
        // An empty archive's record: no disk, no entry, no directory; sixteen zero bytes after the
        // signature are not there by chance.
        let empty = record[4..20].iter().all(|byte| *byte == 0);
        // The offset is followed whatever the size says (a size of 0 does not stop readers).
        zip64 || empty || directory_at(offset) || size > 0 && at.checked_sub(size).is_some_and(directory_at)
    })
}

/// Value representations whose length takes 4 bytes after 2 reserved ones (PS3.5 7.1.2).
const LONG_VRS: [&[u8; 2]; 13] =
    [b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"];

/// What a DICOM file's meta information says of its data set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DicomMeta<'a> {
    /// The transfer syntax's UID, without its padding.
    transfer_syntax: &'a [u8],
    /// Where the data set starts: right after the meta information.
    data_set_at: usize,
}

/// Checks what follows `DICM` is a DICOM file's meta information (PS3.10 7.1): group 0002
/// elements in explicit VR little endian, one of them the transfer syntax's UID; that the
/// preamble is not another format's header; and that no ZIP archive ends the file. Returns what
/// the meta information says, or what is wrong.
fn check_dicom(bytes: &[u8]) -> Result<DicomMeta<'_>, &'static str> {
    if foreign_preamble(bytes) {
        return Err("its preamble is another format's header (an executable, an archive, a document or markup)");
    }
    also_another_kind(bytes)?;
    let truncated = "its file meta information is cut short";
    let (mut at, mut transfer_syntax) = (PREAMBLE + 4, None);
    loop {
        let Some(header) = bytes.get(at..at + 8) else {
            // Part of an element, or nothing at all after `DICM`.
            if at < bytes.len() || at == PREAMBLE + 4 {
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
    // Padded to an even length with a NUL, as PS3.5 says, or with a space, as some writers do.
    let uid = uid.strip_suffix(b"\0").or_else(|| uid.strip_suffix(b" ")).unwrap_or(uid);
    if uid.is_empty() || !uid.iter().all(|byte| byte.is_ascii_digit() || *byte == b'.') {
        return Err("its transfer syntax is not a UID");
    }
    Ok(DicomMeta { transfer_syntax: uid, data_set_at: at })
}

/// How the elements of a data set are written (PS3.5 7.1): with their value representation
/// (explicit VR) or without (implicit VR), little endian either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    ExplicitVr,
    ImplicitVr,
}

impl Encoding {
    /// The encoding of the data set under `transfer_syntax` (PS3.5 10 and A): implicit VR little
    /// endian, or explicit VR little endian, which the native and the compressed (encapsulated)
    /// syntaxes share. `None` for what is not read here: a deflated data set, big endian, and
    /// syntaxes outside the standard's root.
    fn of(transfer_syntax: &[u8]) -> Option<Self> {
        const IMPLICIT_VR_LITTLE_ENDIAN: &[u8] = b"1.2.840.10008.1.2";
        const NOT_READ: [&[u8]; 4] = [
            b"1.2.840.10008.1.2.1.99",  // Deflated Explicit VR Little Endian
            b"1.2.840.10008.1.2.4.95",  // JPIP Referenced Deflate
            b"1.2.840.10008.1.2.4.205", // JPIP HTJ2K Referenced Deflate
            b"1.2.840.10008.1.2.2",     // Explicit VR Big Endian (retired)
        ];
        if transfer_syntax == IMPLICIT_VR_LITTLE_ENDIAN {
            Some(Self::ImplicitVr)
        } else if NOT_READ.contains(&transfer_syntax) || !transfer_syntax.starts_with(b"1.2.840.10008.1.2.") {
            None
        } else {
            Some(Self::ExplicitVr)
        }
    }
}

/// A data element's tag: its group and element numbers.
type Tag = (u16, u16);

/// Rows and Columns of the image (PS3.3 C.7.6.3).
const ROWS: Tag = (0x0028, 0x0010);
const COLUMNS: Tag = (0x0028, 0x0011);
/// Samples per Pixel, Bits Allocated (PS3.3 C.7.6.3) and Number of Frames (C.7.6.6).
const SAMPLES_PER_PIXEL: Tag = (0x0028, 0x0002);
const BITS_ALLOCATED: Tag = (0x0028, 0x0100);
const NUMBER_OF_FRAMES: Tag = (0x0028, 0x0008);
/// The tags that frame the items of a sequence, written without a value representation (PS3.5 7.5).
const ITEM: Tag = (0xFFFE, 0xE000);
const ITEM_END: Tag = (0xFFFE, 0xE00D);
const SEQUENCE_END: Tag = (0xFFFE, 0xE0DD);
/// The length of a sequence or an item that runs until its end tag.
const UNDEFINED_LENGTH: u32 = 0xFFFF_FFFF;
/// How deep sequences may nest before a data set is given up on: real ones nest a few levels.
const MAX_NESTING: usize = 64;

/// The header of one data element.
#[derive(Clone, Copy, Debug)]
struct Element {
    tag: Tag,
    /// Where its value starts.
    value_at: usize,
    /// Its length; `None` when undefined (a sequence or an item that runs until its end tag).
    length: Option<usize>,
    /// How what a value of undefined length holds is encoded: an explicit VR element of VR `UN`
    /// holds implicit VR elements (PS3.5 6.2.2).
    inner: Encoding,
    /// Whether it is a sequence as its VR says (`SQ`, explicit VR): its items hold data elements,
    /// which are read too, whatever their lengths. (Encapsulated pixel data's items hold fragments.)
    sequence: bool,
}

impl Element {
    /// The header of the element at `at`, if it is whole and well formed.
    fn read(bytes: &[u8], at: usize, encoding: Encoding) -> Option<Self> {
        let header = bytes.get(at..at.checked_add(8)?)?;
        let tag = (u16::from_le_bytes([header[0], header[1]]), u16::from_le_bytes([header[2], header[3]]));
        let u32_at = |at: usize| {
            let four = bytes.get(at..at.checked_add(4)?)?;
            Some(u32::from_le_bytes([four[0], four[1], four[2], four[3]]))
        };
        let (length, value_at, inner, sequence) = if tag.0 == ITEM.0 || encoding == Encoding::ImplicitVr {
            (u32_at(at + 4)?, at + 8, encoding, false)
        } else {
            let vr = &header[4..6];
            if !vr.iter().all(u8::is_ascii_uppercase) {
                return None;
            }
            let inner = if vr == b"UN" { Encoding::ImplicitVr } else { encoding };
            if LONG_VRS.iter().any(|long| long[..] == *vr) {
                (u32_at(at + 8)?, at + 12, inner, vr == b"SQ")
            } else {
                (u32::from(u16::from_le_bytes([header[6], header[7]])), at + 8, inner, false)
            }
        };
        let length = (length != UNDEFINED_LENGTH).then(|| usize::try_from(length)).transpose().ok()?;
        Some(Self { tag, value_at, length, inner, sequence })
    }

    /// Where the next element starts, past this one's value (and, for a value of undefined
    /// length, past the sequence it holds; for a sequence, once its items are read), within
    /// `depth` more levels of nesting.
    fn end(&self, bytes: &[u8], depth: usize) -> Option<usize> {
        match self.length {
            Some(length) => {
                let end = self.value_at.checked_add(length)?;
                if self.sequence {
                    check_items(bytes, self.value_at, end, self.inner, depth)?;
                }
                Some(end)
            }
            None => skip_sequence(bytes, self.value_at, self.inner, depth, self.sequence),
        }
    }
}

/// Where the sequence of items starting at `at` ends, past its end tag; `None` when it is
/// malformed, cut short or nested deeper than `depth` levels. The elements of its items of
/// defined length are read too when it is a `sequence` as its VR says.
fn skip_sequence(bytes: &[u8], mut at: usize, encoding: Encoding, depth: usize, sequence: bool) -> Option<usize> {
    let depth = depth.checked_sub(1)?;
    loop {
        let element = Element::read(bytes, at, Encoding::ImplicitVr)?;
        at = match element.tag {
            SEQUENCE_END => return Some(element.value_at),
            ITEM => match element.length {
                Some(length) => {
                    let end = element.value_at.checked_add(length)?;
                    if sequence {
                        check_elements(bytes, element.value_at, end, encoding, depth)?;
                    }
                    end
                }
                None => skip_item(bytes, element.value_at, encoding, depth)?,
            },
            _ => return None,
        };
    }
}

/// Reads the items of a sequence of defined length, from `at` to `end` exactly: each an item, of
/// defined length holding whole data elements, or of undefined length ending with its end tag.
fn check_items(bytes: &[u8], mut at: usize, end: usize, encoding: Encoding, depth: usize) -> Option<()> {
    let depth = depth.checked_sub(1)?;
    bytes.get(..end)?;
    while at < end {
        let element = Element::read(bytes, at, Encoding::ImplicitVr)?;
        if element.tag != ITEM {
            return None;
        }
        at = match element.length {
            Some(length) => {
                let item_end = element.value_at.checked_add(length)?;
                check_elements(bytes, element.value_at, item_end, encoding, depth)?;
                item_end
            }
            None => skip_item(bytes, element.value_at, encoding, depth)?,
        };
    }
    (at == end).then_some(())
}

/// Reads the data elements of an item of defined length, from `at` to `end` exactly.
fn check_elements(bytes: &[u8], mut at: usize, end: usize, encoding: Encoding, depth: usize) -> Option<()> {
    bytes.get(..end)?;
    while at < end {
        let element = Element::read(bytes, at, encoding)?;
        at = element.end(bytes, depth)?;
    }
    (at == end).then_some(())
}

/// Where the item of undefined length whose elements start at `at` ends, past its end tag.
fn skip_item(bytes: &[u8], mut at: usize, encoding: Encoding, depth: usize) -> Option<usize> {
    loop {
        let element = Element::read(bytes, at, encoding)?;
        if element.tag == ITEM_END {
            return Some(element.value_at);
        }
        at = element.end(bytes, depth)?;
    }
}

/// What the top level of a DICOM data set says of its image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct DataSetImage {
    /// Its Columns and Rows, 0 when the data set does not give them (as one unsigned 16-bit value each).
    columns: u32,
    rows: u32,
    /// Whether it holds pixel data: a Pixel Data, Float Pixel Data or Double Float Pixel Data
    /// element that is not empty.
    pixels: bool,
    /// Whether it wraps a document (an Encapsulated Document element: a PDF, a CDA).
    document: bool,
    /// Its Samples per Pixel, Bits Allocated and Number of Frames, when given.
    samples: Option<u32>,
    bits: Option<u32>,
    frames: Option<u32>,
    /// The length of its Pixel Data (7FE0,0010) when defined: native pixels, not compressed
    /// frames (whose element runs until its end tag).
    native_pixels: Option<usize>,
}

impl DataSetImage {
    /// The bytes its native pixel data must hold, from its Rows, Columns, Samples per Pixel (1
    /// when not given), Bits Allocated and Number of Frames (1 when not given); `None` when it does
    /// not give its rows, columns and bits.
    fn pixel_bytes(&self) -> Option<u64> {
        let bits = u64::from(self.bits.filter(|bits| *bits > 0)?);
        if self.rows == 0 || self.columns == 0 {
            return None;
        }
        // Saturating: a file can claim more than 64 bits count, and holds none of it.
        let values = u64::from(self.rows)
            .saturating_mul(u64::from(self.columns))
            .saturating_mul(u64::from(self.samples.unwrap_or(1)))
            .saturating_mul(u64::from(self.frames.unwrap_or(1)));
        // One-bit pixels are packed eight to a byte; wider ones take whole bytes each (PS3.5 8.1.1).
        Some(if bits == 1 { values.div_ceil(8) } else { values.saturating_mul(bits.div_ceil(8)) })
    }

    /// Refuses native pixel data shorter than its rows, columns, samples, bits and frames call for:
    /// the file is cut or damaged.
    fn check_pixel_length(&self) -> Result<(), String> {
        let (Some(held), Some(needed)) = (self.native_pixels, self.pixel_bytes()) else { return Ok(()) };
        if held as u64 >= needed {
            return Ok(());
        }
        let frames = match self.frames.unwrap_or(1) {
            1 => String::new(),
            frames => format!(" in {frames} frames"),
        };
        Err(format!(
            "holds {held} bytes of pixel data, where its {} rows of {} columns of {} sample(s) of {} bits{frames} take \
             {needed}: the file is cut short or damaged",
            self.rows,
            self.columns,
            self.samples.unwrap_or(1),
            self.bits.unwrap_or_default(),
        ))
    }
}

/// The element that wraps a document in a DICOM file (PS3.6 0042,0011).
const ENCAPSULATED_DOCUMENT: Tag = (0x0042, 0x0011);

/// The tags of the elements that hold an image's pixels (PS3.6 7FE0,0008 to 0010).
const PIXEL_DATA: [Tag; 3] = [(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)];

/// Reads the data set of a DICOM file to its end (PS3.5 7): element after element, each whole,
/// sequences within [`MAX_NESTING`] levels, until the file ends or only padding is left, so that a
/// file cut short, or another appended to it, is refused. Returns what its top level says of the
/// image (see [`DataSetImage`]). A data set in a transfer syntax not read here (see
/// [`Encoding::of`]) is refused, as it could not be checked; one written in the other little
/// endian encoding than its meta information says, as some writers do, is read in the one its
/// first element is written in (a value representation after the tag or not).
fn read_data_set(bytes: &[u8], meta: DicomMeta<'_>) -> Result<DataSetImage, String> {
    let encoding = Encoding::of(meta.transfer_syntax).ok_or_else(|| {
        format!(
            "its transfer syntax, {}, is not read here (a deflated or big endian data set, or a private syntax): \
             send it in explicit or implicit VR little endian",
            String::from_utf8_lossy(meta.transfer_syntax)
        )
    })?;
    let at = meta.data_set_at;
    // The first element past any empty delimiters a writer left (which carry no VR either way).
    let mut first = at;
    while bytes.get(first..first + 2) == Some(&[0xFE, 0xFF]) && bytes.get(first + 4..first + 8) == Some(&[0; 4]) {
        first += 8;
    }
    let written = match bytes.get(first + 4..first + 6) {
        Some(vr) if VRS.iter().any(|known| known[..] == *vr) => Encoding::ExplicitVr,
        Some(_) => Encoding::ImplicitVr,
        None => encoding,
    };
    walk_data_set(bytes, at, written).or_else(|problem| {
        // Not readable in the encoding it looks written in: in the one its meta information names.
        if written == encoding { Err(problem) } else { walk_data_set(bytes, at, encoding).map_err(|_| problem) }
    })
}

/// Every value representation (PS3.5 6.2): what follows an explicit VR element's tag.
const VRS: [&[u8; 2]; 34] = [
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"OB", b"OD", b"OF", b"OL",
    b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM", b"UC", b"UI", b"UL", b"UN", b"UR", b"US",
    b"UT", b"UV",
];

/// [`read_data_set`] in `encoding` from `at`.
fn walk_data_set(bytes: &[u8], mut at: usize, encoding: Encoding) -> Result<DataSetImage, String> {
    // Padding at the end of the file is not the data set's: where the data set must end.
    let end_of_data = bytes.len() - bytes.iter().rev().take_while(|byte| is_padding(**byte)).count();
    let mut image = DataSetImage::default();
    let mut previous = None;
    while at < end_of_data {
        let refused =
            |what: String| format!("{what}: the file is cut short or damaged, or other data follows its data set");
        let element = Element::read(bytes, at, encoding)
            .ok_or_else(|| refused(format!("has bytes at byte {at} that are not a whole data element")))?;
        let (group, number) = element.tag;
        // A delimiter left at the top level by a writer, with nothing in it, is passed over.
        if group == ITEM.0 && element.length == Some(0) && element.tag != ITEM {
            at = element.value_at;
            continue;
        }
        // Elements come in the order of their tags, the file meta information's group before the
        // data set: the meta information's group again is the sign of another data set appended;
        // in implicit VR, with no value representation to check, so is a group before the last
        // one's (some writers leave a group's elements out of order, or put a group late, which
        // explicit VR elements, told by their VR, are read with).
        let out_of_order = encoding == Encoding::ImplicitVr && previous.is_some_and(|previous| previous > group);
        if out_of_order || group == ITEM.0 || group == 0x0002 {
            return Err(refused(format!("has an element out of place at byte {at}, ({group:04X},{number:04X})")));
        }
        previous = Some(group);
        let end = element.end(bytes, MAX_NESTING).filter(|end| *end <= bytes.len()).ok_or_else(|| {
            refused(format!(
                "has an element at byte {at}, ({group:04X},{number:04X}), that runs past the end of the file \
                 or holds a sequence that does not end as it should, or nests deeper than {MAX_NESTING} levels"
            ))
        })?;
        if [ROWS, COLUMNS, SAMPLES_PER_PIXEL, BITS_ALLOCATED].contains(&element.tag) && element.length == Some(2) {
            // US: one unsigned 16-bit value.
            let value = u32::from(u16::from_le_bytes([bytes[element.value_at], bytes[element.value_at + 1]]));
            match element.tag {
                ROWS => image.rows = value,
                COLUMNS => image.columns = value,
                SAMPLES_PER_PIXEL => image.samples = Some(value),
                _ => image.bits = Some(value),
            }
        }
        if element.tag == NUMBER_OF_FRAMES
            && let Some(length) = element.length
        {
            // IS: a decimal number as text, padded with a space.
            let text = String::from_utf8_lossy(&bytes[element.value_at..element.value_at + length]);
            image.frames = text.trim_matches([' ', '\0']).parse().ok();
        }
        if element.tag == PIXEL_DATA[0] {
            image.native_pixels = element.length;
        }
        // Of undefined length (encapsulated, compressed frames) or of some bytes.
        if PIXEL_DATA.contains(&element.tag) && element.length != Some(0) {
            image.pixels = true;
        }
        image.document |= element.tag == ENCAPSULATED_DOCUMENT;
        at = end;
    }
    image.check_pixel_length()?;
    Ok(image)
}

const NO_PIXELS: &str = "is a DICOM file without an image: it holds no pixel data (no (7FE0,0010) element with a \
                         value), as a structured report does not, or it wraps a document ((0042,0011))";

/// What an upload turned out to be.
#[derive(Debug)]
pub struct Examined {
    pub media_type: MediaType,
    /// In pixels; for a DICOM file its Columns and Rows, or 0 when its data set does not give them.
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

/// What a decoder said of an image, for its sender: without the decoder's own prefix (`Format
/// error decoding Png: `) and with a PNG chunk named by its type rather than its debug form.
fn decoder_message(error: &image::ImageError) -> String {
    let message = error.to_string();
    let mut message = match message.split_once(": ") {
        Some((prefix, rest)) if prefix.starts_with("Format error decoding ") => rest.to_owned(),
        _ => message,
    };
    while let Some(start) = message.find("ChunkType { type: ") {
        let Some(end) = message[start..].find('}') else { break };
        let kind = message[start + "ChunkType { type: ".len()..start + end].split(',').next().unwrap_or("").to_owned();
        message.replace_range(start..=start + end, &kind);
    }
    message
}

/// Recognises `bytes` and, for a raster image, decodes it (within size limits) for its
/// dimensions and thumbnail. Anything else is refused, naming the `body` field.
///
/// Call it on a blocking thread, holding a permit of [`EXAMINATIONS`].
pub fn examine(bytes: &[u8]) -> Result<Examined, Error> {
    let media_type = MediaType::detect(bytes).ok_or_else(|| unrecognised(bytes))?;
    let format = match media_type {
        MediaType::Png => ImageFormat::Png,
        MediaType::Jpeg => ImageFormat::Jpeg,
        MediaType::Dicom => {
            let meta = check_dicom(bytes)
                .map_err(|problem| Error::invalid("body", format!("starts as DICOM but {problem}")))?;
            let image = read_data_set(bytes, meta)
                .map_err(|problem| Error::invalid("body", format!("starts as DICOM but {problem}")))?;
            if !image.pixels || image.document {
                return Err(Error::invalid("body", NO_PIXELS));
            }
            return Ok(Examined { media_type, width: image.columns, height: image.rows, thumbnail: None });
        }
    };
    also_another_kind(bytes)
        .map_err(|problem| Error::invalid("body", format!("starts as {media_type} but {problem}")))?;
    let refused = |problem: String| Error::invalid("body", format!("starts as {media_type} but {problem}"));
    let png = match media_type {
        MediaType::Png => Some(png_chunks(bytes).map_err(refused)?),
        _ => None,
    };
    let reader = |limits: Limits| {
        let mut opened = ImageReader::with_format(Cursor::new(bytes), format);
        opened.limits(limits);
        opened
    };
    let undecodable = |error: image::ImageError| {
        Error::invalid(
            "body",
            format!("starts as {} but does not decode as one: {}", media_type.as_str(), decoder_message(&error)),
        )
    };
    // The size a JPEG's frame header or a PNG's IHDR chunk claims first: an image too large is
    // refused, naming its size, before any block of its data is read or a decoder sized for it.
    let claimed = match media_type {
        MediaType::Jpeg => {
            crate::jpeg::claimed(bytes).map(|claimed| (claimed.width, claimed.height, claimed.coefficient_bytes))
        }
        MediaType::Png => png.as_ref().and_then(|chunks| chunks.header).and_then(|header| {
            let side = |at: usize| {
                header.get(at..at + 4).map(|bytes| u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
            };
            Some((side(0)?, side(4)?, None))
        }),
        MediaType::Dicom => None,
    };
    if let Some((width, height, coefficient_bytes)) = claimed {
        check_size(width, height)?;
        // A progressive JPEG's decoder keeps every coefficient besides the pixels it makes.
        let needed = coefficient_bytes.map(|coefficients| coefficients + u64::from(width) * u64::from(height) * 4);
        if let Some(needed) = needed.filter(|needed| *needed > MAX_DECODED_BYTES) {
            return Err(Error::invalid(
                "body",
                format!(
                    "is a progressive JPEG of {width}×{height} pixels, which takes {} MB to decode: at most {} MB are \
                     accepted (send it as a baseline JPEG, or with fewer pixels)",
                    needed.div_ceil(1_000_000),
                    MAX_DECODED_BYTES / 1_000_000
                ),
            ));
        }
    }
    let end = match media_type {
        MediaType::Jpeg => crate::jpeg::check(bytes).map_err(|shortfall| {
            // A decoder fills what is missing with grey: a cut upload would be kept as an image.
            let problem = match shortfall {
                crate::jpeg::Shortfall::NoEnd => "is cut short: it has no end-of-image marker".to_owned(),
                crate::jpeg::Shortfall::CutShort => "is cut short: its data ends before its last block".to_owned(),
                crate::jpeg::Shortfall::ScansMissing => "is cut short: some of its scans are missing".to_owned(),
                crate::jpeg::Shortfall::Damaged(what) => format!("is damaged: {what}"),
                crate::jpeg::Shortfall::Unsupported(kind) => {
                    format!("is {kind} JPEG, which is not read here: send a baseline or progressive JPEG")
                }
            };
            Error::invalid("body", format!("starts as {media_type} but {problem}"))
        })?,
        _ => png.as_ref().map_or(bytes.len(), |chunks| chunks.end),
    };
    check_trailer(media_type, &bytes[end..]).map_err(|problem| refused(problem.to_owned()))?;
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    // The header alone first: an image too large is refused, naming its size, before any pixel is decoded.
    let (width, height) = reader(limits.clone()).into_dimensions().map_err(undecodable)?;
    check_size(width, height)?;
    if let Some(chunks) = &png {
        let decoded = chunks.header.and_then(|header| png_decoded_size(header, chunks.transparency)).unwrap_or(0);
        if decoded > MAX_DECODED_BYTES {
            return Err(Error::invalid(
                "body",
                format!(
                    "is an image of {width}×{height} pixels of {} bytes each, {} MB decoded: at most {} MB are \
                     accepted (send 8-bit channels, or fewer pixels)",
                    decoded / (u64::from(width) * u64::from(height)),
                    decoded.div_ceil(1_000_000),
                    MAX_DECODED_BYTES / 1_000_000
                ),
            ));
        }
        check_png_data(chunks).map_err(refused)?;
    }
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    let mut decoder = reader(limits).into_decoder().map_err(undecodable)?;
    // A camera's photo is shown turned as its EXIF orientation says, and so is its thumbnail.
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let decoded = image::DynamicImage::from_decoder(decoder).map_err(undecodable)?;
    let mut thumbnail = Vec::new();
    // A thumbnail is never larger than its image.
    let small = decoded.width() <= THUMBNAIL_SIDE && decoded.height() <= THUMBNAIL_SIDE;
    let mut thumbnailed = if small { decoded.clone() } else { decoded.thumbnail(THUMBNAIL_SIDE, THUMBNAIL_SIDE) };
    thumbnailed.apply_orientation(orientation);
    // Compressed as well as PNG goes: the fast default writes a smooth picture's thumbnail many
    // times larger than the image it shows.
    let encoder = image::codecs::png::PngEncoder::new_with_quality(
        Cursor::new(&mut thumbnail),
        image::codecs::png::CompressionType::Best,
        image::codecs::png::FilterType::Adaptive,
    );
    thumbnailed
        .write_with_encoder(encoder)
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
    fn a_damaged_png_is_refused_in_words_for_its_sender() {
        let mut damaged = png(40, 30);
        // A bit of the header chunk's checksum.
        damaged[29] ^= 0xff;
        match examine(&damaged) {
            Err(Error::InvalidArgument { field, reason }) => {
                assert_eq!(field, "body");
                assert_eq!(reason, "starts as image/png but is damaged: its IHDR chunk fails its CRC");
            }
            other => panic!("a PNG with a bad checksum: {other:?}"),
        }
    }

    #[test]
    fn a_smooth_pictures_thumbnail_is_compressed_well() {
        let gradient = image::RgbImage::from_fn(300, 200, |x, y| image::Rgb([x as u8, y as u8, ((x + y) / 2) as u8]));
        let mut bytes = Vec::new();
        gradient.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png).unwrap();
        let thumbnail = examine(&bytes).unwrap().thumbnail.expect("a thumbnail");
        let shown = image::load_from_memory(&thumbnail).unwrap();
        assert_eq!((shown.width(), shown.height()), (256, 171));
        // 131 kB of pixels; the fast default wrote about 87 kB of them.
        assert!(thumbnail.len() < 20_000, "{} bytes", thumbnail.len());
    }

    #[test]
    fn a_dicom_data_set_without_its_file_header_is_told_so() {
        let dicom = include_bytes!("../../tests/fixtures/minimal.dcm");
        assert!(matches!(recognise(dicom, None), Ok(MediaType::Dicom)));
        // Without the preamble, and without the preamble and DICM: the file meta information first;
        // and a data set in implicit VR, its first element (0008,0016) with its 4-byte length.
        let mut implicit = vec![0x08, 0x00, 0x16, 0x00, 0x1a, 0x00, 0x00, 0x00];
        implicit.extend_from_slice(b"1.2.840.10008.5.1.4.1.1.7\0");
        // In explicit VR, starting at a later group: Samples per Pixel (0028,0002), US, 1; and
        // Rows (0028,0010) after a long VR's header, Pixel Data (7FE0,0010) as OW.
        let samples = [0x28, 0x00, 0x02, 0x00, b'U', b'S', 0x02, 0x00, 0x01, 0x00];
        let pixels = [0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0xFF, 0x00];
        for headerless in [&dicom[PREAMBLE..], &dicom[PREAMBLE + 4..], implicit.as_slice(), &samples, &pixels] {
            match recognise(headerless, None) {
                Err(Error::InvalidArgument { field, reason }) => {
                    assert_eq!(field, "body");
                    assert!(reason.contains("without the file header"), "{reason}");
                }
                other => panic!("a headerless data set: {other:?}"),
            }
        }
        // Not a data set: a GIF; an element of an odd (private) group; a value representation
        // DICOM does not have; a length past the end of the bytes.
        let odd_group = [0x29, 0x00, 0x02, 0x00, b'U', b'S', 0x02, 0x00, 0x01, 0x00];
        let no_such_vr = [0x28, 0x00, 0x02, 0x00, b'Q', b'Q', 0x02, 0x00, 0x01, 0x00];
        let too_long = [0x28, 0x00, 0x02, 0x00, b'U', b'S', 0x40, 0x00, 0x01, 0x00];
        for other in [&b"GIF89a\x01\x00\x01\x00"[..], &odd_group, &no_such_vr, &too_long] {
            match recognise(other, None) {
                Err(Error::InvalidArgument { reason, .. }) => {
                    assert!(reason.starts_with("is not a PNG, JPEG or DICOM"), "{other:?}: {reason}");
                }
                other => panic!("not a data set: {other:?}"),
            }
        }
    }

    /// `bytes`, a PNG, with a `tEXt` chunk before its IEND.
    fn with_text_chunk(bytes: &[u8], text: &[u8]) -> Vec<u8> {
        with_chunk(bytes, b"tEXt", text)
    }

    /// `bytes`, a PNG, with a chunk of type `kind` before its IEND.
    fn with_chunk(bytes: &[u8], kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let iend = bytes.len() - 12;
        assert_eq!(&bytes[iend + 4..iend + 8], b"IEND");
        with_chunk_at(bytes, iend, kind, data)
    }

    /// `bytes`, a PNG, with a chunk of type `kind` right after its IHDR chunk.
    fn with_early_chunk(bytes: &[u8], kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        assert_eq!(&bytes[12..16], b"IHDR");
        with_chunk_at(bytes, 8 + 8 + 13 + 4, kind, data)
    }

    /// `bytes`, a PNG, with a chunk of type `kind` holding `data`, its CRC made, at `at`.
    fn with_chunk_at(bytes: &[u8], at: usize, kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
        chunk.extend_from_slice(kind);
        chunk.extend_from_slice(data);
        chunk.extend_from_slice(&crc32fast::hash(&chunk[4..]).to_be_bytes());
        [&bytes[..at], &chunk, &bytes[at..]].concat()
    }

    #[test]
    fn a_png_is_read_to_its_iend_chunk_with_every_crc_checked() {
        let whole = png(40, 30);
        let refusal = |bytes: &[u8]| match examine(bytes) {
            Err(Error::InvalidArgument { field, reason }) if field == "body" => reason,
            other => panic!("a damaged PNG accepted or refused otherwise: {other:?}"),
        };
        let texted = with_text_chunk(&whole, b"Comment\0made by a scanner");
        assert!(examine(&texted).is_ok());
        // An ancillary chunk, which the decoder passes over when its CRC is wrong.
        let mut damaged = texted.clone();
        let text_at = texted.windows(4).position(|window| window == b"tEXt").unwrap();
        damaged[text_at + 6] ^= 0x20;
        assert_eq!(refusal(&damaged), "starts as image/png but is damaged: its tEXt chunk fails its CRC");
        // IEND, which the decoder never reads, damaged, missing or cut.
        let mut damaged = whole.clone();
        *damaged.last_mut().unwrap() ^= 1;
        assert_eq!(refusal(&damaged), "starts as image/png but is damaged: its IEND chunk fails its CRC");
        assert_eq!(refusal(&whole[..whole.len() - 12]), "starts as image/png but is cut short: it has no IEND chunk");
        assert_eq!(
            refusal(&whole[..whole.len() - 2]),
            "starts as image/png but is cut short: its IEND chunk is not whole"
        );
        let idat_at = whole.windows(4).position(|window| window == b"IDAT").unwrap();
        assert_eq!(
            refusal(&whole[..idat_at + 10]),
            "starts as image/png but is cut short: its IDAT chunk is not whole"
        );
        let mut unnamed = whole.clone();
        unnamed[idat_at] = b'1';
        assert_eq!(refusal(&unnamed), "starts as image/png but is damaged: a chunk's type is not four letters");
        // Bytes after IEND are not the image's, as bytes after a JPEG's end are not.
        let mut trailed = whole.clone();
        trailed.extend_from_slice(b"\0\0\0\0");
        assert!(examine(&trailed).is_ok());
        // Image data split by another chunk.
        let text = with_text_chunk(&whole, b"Comment\0split");
        let iend = text.len() - 12;
        let empty_idat = [&0_u32.to_be_bytes()[..], b"IDAT", &crc32fast::hash(b"IDAT").to_be_bytes()].concat();
        let split = [&text[..iend], &empty_idat, &text[iend..]].concat();
        assert_eq!(refusal(&split), "starts as image/png but is damaged: its IDAT chunks are not consecutive");
    }

    #[test]
    fn only_padding_and_whole_pictures_may_follow_an_images_end() {
        let refusal = |bytes: &[u8]| match examine(bytes) {
            Err(Error::InvalidArgument { field, reason }) if field == "body" => reason,
            other => panic!("accepted or refused otherwise: {other:?}"),
        };
        let other = |media_type: &str| match media_type {
            "image/png" => "has data after its IEND chunk that is not padding: send the image alone",
            _ => "has data after its end that is neither padding nor another JPEG picture: send the image alone",
        };
        let second = jpeg(8, 8);
        let disguised = [&b"\xFF\xD8"[..], b"\x7fELF\x02\x01\x01\0payload"].concat();
        // Markers that end a picture, around a payload: no frame, or bytes between segments.
        let framed = b"\xFF\xD8\xFF\xFE\x00\x0apayload\xFF\xD9".to_vec();
        let strayed = [&second[..2], b"\x7fELF<script>", &second[2..]].concat();
        for (media_type, image) in [("image/png", png(40, 30)), ("image/jpeg", jpeg(40, 30))] {
            for trailer in [&b"\x7fELF\x02\x01\x01\0payload"[..], b"\0\0MZ\x90\0", b"<html><script>", b"x"] {
                let polyglot = [&image[..], trailer].concat();
                assert_eq!(
                    refusal(&polyglot),
                    format!("starts as {media_type} but {}", other(media_type)),
                    "{trailer:?}"
                );
            }
            // Padding may follow either; a picture only a JPEG, as cameras store a second one,
            // and only a whole one, with nothing but padding or pictures after it.
            assert!(examine(&[&image[..], b"\0\0\0\0\n"].concat()).is_ok(), "{media_type}");
            let with_picture = [&image[..], &second].concat();
            let after_picture = [&image[..], &second, b"<html>"].concat();
            let after_disguise = [&image[..], &disguised].concat();
            if media_type == "image/jpeg" {
                assert!(examine(&with_picture).is_ok());
                assert!(examine(&[&image[..], b"\0\0", &second, &second].concat()).is_ok());
                assert!(refusal(&after_picture).ends_with(other(media_type)));
                for disguise in [&disguised, &framed, &strayed] {
                    let trailed = [&image[..], disguise].concat();
                    assert!(refusal(&trailed).ends_with("has a picture after its end that is not a whole JPEG"));
                }
                let many = [&image[..], &second.repeat(5)].concat();
                assert!(refusal(&many).ends_with("has more than 4 pictures after its own"));
            } else {
                for trailed in [with_picture, after_disguise] {
                    assert!(refusal(&trailed).ends_with(other(media_type)));
                }
            }
        }
    }

    /// A PNG of the given header fields whose IDAT holds `raw` compressed as it is, with a grey
    /// palette when it needs one.
    fn png_of((width, height, depth, colour, interlace): (u32, u32, u8, u8, u8), raw: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let chunk = |kind: &[u8], data: &[u8]| {
            let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
            chunk.extend_from_slice(kind);
            chunk.extend_from_slice(data);
            chunk.extend_from_slice(&crc32fast::hash(&chunk[4..]).to_be_bytes());
            chunk
        };
        let mut header = [width.to_be_bytes(), height.to_be_bytes()].concat();
        header.extend_from_slice(&[depth, colour, 0, 0, interlace]);
        let mut compressor = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        compressor.write_all(raw).unwrap();
        let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
        bytes.extend(chunk(b"IHDR", &header));
        if colour == 3 {
            bytes.extend(chunk(b"PLTE", &(0..1u16 << depth).flat_map(|n| [n as u8; 3]).collect::<Vec<_>>()));
        }
        bytes.extend(chunk(b"IDAT", &compressor.finish().unwrap()));
        bytes.extend(chunk(b"IEND", b""));
        bytes
    }

    #[test]
    fn a_png_header_claiming_an_extreme_size_is_refused_naming_it() {
        for (width, height) in [(2_147_483_647, 1), (2_147_483_647, 2_147_483_647), (20_000, 20_000)] {
            let error = examine(&png_of((width, height, 8, 2, 0), &[0; 16])).err().unwrap();
            let message = format!("{error:?}");
            assert!(message.contains(&format!("is an image of {width}×{height} pixels: at most")), "{message}");
        }
    }

    #[test]
    fn a_pngs_image_data_must_hold_its_rows_exactly_and_pass_its_adler32_check() {
        let refusal = |bytes: &[u8]| match examine(bytes) {
            Err(Error::InvalidArgument { field, reason }) if field == "body" => reason,
            other => panic!("accepted or refused otherwise: {other:?}"),
        };
        // Bit depths, colour types, and interlaced images, whose passes each have their rows.
        for (header, size) in [
            ((5, 3, 1, 0, 0), 6),
            ((5, 3, 16, 2, 0), 93),
            ((7, 9, 8, 6, 1), 271),
            ((1, 1, 8, 2, 1), 4),
            ((3, 5, 4, 3, 1), 22),
            ((13, 11, 2, 0, 1), 68),
            ((10, 10, 16, 4, 0), 410),
        ] {
            let whole = png_of(header, &vec![0; size]);
            let ihdr = png_chunks(&whole).unwrap().header.unwrap();
            assert_eq!(png_data_size(ihdr), Some(size as u64), "{header:?}");
            assert!(examine(&whole).is_ok(), "{header:?}: {:?}", examine(&whole).err());
            assert_eq!(
                refusal(&png_of(header, &vec![0; size + 1])),
                "starts as image/png but is damaged: its image data holds more rows than its header gives",
                "{header:?}"
            );
            assert!(refusal(&png_of(header, &vec![0; size - 1])).starts_with("starts as image/png but"), "{header:?}");
        }
        assert_eq!(
            refusal(&png_of((5, 3, 1, 0, 0), &[0; 5])),
            "starts as image/png but is cut short: its image data ends before its last row"
        );

        // Damage under CRCs made again: in the compressed data, or in its Adler-32 checksum.
        let whole = png_of((64, 48, 8, 2, 0), &(0..48 * (1 + 64 * 3)).map(|n| (n * 7 % 251) as u8).collect::<Vec<_>>());
        let idat = whole.windows(4).position(|window| window == b"IDAT").unwrap();
        let length = u32::from_be_bytes(whole[idat - 4..idat].try_into().unwrap()) as usize;
        for at in [idat + 4 + length / 2, idat + 4 + length - 1] {
            let mut damaged = whole.clone();
            damaged[at] ^= 0x55;
            let crc = crc32fast::hash(&damaged[idat..idat + 4 + length]);
            damaged[idat + 4 + length..idat + 8 + length].copy_from_slice(&crc.to_be_bytes());
            assert_eq!(
                refusal(&damaged),
                "starts as image/png but is damaged: its compressed image data is malformed or fails its Adler-32 check",
                "byte {at}"
            );
        }
        // An IEND with data.
        let mut ended = whole[..whole.len() - 12].to_vec();
        let mut iend = 2u32.to_be_bytes().to_vec();
        iend.extend_from_slice(b"IENDxx");
        iend.extend_from_slice(&crc32fast::hash(&iend[4..]).to_be_bytes());
        ended.extend(iend);
        assert_eq!(refusal(&ended), "starts as image/png but is damaged: its IEND chunk is not empty");
    }

    #[test]
    fn a_jpeg_cut_short_or_with_other_data_after_its_end_is_refused() {
        let whole = jpeg(64, 48);
        assert!(examine(&whole).is_ok());
        // Bytes after the end, even ones that look like markers (a motion photo's video).
        for trailer in [b"camera notes".as_slice(), b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00\x00\xff"] {
            let mut trailed = whole.clone();
            trailed.extend_from_slice(trailer);
            assert!(examine(&trailed).is_err(), "{trailer:?}");
        }
        for cut in [whole.len() - 2, whole.len() / 2] {
            match examine(&whole[..cut]) {
                Err(Error::InvalidArgument { field, reason }) => {
                    assert_eq!(field, "body");
                    assert!(reason.contains("cut short"), "{reason}");
                }
                other => panic!("a JPEG of {cut} of its {} bytes: {other:?}", whole.len()),
            }
        }
        // A header that claims 6000×6000 pixels over the data of 64×48.
        let mut inflated = whole.clone();
        let frame = inflated.windows(2).position(|marker| marker == [0xFF, 0xC0]).expect("a baseline frame header");
        inflated[frame + 5..frame + 9].copy_from_slice(&[0x17, 0x70, 0x17, 0x70]);
        match examine(&inflated) {
            Err(Error::InvalidArgument { reason, .. }) => {
                assert!(reason.contains("is cut short: its data ends before its last block"), "{reason}");
            }
            other => panic!("an inflated JPEG header: {other:?}"),
        }
    }

    /// Numbers that look random enough for test data, the same on every run (xorshift32).
    fn xorshift(mut state: u32) -> impl FnMut() -> u32 {
        move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        }
    }

    /// A JPEG of `width`×`height` pixels of noise, which takes many bytes to encode, as a
    /// photograph does.
    fn noisy_jpeg(width: u32, height: u32, grey: bool) -> Vec<u8> {
        let mut random = xorshift(0x2545_f491);
        let mut next = move || random() as u8;
        let colour = image::RgbImage::from_fn(width, height, |_, _| image::Rgb([next(), next(), next()]));
        let picture = if grey {
            image::DynamicImage::ImageLuma8(image::DynamicImage::ImageRgb8(colour).to_luma8())
        } else {
            image::DynamicImage::ImageRgb8(colour)
        };
        let mut bytes = Vec::new();
        picture.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Jpeg).unwrap();
        bytes
    }

    #[test]
    fn a_jpeg_whose_data_ends_before_its_last_block_is_refused_even_with_its_end_marker() {
        for grey in [false, true] {
            let whole = noisy_jpeg(320, 240, grey);
            let examined = examine(&whole).unwrap();
            assert_eq!((examined.width, examined.height), (320, 240));
            // Cut in the middle of its data, the end-of-image marker put back.
            let mut cut = whole[..whole.len() * 6 / 10].to_vec();
            cut.extend_from_slice(&[0xFF, 0xD9]);
            // A header that claims three times the rows the data holds (more than a bit a block).
            let mut tall = whole.clone();
            let frame = tall.windows(2).position(|marker| marker == [0xFF, 0xC0]).expect("a baseline frame header");
            tall[frame + 5..frame + 7].copy_from_slice(&720u16.to_be_bytes());
            // A byte of the data changed into a marker.
            let mut marked = whole.clone();
            let middle = marked.len() / 2;
            marked[middle..middle + 2].copy_from_slice(&[0xFF, 0xD9]);
            for (what, bytes) in [("cut", cut), ("tall", tall), ("marked", marked)] {
                match examine(&bytes) {
                    Err(Error::InvalidArgument { field, reason }) => {
                        assert_eq!(field, "body");
                        assert!(reason.contains("cut short") || reason.contains("damaged"), "{what}: {reason}");
                    }
                    other => panic!("{what}, grey {grey}: {:?}", other.map(|examined| examined.height)),
                }
            }
        }
    }

    /// Made by libjpeg's `cjpeg` from 64×48 pixels of noise: progressive (4:2:0, a restart marker
    /// every 3 MCUs; grey) and sequential (4:2:2, restart markers).
    const ENCODED_ELSEWHERE: [(&str, &[u8]); 3] = [
        ("progressive-restarts", include_bytes!("../testdata/progressive-restarts.jpg")),
        ("progressive-grey", include_bytes!("../testdata/progressive-grey.jpg")),
        ("sequential-restarts", include_bytes!("../testdata/sequential-restarts.jpg")),
    ];

    #[test]
    fn a_jpegs_stray_bytes_between_segments_are_passed_over_and_a_second_frame_is_refused() {
        for (name, whole) in ENCODED_ELSEWHERE {
            let at = whole.windows(2).position(|marker| marker == [0xFF, 0xDB]).expect("a quantisation table");
            let stray = [&whole[..at], b"\x00\x11\x22".as_slice(), &whole[at..]].concat();
            assert!(matches!(crate::jpeg::check(&stray), Ok(end) if end <= stray.len()), "{name}");
            let frame = whole.windows(2).position(|marker| matches!(marker, [0xFF, 0xC0..=0xC2])).unwrap();
            let length = usize::from(u16::from_be_bytes([whole[frame + 2], whole[frame + 3]]));
            let twice = [&whole[..frame + 2 + length], &whole[frame..]].concat();
            assert!(matches!(crate::jpeg::check(&twice), Err(crate::jpeg::Shortfall::Damaged(_))), "{name}");
        }
    }

    #[test]
    fn a_jpeg_cut_between_scans_or_with_data_past_its_last_block_is_refused() {
        use crate::jpeg::{Shortfall, check};
        for (name, whole) in ENCODED_ELSEWHERE {
            let scans: Vec<usize> =
                whole.windows(2).enumerate().filter(|(_, m)| *m == [0xFF, 0xDA]).map(|(at, _)| at).collect();
            // Cut where a later scan starts, the end-of-image marker put back: scans are missing.
            if let Some(&second) = scans.get(1) {
                let cut = [&whole[..second], [0xFF, 0xD9].as_slice()].concat();
                assert_eq!(check(&cut), Err(Shortfall::ScansMissing), "{name}");
                assert!(examine(&cut).is_err(), "{name}");
            }
            // Bytes of data after the first scan's last block, where its data ends.
            let header = scans[0] + 2 + usize::from(u16::from_be_bytes([whole[scans[0] + 2], whole[scans[0] + 3]]));
            let end = (header..whole.len() - 1)
                .find(|at| whole[*at] == 0xFF && !matches!(whole[at + 1], 0x00 | 0xD0..=0xD7))
                .unwrap();
            let padded = [&whole[..end], b"\x12\x34\x56".as_slice(), &whole[end..]].concat();
            assert!(matches!(check(&padded), Err(Shortfall::Damaged(_))), "{name}");
        }
        // An arithmetic-coded frame is named as what it is.
        let (_, sequential) = ENCODED_ELSEWHERE[2];
        let frame = sequential.windows(2).position(|marker| marker == [0xFF, 0xC0]).unwrap();
        let mut arithmetic = sequential.to_vec();
        arithmetic[frame + 1] = 0xC9;
        assert_eq!(check(&arithmetic), Err(Shortfall::Unsupported("an arithmetic-coded")));
        // So is a JPEG-LS frame (SOF55), and a lossless one.
        for marker in [0xF7, 0xC3] {
            let mut lossless = sequential.to_vec();
            lossless[frame + 1] = marker;
            assert_eq!(check(&lossless), Err(Shortfall::Unsupported("a lossless")), "{marker:X}");
        }
        // Samples of 12 bits, which the decoder does not read, said so; of another precision, damaged.
        let baseline = jpeg(16, 16);
        let frame = baseline.windows(2).position(|marker| marker == [0xFF, 0xC0]).unwrap();
        let mut twelve = baseline.clone();
        twelve[frame + 4] = 12;
        assert_eq!(check(&twelve), Err(Shortfall::Unsupported("a 12-bit")));
        twelve[frame + 4] = 7;
        assert_eq!(check(&twelve), Err(Shortfall::Damaged("its sample precision is not 8 bits")));
        match examine(&arithmetic) {
            Err(Error::InvalidArgument { reason, .. }) => {
                assert!(reason.contains("is an arithmetic-coded JPEG"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reading_a_damaged_jpeg_never_panics() {
        let mut random = xorshift(0x9e37_79b9);
        let mut next = move || random() as usize;
        for (_, whole) in ENCODED_ELSEWHERE {
            for _ in 0..2000 {
                let mut damaged = whole.to_vec();
                for _ in 0..1 + next() % 4 {
                    let at = next() % damaged.len();
                    damaged[at] = next() as u8;
                }
                damaged.truncate(damaged.len() - next() % 64);
                let _ = crate::jpeg::check(&damaged);
            }
        }
    }

    #[test]
    fn progressive_and_restarted_jpegs_are_read_whole_and_their_first_scan_cut_short_is_refused() {
        for (name, whole) in ENCODED_ELSEWHERE {
            assert_eq!(crate::jpeg::check(whole), Ok(whole.len()), "{name}");
            let examined = examine(whole).unwrap_or_else(|error| panic!("{name}: {error:?}"));
            assert_eq!((examined.width, examined.height), (64, 48), "{name}");
            // Cut halfway through the first scan's data, the end-of-image marker put back.
            let scans: Vec<usize> =
                whole.windows(2).enumerate().filter(|(_, m)| *m == [0xFF, 0xDA]).map(|(at, _)| at).collect();
            let end = scans.get(1).copied().unwrap_or(whole.len() - 2);
            let mut cut = whole[..(scans[0] + end) / 2].to_vec();
            cut.extend_from_slice(&[0xFF, 0xD9]);
            assert_eq!(crate::jpeg::check(&cut), Err(crate::jpeg::Shortfall::CutShort), "{name}");
            assert!(examine(&cut).is_err(), "{name}");
        }
    }

    /// A progressive JPEG's header claiming `width`×`height` pixels, its data that of 64×48.
    fn progressive_claiming(name: &str, width: u16, height: u16) -> Vec<u8> {
        let (_, whole) = ENCODED_ELSEWHERE.iter().find(|(encoded, _)| *encoded == name).unwrap();
        let mut claiming = whole.to_vec();
        let frame = claiming.windows(2).position(|marker| marker == [0xFF, 0xC2]).expect("a progressive frame");
        claiming[frame + 5..frame + 7].copy_from_slice(&height.to_be_bytes());
        claiming[frame + 7..frame + 9].copy_from_slice(&width.to_be_bytes());
        claiming
    }

    #[test]
    fn a_progressive_jpeg_whose_coefficients_would_take_too_much_memory_is_refused_before_its_data_is_read() {
        // Grey, 6000×6000: 72 MB of coefficients besides 144 MB of pixels.
        let error = examine(&progressive_claiming("progressive-grey", 6000, 6000)).err().unwrap();
        let message = format!("{error:?}");
        assert!(message.contains("is a progressive JPEG of 6000×6000 pixels, which takes 216 MB"), "{message}");
        // In colour (4:2:0), 4000×4000: 48 MB of coefficients and 64 MB of pixels pass the memory
        // check, and the data, which holds 64×48 pixels, is then found cut short.
        let (coefficients, pixels) = (4000u64 / 16 * 4000 / 16 * 6 * 128, 4000u64 * 4000 * 4);
        assert!(coefficients + pixels <= MAX_DECODED_BYTES);
        let claiming = progressive_claiming("progressive-restarts", 4000, 4000);
        assert_eq!(crate::jpeg::claimed(&claiming).unwrap().coefficient_bytes, Some(coefficients));
        let message = format!("{:?}", examine(&claiming).err().unwrap());
        assert!(message.contains("cut short") && !message.contains("MB"), "{message}");
        let sequential = ENCODED_ELSEWHERE.iter().find(|(name, _)| *name == "sequential-restarts").unwrap().1;
        let claimed = crate::jpeg::claimed(sequential).unwrap();
        assert_eq!((claimed.width, claimed.height, claimed.coefficient_bytes), (64, 48, None));
    }

    /// `whole`, a JPEG, with its `nth` scan header made of `header` (count, components, band).
    fn with_scan_header(whole: &[u8], nth: usize, header: impl Fn(&[u8]) -> Vec<u8>) -> Vec<u8> {
        let at = whole.windows(2).enumerate().filter(|(_, m)| *m == [0xFF, 0xDA]).nth(nth).unwrap().0;
        let end = at + 2 + usize::from(u16::from_be_bytes([whole[at + 2], whole[at + 3]]));
        let made = header(&whole[at + 4..end]);
        let length = u16::try_from(made.len() + 2).unwrap().to_be_bytes();
        [&whole[..at + 2], &length, &made, &whole[end..]].concat()
    }

    #[test]
    fn a_jpeg_scan_that_names_a_component_twice_or_breaks_the_standards_limits_is_refused_unread() {
        use crate::jpeg::{Shortfall, check};
        let malformed = Err(Shortfall::Damaged("a scan header is malformed"));
        let (_, grey) = ENCODED_ELSEWHERE[1];
        // The one component named twice: every block would be read twice over.
        let twice = with_scan_header(grey, 0, |header| [&[2], &header[1..3], &header[1..3], &header[3..]].concat());
        assert_eq!(check(&twice), malformed);
        // A progressive scan of AC coefficients holding two components.
        let (_, colour) = ENCODED_ELSEWHERE[0];
        let scans = colour.windows(2).filter(|m| *m == [0xFF, 0xDA]).count();
        let ac = (0..scans)
            .find(|nth| {
                let at = colour.windows(2).enumerate().filter(|(_, m)| *m == [0xFF, 0xDA]).nth(*nth).unwrap().0;
                colour[at + 4] == 1 && colour[at + 7] > 0
            })
            .expect("a progressive AC scan");
        let frame = colour.windows(2).position(|marker| marker == [0xFF, 0xC2]).unwrap();
        let (luma, chroma) = (colour[frame + 10], colour[frame + 13]);
        let two = with_scan_header(colour, ac, |header| {
            [&[2, luma], &header[2..3], &[chroma], &header[2..3], &header[3..]].concat()
        });
        assert_eq!(check(&two), malformed);
        // A frame that names one component twice.
        let mut same = colour.to_vec();
        same[frame + 13] = luma;
        assert_eq!(check(&same), Err(Shortfall::Damaged("its frame header is malformed")));
        assert!(examine(&twice).is_err() && examine(&two).is_err() && examine(&same).is_err());
    }

    /// Made by jpeg-js 0.4.4 (the encoder in Jimp) from 8×16 pixels of noise: its data ends on a
    /// byte's edge, and the encoder writes a whole byte of 1-bits (`FF 00`) after it all the same.
    const WHOLE_PADDING_BYTE: &[u8] = include_bytes!("../testdata/whole-padding-byte.jpg");

    #[test]
    fn a_whole_byte_of_padding_after_a_scans_last_block_is_passed_over_and_more_is_refused() {
        assert_eq!(&WHOLE_PADDING_BYTE[WHOLE_PADDING_BYTE.len() - 4..], [0xFF, 0x00, 0xFF, 0xD9]);
        assert_eq!(crate::jpeg::check(WHOLE_PADDING_BYTE), Ok(WHOLE_PADDING_BYTE.len()));
        let examined = examine(WHOLE_PADDING_BYTE).unwrap();
        assert_eq!((examined.width, examined.height), (8, 16));
        // Without the padding byte, as libjpeg's encoder would have left it: the same image.
        let end = WHOLE_PADDING_BYTE.len() - 4;
        let trimmed = [&WHOLE_PADDING_BYTE[..end], &[0xFF, 0xD9]].concat();
        assert_eq!(crate::jpeg::check(&trimmed), Ok(trimmed.len()));
        // A byte of 1-bits more, or a byte that is not all 1-bits, is data past the last block.
        let two = [&WHOLE_PADDING_BYTE[..end], &[0xFF, 0x00, 0xFF, 0x00, 0xFF, 0xD9]].concat();
        let other = [&WHOLE_PADDING_BYTE[..end], &[0xFE, 0xFF, 0xD9]].concat();
        for bytes in [two, other] {
            assert_eq!(
                crate::jpeg::check(&bytes),
                Err(crate::jpeg::Shortfall::Damaged("a scan has data left over after its last block"))
            );
        }
    }

    #[test]
    fn a_second_start_of_image_marker_is_refused_and_hides_no_frame_from_the_size_check() {
        // A small baseline frame in a segment after a second start-of-image marker, before the
        // real frame: one reading would take the small frame's size, another the real one's.
        let (_, grey) = ENCODED_ELSEWHERE[1];
        let small = jpeg(16, 16);
        let frame = small.windows(2).position(|marker| marker == [0xFF, 0xC0]).unwrap();
        let length = usize::from(u16::from_be_bytes([small[frame + 2], small[frame + 3]]));
        let hidden = [&grey[..2], &[0xFF, 0xD8], &small[frame..frame + 2 + length], &grey[2..]].concat();
        assert_eq!(crate::jpeg::claimed(&hidden), None);
        assert_eq!(
            crate::jpeg::check(&hidden),
            Err(crate::jpeg::Shortfall::Damaged("it has a second start-of-image marker"))
        );
        let message = format!("{:?}", examine(&hidden).err().unwrap());
        assert!(message.contains("second start-of-image marker"), "{message}");
    }

    #[test]
    fn a_picture_after_a_jpegs_end_larger_than_an_image_accepted_is_refused() {
        let trailing = progressive_claiming("progressive-grey", 65_535, 65_535);
        let message = format!("{:?}", examine(&[jpeg(16, 16), trailing].concat()).err().unwrap());
        assert!(message.contains("has a picture after its end larger than the images accepted here"), "{message}");
    }

    /// `bytes` compressed with zlib.
    fn zlib(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut encoder, bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn a_png_colour_profile_that_unpacks_past_its_limit_is_refused() {
        let image = png(40, 30);
        let large = zlib(&vec![0; MAX_UNPACKED_PROFILE as usize + 1]);
        let small = zlib(&[7; 3_000]);
        let profile = |compressed: &[u8]| [b"profile\0\0".as_slice(), compressed].concat();
        let message = format!("{:?}", examine(&with_early_chunk(&image, b"iCCP", &profile(&large))).err().unwrap());
        assert!(message.contains("its colour profile (iCCP chunk) unpacks to more than 8 MB"), "{message}");
        assert!(examine(&with_early_chunk(&image, b"iCCP", &profile(&small))).is_ok());
        // Only the profile the decoder unpacks is: a second one, one after the image data, and
        // text chunks, which it keeps compressed, are not unpacked here either.
        let second = with_early_chunk(&with_early_chunk(&image, b"iCCP", &profile(&large)), b"iCCP", &profile(&small));
        assert!(examine(&second).is_ok());
        assert!(examine(&with_chunk(&image, b"iCCP", &profile(&large))).is_ok());
        let text = [b"Comment\0\0".as_slice(), &large].concat();
        assert!(examine(&with_chunk(&image, b"zTXt", &text)).is_ok());
    }

    #[test]
    fn a_photos_thumbnail_is_turned_as_its_exif_orientation_says() {
        // APP1 with an EXIF IFD of one entry: Orientation (0x0112), SHORT, 6 (turn 90° clockwise).
        let tiff = [&b"II*\0\x08\0\0\0\x01\0"[..], b"\x12\x01\x03\0\x01\0\0\0\x06\0\0\0", b"\0\0\0\0"].concat();
        let exif = [&b"Exif\0\0"[..], &tiff].concat();
        let segment = [&[0xFF, 0xE1][..], &u16::try_from(exif.len() + 2).unwrap().to_be_bytes(), &exif].concat();
        let photo = jpeg(300, 200);
        let turned = [&photo[..2], &segment, &photo[2..]].concat();
        for (bytes, side) in [(&photo, (256, 171)), (&turned, (171, 256))] {
            let examined = examine(bytes).unwrap();
            assert_eq!((examined.width, examined.height), (300, 200), "the file's own pixels");
            let thumbnail = image::load_from_memory(&examined.thumbnail.unwrap()).unwrap();
            assert_eq!((thumbnail.width(), thumbnail.height()), side);
        }
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
        let polyglots: [&[u8]; 15] = [
            b" \n<html><script>alert(1)</script>",
            b"%!PS-Adobe-3.0\n",
            b"\r\n{\\rtf1\\ansi",
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
        // After `DICM`, in an element of the data set, within the first 1024 bytes.
        let mut inside = DICOM.to_vec();
        inside.extend_from_slice(&[0; 1024]);
        let at = inside.len().min(1024) - 8;
        inside[at..at + 4].copy_from_slice(b"%PDF");
        let reason = match examine(&inside) {
            Err(Error::InvalidArgument { reason, .. }) => reason,
            other => panic!("accepted or refused otherwise: {other:?}"),
        };
        assert!(reason.contains("PDF header in its first 1024 bytes"), "{reason}");
    }

    /// A one-pixel PNG whose header claims `width`×`height` pixels, with the header's CRC fixed.
    fn png_claiming(width: u32, height: u32) -> Vec<u8> {
        png_claiming_pixels(width, height, 8, 2)
    }

    /// A one-pixel PNG whose header claims `width`×`height` pixels of bit depth `depth` and colour
    /// type `colour`, with the header's CRC fixed.
    fn png_claiming_pixels(width: u32, height: u32, depth: u8, colour: u8) -> Vec<u8> {
        let mut bytes = png(1, 1);
        // After the signature, IHDR: its length, type, width, height, depth, colour type, 3 more
        // bytes, then its CRC.
        assert_eq!(&bytes[12..16], b"IHDR");
        bytes[16..20].copy_from_slice(&width.to_be_bytes());
        bytes[20..24].copy_from_slice(&height.to_be_bytes());
        bytes[24] = depth;
        bytes[25] = colour;
        let crc = crc32fast::hash(&bytes[12..29]);
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
        // Within the pixels, but of 16-bit channels that decode to more than 8-bit RGBA would.
        assert_eq!(
            match examine(&png_claiming_pixels(6_300, 6_300, 16, 6)) {
                Err(Error::InvalidArgument { reason, .. }) => reason,
                other => panic!("accepted or refused otherwise: {other:?}"),
            },
            "is an image of 6300×6300 pixels of 8 bytes each, 318 MB decoded: at most 160 MB are accepted (send \
             8-bit channels, or fewer pixels)"
        );
        let size = |depth, colour, transparency| {
            png_decoded_size(&png_claiming_pixels(6_300, 6_300, depth, colour)[16..29], transparency)
        };
        assert_eq!(size(16, 0, false), Some(79_380_000));
        assert_eq!(size(16, 0, true), Some(158_760_000), "grey and alpha");
        assert_eq!(size(8, 6, false), Some(158_760_000));
        assert_eq!(size(1, 3, false), Some(158_760_000));
        assert_eq!(size(16, 2, false), Some(238_140_000));
        assert_eq!(size(16, 2, true), Some(317_520_000), "RGBA");
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
        // An empty archive's record, as the last bytes, with its comment after it, or with bytes
        // after it that readers tolerate.
        for (comment, after) in [(b"".as_slice(), b"".as_slice()), (b"hi", b""), (b"", b"\0\0\0\0")] {
            let mut empty = DICOM.to_vec();
            empty.extend_from_slice(b"PK\x05\x06");
            empty.extend_from_slice(&[0; 16]);
            empty.extend_from_slice(&u16::try_from(comment.len()).unwrap().to_le_bytes());
            empty.extend_from_slice(comment);
            empty.extend_from_slice(after);
            refused(&empty, "ends with a ZIP archive");
        }
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
        // The preamble and `DICM` alone are DICOM whose meta information is missing.
        assert_eq!(MediaType::detect(&DICOM[..132]), Some(MediaType::Dicom));
        refused(&DICOM[..132], "cut short");
        let mut implicit = DICOM.to_vec();
        implicit[136..138].copy_from_slice(&[0x04, 0x00]);
        refused(&implicit, "explicit VR");
        let mut no_uid = DICOM.to_vec();
        let syntax = DICOM.windows(19).position(|window| window == b"1.2.840.10008.1.2.1").unwrap();
        no_uid[syntax..syntax + 4].copy_from_slice(b"abcd");
        refused(&no_uid, "not a UID");
        // A UID padded with a space rather than a NUL, as some writers do, is read.
        let mut spaced = DICOM.to_vec();
        spaced[syntax + 19] = b' ';
        assert_eq!(check_dicom(&spaced).unwrap().transfer_syntax, b"1.2.840.10008.1.2.1");
    }

    #[test]
    fn an_executable_or_a_truncated_image_is_refused() {
        for bytes in [b"\x7fELF\x02\x01\x01".to_vec(), b"MZ\x90\x00".to_vec(), Vec::new(), png(10, 10)[..20].to_vec()] {
            assert!(matches!(examine(&bytes), Err(Error::InvalidArgument { ref field, .. }) if field == "body"));
        }
    }

    fn jpeg(width: u32, height: u32) -> Vec<u8> {
        let mut bytes = Vec::new();
        image::RgbImage::from_pixel(width, height, image::Rgb([10, 200, 10]))
            .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Jpeg)
            .unwrap();
        bytes
    }

    /// `bytes` with a ZIP archive appended, as `cat image.png archive.zip` leaves it: a central
    /// directory and the record at the end that points to it.
    fn with_zip(bytes: &[u8]) -> Vec<u8> {
        let directory = [b"PK\x01\x02".as_slice(), &[0; 42]].concat();
        let mut zipped = bytes.to_vec();
        zipped.extend_from_slice(&directory);
        zipped.extend_from_slice(b"PK\x05\x06\0\0\0\0\x01\0\x01\0");
        zipped.extend_from_slice(&u32::try_from(directory.len()).unwrap().to_le_bytes());
        zipped.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        zipped
    }

    /// `bytes` and a ZIP archive whose end record gives its directory's size as 0 and its offset
    /// right.
    fn with_zip_of_no_size(bytes: &[u8]) -> Vec<u8> {
        let mut zipped = with_zip(bytes);
        let record = zipped.len() - 22;
        zipped[record + 12..record + 16].copy_from_slice(&[0; 4]);
        zipped[record + 16..record + 20].copy_from_slice(&u32::try_from(bytes.len()).unwrap().to_le_bytes());
        zipped
    }

    #[test]
    fn a_png_or_jpeg_image_that_ends_with_a_zip_archive_is_refused() {
        for (picture, media_type) in [(png(40, 30), "image/png"), (jpeg(40, 30), "image/jpeg")] {
            let examined = examine(&picture).unwrap_or_else(|error| panic!("{media_type} alone: {error:?}"));
            assert_eq!(examined.media_type.as_str(), media_type);
            for zipped in [with_zip(&picture), with_zip_of_no_size(&picture)] {
                match examine(&zipped) {
                    Err(Error::InvalidArgument { field, reason }) => {
                        assert_eq!(field, "body");
                        assert_eq!(reason, format!("starts as {media_type} but it ends with a ZIP archive"));
                    }
                    other => panic!("{media_type} with a ZIP archive accepted or refused otherwise: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn an_image_with_a_pdf_header_in_its_first_1024_bytes_is_refused() {
        for (picture, media_type) in [(png(40, 30), "image/png"), (jpeg(40, 30), "image/jpeg")] {
            // Where a text chunk or a comment would put it.
            let mut document = picture.clone();
            let at = picture.len().min(1024) - 8;
            document[at..at + 4].copy_from_slice(b"%PDF");
            match examine(&document) {
                Err(Error::InvalidArgument { field, reason }) => {
                    assert_eq!(field, "body");
                    let expected = format!("starts as {media_type} but it holds a PDF header in its first 1024 bytes");
                    assert_eq!(reason, expected);
                }
                other => panic!("{media_type} with a PDF header accepted or refused otherwise: {other:?}"),
            }
        }
        assert!(!holds_pdf_header(&[b"x".repeat(1021).as_slice(), b"%PDF"].concat()), "past 1024 bytes");
        assert!(holds_pdf_header(&[b"x".repeat(1020).as_slice(), b"%PDF"].concat()));
    }

    #[test]
    fn the_declared_type_must_be_an_image_type_and_what_the_bytes_are() {
        let accepted = [
            ("image/png", Some(MediaType::Png)),
            (" Image/PNG ; name=x.png", Some(MediaType::Png)),
            ("image/jpeg", Some(MediaType::Jpeg)),
            ("application/dicom", Some(MediaType::Dicom)),
            ("application/octet-stream", None),
        ];
        for (content_type, expected) in accepted {
            assert_eq!(declared_type(content_type).unwrap(), expected, "{content_type:?}");
        }
        let refused = [
            ("text/plain", "text/plain is not a type of image accepted here"),
            ("application/json", "application/json is not a type of image accepted here"),
            ("multipart/form-data; boundary=x", "multipart/form-data is not a type of image accepted here"),
            ("image/gif", "image/gif is not a type of image accepted here"),
            ("image/*", "image/* is not a type of image accepted here"),
            ("  ", "is required"),
        ];
        for (content_type, expected) in refused {
            match declared_type(content_type) {
                Err(Error::InvalidArgument { field, reason }) => {
                    assert_eq!(field, "Content-Type", "{content_type:?}");
                    assert!(reason.starts_with(expected), "{content_type:?}: {reason}");
                    assert!(reason.contains("image/png, image/jpeg or application/dicom"), "{reason}");
                }
                other => panic!("{content_type:?} accepted or refused otherwise: {other:?}"),
            }
        }

        let picture = png(4, 4);
        assert_eq!(recognise(&picture, Some(MediaType::Png)).unwrap(), MediaType::Png);
        assert_eq!(recognise(&picture, None).unwrap(), MediaType::Png);
        assert_eq!(recognise(DICOM, None).unwrap(), MediaType::Dicom);
        let refusal = |bytes: &[u8], declared: MediaType| match recognise(bytes, Some(declared)) {
            Err(Error::InvalidArgument { field, reason }) => (field, reason),
            other => panic!("{declared} accepted or refused otherwise: {other:?}"),
        };
        let mismatches = [
            (picture.as_slice(), MediaType::Jpeg, "the body is a PNG image, not a JPEG image as it says"),
            (picture.as_slice(), MediaType::Dicom, "the body is a PNG image, not a DICOM file as it says"),
            (DICOM, MediaType::Png, "the body is a DICOM file, not a PNG image as it says"),
        ];
        for (bytes, declared, expected) in mismatches {
            assert_eq!(refusal(bytes, declared), ("Content-Type".to_owned(), expected.to_owned()));
        }
        assert_eq!(
            refusal(b"\x7fELF\x02\x01\x01".as_slice(), MediaType::Png).0,
            "body",
            "what is no image is the body's fault"
        );
    }

    #[tokio::test]
    async fn an_upload_waits_a_bounded_time_for_an_examination_slot() {
        let slots = Arc::new(Semaphore::new(1));
        let held = examination_slot(&slots, Duration::from_millis(10)).await.unwrap();

        let status = match examination_slot(&slots, Duration::from_millis(50)).await {
            Err(Error::Refused(status)) => status,
            other => panic!("a slot was given, or refused otherwise: {other:?}"),
        };
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(status.message(), "too many images are being examined; retry in a few seconds");
        let retry_after = status.metadata().get(aigronova_platform::error::RETRY_AFTER_METADATA_KEY);
        assert_eq!(retry_after.unwrap(), "2", "the gateway answers it as Retry-After");

        // A slot that frees while an upload waits goes to it.
        let waiting = tokio::spawn({
            let slots = slots.clone();
            async move { examination_slot(&slots, Duration::from_secs(10)).await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        assert!(waiting.await.unwrap(), "the freed slot was given");
    }

    const EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1";
    const IMPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2";

    /// A DICOM file: an empty preamble, `DICM`, meta information naming `transfer_syntax`, then
    /// `data_set`.
    fn dicom_file(transfer_syntax: &str, data_set: &[u8]) -> Vec<u8> {
        let mut uid = transfer_syntax.as_bytes().to_vec();
        if uid.len() % 2 == 1 {
            uid.push(0);
        }
        let mut bytes = vec![0; PREAMBLE];
        bytes.extend_from_slice(b"DICM");
        bytes.extend_from_slice(&explicit((0x0002, 0x0010), b"UI", &uid));
        bytes.extend_from_slice(data_set);
        bytes
    }

    /// An element in explicit VR little endian, of a VR whose length takes 2 bytes.
    fn explicit((group, element): Tag, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let length = u16::try_from(value.len()).unwrap().to_le_bytes();
        let parts: [&[u8]; 5] = [&group.to_le_bytes(), &element.to_le_bytes(), vr, &length, value];
        parts.concat()
    }

    /// An element in explicit VR little endian, of a VR whose length takes 4 bytes after 2 reserved ones.
    fn long_explicit((group, element): Tag, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let length = u32::try_from(value.len()).unwrap().to_le_bytes();
        let parts: [&[u8]; 6] = [&group.to_le_bytes(), &element.to_le_bytes(), vr, &[0, 0], &length, value];
        parts.concat()
    }

    /// An element in implicit VR little endian.
    fn implicit((group, element): Tag, value: &[u8]) -> Vec<u8> {
        let length = u32::try_from(value.len()).unwrap().to_le_bytes();
        let parts: [&[u8]; 4] = [&group.to_le_bytes(), &element.to_le_bytes(), &length, value];
        parts.concat()
    }

    /// The header of an explicit VR element of VR `vr` (`SQ` or `UN`) whose length is undefined.
    fn undefined_explicit((group, element): Tag, vr: &[u8; 2]) -> Vec<u8> {
        let parts: [&[u8]; 5] =
            [&group.to_le_bytes(), &element.to_le_bytes(), vr, &[0, 0], &UNDEFINED_LENGTH.to_le_bytes()];
        parts.concat()
    }

    /// A tag and a 4-byte length: an implicit VR element's header, or an item's or a delimiter's.
    fn framing((group, element): Tag, length: u32) -> Vec<u8> {
        let parts: [&[u8]; 3] = [&group.to_le_bytes(), &element.to_le_bytes(), &length.to_le_bytes()];
        parts.concat()
    }

    /// A data set in explicit VR: sequences of undefined length and of defined length before the
    /// image's own Rows and Columns, their items holding a Rows or Columns of their own, and a
    /// private element of VR `UN` holding implicit VR elements.
    fn explicit_data_set(rows: u16, columns: u16) -> Vec<u8> {
        let defined_item = explicit((0x0008, 0x1155), b"UI", b"1.2\0");
        let parts: [Vec<u8>; 17] = [
            explicit((0x0008, 0x0060), b"CS", b"MR"),
            undefined_explicit((0x0008, 0x1140), b"SQ"),
            framing(ITEM, UNDEFINED_LENGTH),
            explicit(ROWS, b"US", &7_u16.to_le_bytes()),
            framing(ITEM_END, 0),
            framing(ITEM, u32::try_from(defined_item.len()).unwrap()),
            defined_item,
            framing(SEQUENCE_END, 0),
            undefined_explicit((0x0009, 0x1010), b"UN"),
            framing(ITEM, UNDEFINED_LENGTH),
            implicit(COLUMNS, &9_u16.to_le_bytes()),
            framing(ITEM_END, 0),
            framing(SEQUENCE_END, 0),
            explicit(ROWS, b"US", &rows.to_le_bytes()),
            explicit(COLUMNS, b"US", &columns.to_le_bytes()),
            // Bits Stored, not Bits Allocated: its one pixel is not measured against its size.
            explicit((0x0028, 0x0101), b"US", &16_u16.to_le_bytes()),
            explicit_pixels(),
        ];
        parts.concat()
    }

    /// A Pixel Data element of one 16-bit pixel, in explicit VR.
    fn explicit_pixels() -> Vec<u8> {
        long_explicit((0x7FE0, 0x0010), b"OW", &[0; 2])
    }

    /// A Pixel Data element of one 16-bit pixel, in implicit VR.
    fn implicit_pixels() -> Vec<u8> {
        implicit((0x7FE0, 0x0010), &[0; 2])
    }

    fn dimensions(bytes: &[u8]) -> (u32, u32) {
        let examined = examine(bytes).unwrap_or_else(|error| panic!("refused: {error:?}"));
        assert_eq!(examined.media_type, MediaType::Dicom);
        (examined.width, examined.height)
    }

    #[test]
    fn the_columns_and_rows_of_a_dicom_image_are_its_width_and_height() {
        assert_eq!(dimensions(DICOM), (1, 1));
        assert_eq!(dimensions(&dicom_file(EXPLICIT_VR_LITTLE_ENDIAN, &explicit_data_set(480, 640))), (640, 480));
        // A compressed transfer syntax: the data set is explicit VR little endian all the same.
        assert_eq!(dimensions(&dicom_file("1.2.840.10008.1.2.4.50", &explicit_data_set(512, 256))), (256, 512));

        let implicit_data_set = [
            implicit((0x0008, 0x0060), b"CT"),
            framing((0x0008, 0x1140), UNDEFINED_LENGTH),
            framing(ITEM, UNDEFINED_LENGTH),
            implicit(ROWS, &3_u16.to_le_bytes()),
            framing(ITEM_END, 0),
            framing(SEQUENCE_END, 0),
            implicit(ROWS, &1024_u16.to_le_bytes()),
            implicit(COLUMNS, &768_u16.to_le_bytes()),
            implicit_pixels(),
        ]
        .concat();
        assert_eq!(dimensions(&dicom_file(IMPLICIT_VR_LITTLE_ENDIAN, &implicit_data_set)), (768, 1024));

        // A data set that does not give them, or only in another form than one 16-bit value.
        let no_rows = [
            explicit((0x0008, 0x0060), b"CS", b"MR"),
            explicit(COLUMNS, b"US", &640_u16.to_le_bytes()),
            explicit_pixels(),
        ];
        assert_eq!(dimensions(&dicom_file(EXPLICIT_VR_LITTLE_ENDIAN, &no_rows.concat())), (640, 0));
        let long_rows = [
            explicit(ROWS, b"UL", &480_u32.to_le_bytes()),
            explicit(COLUMNS, b"US", &640_u16.to_le_bytes()),
            explicit_pixels(),
        ];
        assert_eq!(dimensions(&dicom_file(EXPLICIT_VR_LITTLE_ENDIAN, &long_rows.concat())), (640, 0));
        // Padding after the data set, as after a PNG's or a JPEG's end.
        let padded = [dicom_file(EXPLICIT_VR_LITTLE_ENDIAN, &explicit_data_set(480, 640)), vec![0; 7]].concat();
        assert_eq!(dimensions(&padded), (640, 480));
    }

    /// Why `bytes`, a DICOM file, is refused.
    /// A sequence of defined length (explicit VR) of one item of defined length holding `inner`.
    fn defined_sequence(tag: Tag, inner: &[u8]) -> Vec<u8> {
        let item = [framing(ITEM, u32::try_from(inner.len()).unwrap()), inner.to_vec()].concat();
        long_explicit(tag, b"SQ", &item)
    }

    #[test]
    fn the_items_of_a_sequence_of_defined_length_are_read_as_any() {
        let image = [
            explicit(ROWS, b"US", &480_u16.to_le_bytes()),
            explicit(COLUMNS, b"US", &640_u16.to_le_bytes()),
            explicit_pixels(),
        ];
        let file = |inner: &[u8]| {
            let data_set = [defined_sequence((0x0008, 0x1140), inner), image.concat()].concat();
            dicom_file(EXPLICIT_VR_LITTLE_ENDIAN, &data_set)
        };
        // Read whole: elements, a sequence nested in it, an item of undefined length within.
        let nested = defined_sequence((0x0008, 0x1155), &explicit((0x0008, 0x1150), b"UI", b"1.2\0"));
        let open_item = [
            long_explicit((0x0040, 0x0260), b"SQ", &[]),
            undefined_explicit((0x0040, 0x0275), b"SQ"),
            framing(ITEM, UNDEFINED_LENGTH),
            explicit((0x0040, 0x0007), b"LO", b"scan"),
            framing(ITEM_END, 0),
            framing(SEQUENCE_END, 0),
        ]
        .concat();
        let whole = [explicit((0x0008, 0x0060), b"CS", b"MR"), nested, open_item].concat();
        assert_eq!(dimensions(&file(&whole)), (640, 480));
        // Bytes that are no element within an item, an element past its item's end, nesting past the limit.
        let garbage = [explicit((0x0008, 0x0060), b"CS", b"MR"), b"\xDE\xAD\xBE\xEF".repeat(10)].concat();
        assert!(dicom_refusal(&file(&garbage)).contains("(0008,1140)"));
        let mut past = explicit((0x0008, 0x0060), b"CS", b"MR");
        past[6] = 40;
        assert!(dicom_refusal(&file(&past)).contains("(0008,1140)"));
        // With the sequence `file` puts them in: 64 levels read, 65 refused.
        let nested = |levels: usize| {
            let mut nested = explicit((0x0008, 0x0060), b"CS", b"MR");
            for _ in 1..levels {
                nested = defined_sequence((0x0008, 0x1140), &nested);
            }
            file(&nested)
        };
        assert_eq!(dimensions(&nested(MAX_NESTING)), (640, 480));
        assert!(dicom_refusal(&nested(MAX_NESTING + 1)).contains("nests deeper than 64 levels"));
    }

    fn dicom_refusal(bytes: &[u8]) -> String {
        match examine(bytes) {
            Err(Error::InvalidArgument { field, reason }) if field == "body" => reason,
            other => panic!("a damaged DICOM file accepted or refused otherwise: {other:?}"),
        }
    }

    #[test]
    fn a_dicom_data_set_not_read_to_its_end_is_refused() {
        // Not read, so not checked: a deflated or big endian data set, a private transfer syntax.
        for syntax in ["1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2", "1.3.6.1.4.1.5962.300.1"] {
            assert_eq!(
                dicom_refusal(&dicom_file(syntax, &explicit_data_set(480, 640))),
                format!(
                    "starts as DICOM but its transfer syntax, {syntax}, is not read here (a deflated or big endian \
                     data set, or a private syntax): send it in explicit or implicit VR little endian"
                ),
            );
        }
        let whole = dicom_file(EXPLICIT_VR_LITTLE_ENDIAN, &explicit_data_set(480, 640));
        let pixels = long_explicit((0x7FE0, 0x0010), b"OW", &[0; 40]);
        let pixels_at = whole.len();
        let imaged = [&whole[..], &pixels].concat();
        assert_eq!(dimensions(&imaged), (640, 480));
        let damaged = "the file is cut short or damaged, or other data follows its data set";
        // Cut inside its pixel data, or inside an element's header.
        assert_eq!(
            dicom_refusal(&imaged[..imaged.len() - 30]),
            format!(
                "starts as DICOM but has an element at byte {pixels_at}, (7FE0,0010), that runs past the end of the \
                 file or holds a sequence that does not end as it should, or nests deeper than 64 levels: {damaged}"
            ),
        );
        assert_eq!(
            dicom_refusal(&imaged[..pixels_at + 5]),
            format!("starts as DICOM but has bytes at byte {pixels_at} that are not a whole data element: {damaged}"),
        );
        // Another file after the data set: an executable or a PNG.
        let end = imaged.len();
        for appended in [&b"\x7fELF\x02\x01\x01\0payload"[..], &png(4, 4)[..]] {
            let refusal = dicom_refusal(&[&imaged[..], appended].concat());
            assert!(refusal.starts_with("starts as DICOM but has "), "{refusal}");
            assert!(refusal.contains(&format!("at byte {end}")) && refusal.ends_with(damaged), "{refusal}");
        }
        // In implicit VR, where any 8 bytes read as an element's header, bytes that read as an
        // element whose tag comes before the last one's.
        let implicit_data_set =
            [implicit((0x0008, 0x0060), b"CT"), implicit(ROWS, &3_u16.to_le_bytes()), implicit_pixels()].concat();
        let implicit_file = dicom_file(IMPLICIT_VR_LITTLE_ENDIAN, &implicit_data_set);
        let end = implicit_file.len();
        let refusal = dicom_refusal(&[&implicit_file[..], &implicit((0x0008, 0x0016), b"1.2\0")].concat());
        assert_eq!(
            refusal,
            format!("starts as DICOM but has an element out of place at byte {end}, (0008,0016): {damaged}")
        );
        // In explicit VR, private elements left out of order by their writer, and a sequence's
        // delimiter left at the top level, are read.
        let unordered = [
            explicit((0x0008, 0x0060), b"CS", b"MR"),
            explicit(ROWS, b"US", &3_u16.to_le_bytes()),
            explicit((0x0029, 0x1010), b"LO", b"VALUE"),
            explicit((0x0029, 0x0010), b"LO", b"VENDOR"),
            explicit_pixels(),
            framing(SEQUENCE_END, 0),
        ];
        assert_eq!(dimensions(&dicom_file(EXPLICIT_VR_LITTLE_ENDIAN, &unordered.concat())), (0, 3));
        let implicit_unordered =
            [implicit((0x0029, 0x1010), b"VALUE\0"), implicit((0x0029, 0x0010), b"VENDOR"), implicit_pixels()];
        assert_eq!(dimensions(&dicom_file(IMPLICIT_VR_LITTLE_ENDIAN, &implicit_unordered.concat())), (0, 0));
        // An earlier group after a later one, or the meta information's group again: another data set
        // appended, whichever the encoding.
        let whole = dicom_file(EXPLICIT_VR_LITTLE_ENDIAN, &explicit_data_set(480, 640));
        let appended = [&whole[..], &whole[PREAMBLE + 4..]].concat();
        assert!(dicom_refusal(&appended).contains("out of place"), "{}", dicom_refusal(&appended));
        let earlier = [&implicit_file[..], &implicit((0x0010, 0x0010), b"Other^Person")].concat();
        assert!(dicom_refusal(&earlier).contains("out of place at byte"), "{}", dicom_refusal(&earlier));
        // In explicit VR a group put late by its writer is read, and an empty delimiter before the
        // first element does not hide the encoding.
        let late = [&whole[..], &explicit((0x0010, 0x0010), b"PN", b"Late^Group")].concat();
        assert_eq!(dimensions(&late), (640, 480));
        let delimited = dicom_file(
            EXPLICIT_VR_LITTLE_ENDIAN,
            &[framing(SEQUENCE_END, 0), explicit(ROWS, b"US", &3_u16.to_le_bytes()), explicit_pixels()].concat(),
        );
        assert_eq!(dimensions(&delimited), (0, 3));
        // Written in the other encoding than its transfer syntax says, as some writers do.
        assert_eq!(dimensions(&dicom_file(EXPLICIT_VR_LITTLE_ENDIAN, &implicit_data_set)), (0, 3));
        let explicit_data_set = explicit_data_set(480, 640);
        assert_eq!(dimensions(&dicom_file(IMPLICIT_VR_LITTLE_ENDIAN, &explicit_data_set)), (640, 480));
    }

    #[test]
    fn native_pixel_data_shorter_than_its_size_calls_for_is_refused() {
        // Rows, Columns, Samples per Pixel, Bits Allocated, Number of Frames (IS), then the pixels.
        let image = |rows: u16, columns: u16, samples: Option<u16>, bits: u16, frames: Option<&[u8]>, pixels: usize| {
            let mut parts =
                vec![explicit(ROWS, b"US", &rows.to_le_bytes()), explicit(COLUMNS, b"US", &columns.to_le_bytes())];
            if let Some(frames) = frames {
                parts.insert(0, explicit(NUMBER_OF_FRAMES, b"IS", frames));
            }
            if let Some(samples) = samples {
                parts.insert(0, explicit(SAMPLES_PER_PIXEL, b"US", &samples.to_le_bytes()));
            }
            parts.push(explicit(BITS_ALLOCATED, b"US", &bits.to_le_bytes()));
            parts.push(long_explicit((0x7FE0, 0x0010), b"OW", &vec![0; pixels]));
            dicom_file(EXPLICIT_VR_LITTLE_ENDIAN, &parts.concat())
        };
        // 4 rows of 5 columns of 16 bits: 40 bytes; RGB of 8 bits: 60; one bit a pixel, packed: 3;
        // two frames (`2 `, padded to an even length): 80.
        for (file, needed) in [
            (image(4, 5, None, 16, None, 40), 40),
            (image(4, 5, Some(3), 8, None, 60), 60),
            (image(4, 5, None, 1, None, 4), 3),
            (image(4, 5, Some(1), 16, Some(b"2 "), 80), 80),
        ] {
            assert_eq!(dimensions(&file), (5, 4), "{needed}");
        }
        let refusals = [
            (
                image(4, 5, None, 16, None, 38),
                "holds 38 bytes of pixel data, where its 4 rows of 5 columns of 1 sample(s) of 16 bits take 40",
            ),
            (
                image(4, 5, Some(3), 8, None, 20),
                "holds 20 bytes of pixel data, where its 4 rows of 5 columns of 3 sample(s) of 8 bits take 60",
            ),
            (
                image(4, 5, None, 16, Some(b"2 "), 40),
                "holds 40 bytes of pixel data, where its 4 rows of 5 columns of 1 sample(s) of 16 bits in 2 frames take 80",
            ),
        ];
        for (file, said) in refusals {
            assert_eq!(dicom_refusal(&file), format!("starts as DICOM but {said}: the file is cut short or damaged"));
        }
        // A size past what 64 bits count is refused as well, without overflowing.
        let claimed = image(u16::MAX, u16::MAX, Some(u16::MAX), 32, Some(b"4000000000"), 40);
        let refusal = dicom_refusal(&claimed);
        assert!(refusal.contains(&format!("in 4000000000 frames take {}", u64::MAX)), "{refusal}");
        // Compressed frames (pixel data of undefined length) are not measured.
        let sized = [
            explicit(ROWS, b"US", &4_u16.to_le_bytes()),
            explicit(COLUMNS, b"US", &5_u16.to_le_bytes()),
            explicit(BITS_ALLOCATED, b"US", &8_u16.to_le_bytes()),
        ]
        .concat();
        assert_eq!(dimensions(&dicom_file("1.2.840.10008.1.2.4.50", &encapsulated_after(&sized))), (5, 4));
    }

    #[test]
    fn a_dicom_file_without_pixel_data_is_refused() {
        let report = [explicit((0x0008, 0x0060), b"CS", b"SR"), explicit((0x0040, 0xA040), b"CS", b"TEXT")].concat();
        let empty_pixels = [&report[..], &long_explicit((0x7FE0, 0x0010), b"OW", &[])].concat();
        // A document wrapped in DICOM, pixel data beside it or not.
        let document =
            [&report[..], &long_explicit(ENCAPSULATED_DOCUMENT, b"OB", b"CDA-DOC\0"), &explicit_pixels()].concat();
        for data_set in [&report, &empty_pixels, &document] {
            assert_eq!(dicom_refusal(&dicom_file(EXPLICIT_VR_LITTLE_ENDIAN, data_set)), NO_PIXELS, "{data_set:?}");
        }
        // Float pixel data, and encapsulated pixel data of undefined length, are an image's.
        let float = [&report[..], &long_explicit((0x7FE0, 0x0008), b"OF", &[0; 4])].concat();
        assert_eq!(dimensions(&dicom_file(EXPLICIT_VR_LITTLE_ENDIAN, &float)), (0, 0));
        assert_eq!(dimensions(&dicom_file("1.2.840.10008.1.2.4.50", &encapsulated_after(&report))), (0, 0));
    }

    /// `elements`, then encapsulated pixel data of undefined length: an empty offset table and one
    /// compressed fragment.
    fn encapsulated_after(elements: &[u8]) -> Vec<u8> {
        let pixels = [
            undefined_explicit((0x7FE0, 0x0010), b"OB"),
            framing(ITEM, 0),
            framing(ITEM, 2),
            vec![0xFF, 0xD9],
            framing(SEQUENCE_END, 0),
        ];
        [elements, &pixels.concat()].concat()
    }

    #[test]
    fn a_malformed_dicom_data_set_is_refused_and_never_panics() {
        let whole = dicom_file(EXPLICIT_VR_LITTLE_ENDIAN, &explicit_data_set(480, 640));
        // Cut short anywhere: examined, accepted (cut between two elements) or not, without a panic.
        for end in 0..whole.len() {
            let _ = examine(&whole[..end]);
        }
        // Any byte changed: examined, accepted or not, without a panic.
        for at in PREAMBLE + 4..whole.len() {
            for byte in [0x00, 0x7F, 0xFF] {
                let mut changed = whole.clone();
                changed[at] = byte;
                let _ = examine(&changed);
            }
        }
        // Lengths past the end, and sequences nested deeper than any data set needs.
        let overlong = [implicit((0x0008, 0x0060), b"MR"), framing((0x0008, 0x1140), 0xFFFF_FFF0)].concat();
        assert!(dicom_refusal(&dicom_file(IMPLICIT_VR_LITTLE_ENDIAN, &overlong)).contains("(0008,1140)"));
        let mut deep = Vec::new();
        for _ in 0..10_000 {
            deep.extend(undefined_explicit((0x0008, 0x1140), b"SQ"));
            deep.extend(framing(ITEM, UNDEFINED_LENGTH));
        }
        deep.extend(explicit(ROWS, b"US", &480_u16.to_le_bytes()));
        deep.extend(explicit(COLUMNS, b"US", &640_u16.to_le_bytes()));
        assert!(dicom_refusal(&dicom_file(EXPLICIT_VR_LITTLE_ENDIAN, &deep)).contains("(0008,1140)"));
    }
}
