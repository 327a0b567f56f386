//! Request bodies with a `Content-Encoding` (gzip, deflate, br): decoded as they stream in, with
//! the size limit applied to the decoded bytes, so that a compressed bomb stops at the limit
//! instead of being inflated in full.

use std::{
    io::{self, Write},
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    http::{HeaderMap, StatusCode, header},
};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::time::{Instant, Sleep};

use crate::{metrics::metrics, problem::Problem, resilience::BodyRoom};

/// Decoded bytes a decoder hands on at a time: the most a refused body inflates past the limit.
pub(crate) const DECODER_BUFFER_BYTES: usize = 32 * 1024;

/// Content codings stacked on one body, at most.
const MAX_CODINGS: usize = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Coding {
    Gzip,
    /// The zlib format (RFC 1950), as HTTP's `deflate` means.
    Deflate,
    Brotli,
}

/// The 413 problem for a body over `limit` bytes.
pub(crate) fn too_large(limit: usize) -> Problem {
    Problem::new(StatusCode::PAYLOAD_TOO_LARGE, format!("the request body exceeds {limit} bytes"))
}

/// The 400 problem for a body that could not be read (cut short, or malformed chunks).
fn unreadable() -> Problem {
    Problem::bad_request("the request body could not be read")
}

/// The body, decoded as its `Content-Encoding` says, its memory held in `room` as it grows; 413
/// when it passes `limit` bytes before or after decoding, 415 for a coding other than gzip, deflate,
/// br or identity, 400 when the bytes do not decode or do not arrive whole, `room`'s refusal (503)
/// when it has no more.
pub(crate) async fn read(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
    room: &mut dyn BodyRoom,
) -> Result<Bytes, Problem> {
    use http_body::Body as _;
    // No body (a GET, or a length of 0): nothing to decode, whatever coding it names.
    if body.is_end_stream() {
        return Ok(Bytes::new());
    }
    let codings = codings(headers)?;
    if codings.is_empty() {
        return collect(body, limit, room).await;
    }
    let mut decoded = Decoded { bytes: Vec::new(), limit, inflated: 0, exceeded: false, room, no_room: None };
    let result = decode(body, &codings, &mut decoded, limit).await;
    let (label, outcome) = match result {
        _ if decoded.exceeded => ("too_large", Err(too_large(limit))),
        _ if decoded.no_room.is_some() => ("no_room", Err(decoded.no_room.take().expect("checked"))),
        Err(Failure::TooLarge) => ("too_large", Err(too_large(limit))),
        Ok(()) => ("accepted", Ok(Bytes::from(decoded.bytes))),
        Err(Failure::Unreadable) => ("refused", Err(unreadable())),
        Err(Failure::Undecodable) => {
            let names: Vec<&str> = codings.iter().map(|coding| coding.name()).collect();
            let detail = match names.as_slice() {
                // RFC 9110's deflate is a zlib stream; raw DEFLATE data, which some clients send, is not.
                ["deflate"] => "the request body is not valid deflate data (a zlib stream, RFC 1950)".to_owned(),
                [one] => format!("the request body is not valid {one} data"),
                _ => format!(
                    "the request body does not decode as its Content-Encoding says: {}, applied in that order",
                    names.join(", ")
                ),
            };
            ("refused", Err(Problem::bad_request(detail)))
        }
    };
    metrics().inflated_body_bytes.with_label_values(&[label]).inc_by(decoded.inflated);
    outcome
}

/// `body`, ending with an error once no part of it has arrived for `idle`, which then sets
/// `stalled`: a client that stops sending holds its request no longer, while one sending a large
/// body slowly but steadily is not cut off.
pub(crate) fn with_idle_timeout(body: Body, idle: Duration, stalled: Arc<AtomicBool>) -> Body {
    Body::new(IdleTimeout { inner: body, idle, sleep: Box::pin(tokio::time::sleep(idle)), stalled })
}

struct IdleTimeout {
    inner: Body,
    idle: Duration,
    sleep: Pin<Box<Sleep>>,
    stalled: Arc<AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
#[error("no part of the request body arrived in time")]
struct Stalled;

impl http_body::Body for IdleTimeout {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.sleep.as_mut().reset(Instant::now() + this.idle);
                Poll::Ready(frame)
            }
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.stalled.store(true, Ordering::Relaxed);
                    Poll::Ready(Some(Err(axum::Error::new(Stalled))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Coding {
    fn name(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Deflate => "deflate",
            Self::Brotli => "br",
        }
    }
}

/// Refuses (415) a body in a coding the gateway does not decode, before it is read.
pub(crate) fn check_codings(headers: &HeaderMap) -> Result<(), Problem> {
    codings(headers).map(drop)
}

/// The codings of the `Content-Encoding` headers, in the order they were applied.
fn codings(headers: &HeaderMap) -> Result<Vec<Coding>, Problem> {
    let unsupported = |what: &str| {
        Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Encoding {what} is not supported; use gzip, deflate or br"),
        )
        .with_accept_encoding("gzip, deflate, br")
    };
    let mut codings = Vec::new();
    for value in headers.get_all(header::CONTENT_ENCODING) {
        let value = value.to_str().map_err(|_| unsupported("with non-ASCII bytes"))?;
        for token in value.split(',').map(str::trim).filter(|token| !token.is_empty()) {
            match token.to_ascii_lowercase().as_str() {
                "identity" => {}
                "gzip" | "x-gzip" => codings.push(Coding::Gzip),
                "deflate" => codings.push(Coding::Deflate),
                "br" => codings.push(Coding::Brotli),
                _ => return Err(unsupported(&format!("{token:?}"))),
            }
        }
    }
    if codings.len() > MAX_CODINGS {
        return Err(unsupported(&format!("with more than {MAX_CODINGS} codings")));
    }
    Ok(codings)
}

enum Failure {
    TooLarge,
    Unreadable,
    Undecodable,
}

/// The frames of a body without a content coding, joined; 413 past `limit` bytes.
async fn collect(mut body: Body, limit: usize, room: &mut dyn BodyRoom) -> Result<Bytes, Problem> {
    let mut parts: Vec<Bytes> = Vec::new();
    let mut received = 0;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| unreadable())?.into_data() else { continue };
        received += data.len();
        if received > limit {
            return Err(too_large(limit));
        }
        room.hold(received)?;
        parts.push(data);
    }
    Ok(match parts.len() {
        // One frame, as a small body mostly arrives: kept as it is, without a copy.
        1 => parts.pop().expect("one part"),
        _ => parts.concat().into(),
    })
}

/// Streams `body` through the decoders into `decoded`. Each frame is decoded as it arrives and
/// then dropped, so that memory holds the decoded body (at most `limit`) and the decoders' buffers.
async fn decode(mut body: Body, codings: &[Coding], decoded: &mut Decoded<'_>, limit: usize) -> Result<(), Failure> {
    let mut chain: Box<dyn Stage + '_> = Box::new(decoded);
    for coding in codings {
        chain = match coding {
            // A gzip body may be several members one after another (RFC 1952, `cat a.gz b.gz`).
            Coding::Gzip => Box::new(Gzip(flate2::write::MultiGzDecoder::new(chain))),
            Coding::Deflate => Box::new(Zlib(flate2::write::ZlibDecoder::new(chain))),
            Coding::Brotli => {
                Box::new(Brotli(brotli_decompressor::DecompressorWriter::new(chain, DECODER_BUFFER_BYTES)))
            }
        };
    }
    let mut received = 0;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| Failure::Unreadable)?.into_data() else { continue };
        received += data.len();
        if received > limit {
            return Err(Failure::TooLarge);
        }
        chain.write_all(&data).map_err(|_| Failure::Undecodable)?;
    }
    chain.finish().map_err(|_| Failure::Undecodable)
}

/// One step of decoding: encoded bytes in, decoded bytes out to the next step.
trait Stage: Write + Send {
    /// Ends the input: flushes what is left and checks that the stream was complete.
    fn finish(&mut self) -> io::Result<()>;
}

/// The last step: keeps the decoded body and refuses any write that would take it past the limit
/// or past the room it may hold.
struct Decoded<'r> {
    bytes: Vec<u8>,
    limit: usize,
    /// Every byte the decoders produced, kept or refused.
    inflated: u64,
    exceeded: bool,
    room: &'r mut dyn BodyRoom,
    /// The room's refusal, once it had no more.
    no_room: Option<Problem>,
}

impl Write for Decoded<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.exceeded || self.no_room.is_some() {
            return Err(io::Error::other("the decoded body is refused"));
        }
        self.inflated += buf.len() as u64;
        if self.bytes.len() + buf.len() > self.limit {
            self.exceeded = true;
            return Err(io::Error::other("the decoded body is over the limit"));
        }
        if let Err(problem) = self.room.hold(self.bytes.len() + buf.len()) {
            self.no_room = Some(problem);
            return Err(io::Error::other("no room is left for the decoded body"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stage for &mut Decoded<'_> {
    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Gzip<'a>(flate2::write::MultiGzDecoder<Box<dyn Stage + 'a>>);
struct Zlib<'a>(flate2::write::ZlibDecoder<Box<dyn Stage + 'a>>);
struct Brotli<'a>(brotli_decompressor::DecompressorWriter<Box<dyn Stage + 'a>>);

/// The three decoders write the same way and finish each in its own words.
macro_rules! stage {
    ($name:ident, $finish:ident) => {
        impl Write for $name<'_> {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.write(buf)
            }

            fn flush(&mut self) -> io::Result<()> {
                self.0.flush()
            }
        }

        impl Stage for $name<'_> {
            fn finish(&mut self) -> io::Result<()> {
                self.0.$finish()?;
                self.0.get_mut().finish()
            }
        }
    };
}

stage!(Gzip, try_finish);
stage!(Zlib, try_finish);
stage!(Brotli, close);

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn brotli(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let params = brotli::enc::BrotliEncoderParams { quality: 5, ..Default::default() };
        brotli::BrotliCompress(&mut &data[..], &mut out, &params).unwrap();
        out
    }

    fn encoded_as(coding: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_str(coding).unwrap());
        headers
    }

    /// The body in chunks of 1 KiB, as a client streaming it would send it.
    fn streamed(bytes: Vec<u8>) -> Body {
        let chunks: Vec<Result<Bytes, io::Error>> =
            bytes.chunks(1024).map(|chunk| Ok(Bytes::copy_from_slice(chunk))).collect();
        Body::from_stream(futures_util::stream::iter(chunks))
    }

    async fn status_of(body: Vec<u8>, coding: &str, limit: usize) -> Result<Bytes, StatusCode> {
        read(streamed(body), &encoded_as(coding), limit, &mut ()).await.map_err(|problem| {
            use axum::response::IntoResponse;
            problem.into_response().status()
        })
    }

    #[tokio::test]
    async fn each_coding_decodes_to_the_original_body() {
        let original = br#"{"name": "Maria Silva", "cpf": "529.982.247-25"}"#.repeat(100);
        let cases = [
            ("gzip", gzip(&original)),
            ("x-gzip", gzip(&original)),
            ("deflate", zlib(&original)),
            ("br", brotli(&original)),
            ("BR", brotli(&original)),
            ("identity", original.clone()),
            ("gzip, br", brotli(&gzip(&original))),
            ("deflate, identity, gzip", gzip(&zlib(&original))),
            // Two gzip members one after the other, as `cat a.gz b.gz` or pigz make.
            ("gzip", [gzip(&original[..1000]), gzip(&original[1000..])].concat()),
        ];
        for (coding, body) in cases {
            let decoded = status_of(body, coding, original.len()).await.unwrap_or_else(|s| panic!("{coding}: {s}"));
            assert_eq!(decoded.as_ref(), original.as_slice(), "{coding}");
        }
    }

    #[tokio::test]
    async fn a_bomb_is_refused_after_inflating_at_most_one_buffer_past_the_limit() {
        let zeros = vec![0_u8; 10 * 1024 * 1024];
        let limit = 1024 * 1024;
        for (coding, bomb) in [("gzip", gzip(&zeros)), ("deflate", zlib(&zeros)), ("br", brotli(&zeros))] {
            assert!(bomb.len() < limit / 10, "{coding}: the bomb is small");
            let mut decoded =
                Decoded { bytes: Vec::new(), limit, inflated: 0, exceeded: false, room: &mut (), no_room: None };
            let codings = codings(&encoded_as(coding)).unwrap();
            let result = decode(streamed(bomb), &codings, &mut decoded, limit).await;
            assert!(result.is_err() && decoded.exceeded, "{coding}");
            assert!(decoded.bytes.len() <= limit, "{coding}");
            let most = (limit + DECODER_BUFFER_BYTES) as u64;
            assert!(decoded.inflated <= most, "{coding}: inflated {} bytes", decoded.inflated);
        }
    }

    /// Room for `most` bytes, noting the most it was asked for.
    struct Capped {
        most: usize,
        asked: usize,
    }

    impl BodyRoom for Capped {
        fn hold(&mut self, bytes: usize) -> Result<(), Problem> {
            self.asked = self.asked.max(bytes);
            if bytes > self.most {
                return Err(Problem::new(StatusCode::SERVICE_UNAVAILABLE, "no room"));
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_body_asks_for_room_as_it_grows_and_stops_where_none_is_left() {
        let original = br#"{"name": "Maria Silva", "cpf": "529.982.247-25"}"#.repeat(2000);
        for (coding, body) in [("identity", original.clone()), ("gzip", gzip(&original)), ("br", brotli(&original))] {
            let mut room = Capped { most: usize::MAX, asked: 0 };
            let decoded = read(streamed(body.clone()), &encoded_as(coding), 1 << 20, &mut room).await;
            assert_eq!(decoded.unwrap().as_ref(), original.as_slice(), "{coding}");
            assert_eq!(room.asked, original.len(), "{coding}: room for the decoded body, no more");

            let mut room = Capped { most: 10_000, asked: 0 };
            let refused = read(streamed(body), &encoded_as(coding), 1 << 20, &mut room).await.unwrap_err();
            assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE, "{coding}");
            assert!(
                room.asked <= 10_000 + DECODER_BUFFER_BYTES,
                "{coding}: read on after the refusal to {}",
                room.asked
            );
        }
    }

    #[tokio::test]
    async fn bodies_over_the_limit_before_or_after_decoding_are_413() {
        let limit = 1000;
        let noise: Vec<u8> = (0..4000_u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
        assert_eq!(status_of(gzip(&[b'a'; 1001]), "gzip", limit).await.err(), Some(StatusCode::PAYLOAD_TOO_LARGE));
        assert_eq!(status_of(gzip(&noise), "gzip", limit).await.err(), Some(StatusCode::PAYLOAD_TOO_LARGE));
        assert!(status_of(gzip(&[b'a'; 1000]), "gzip", limit).await.is_ok(), "exactly the limit");
        assert_eq!(status_of(vec![b'a'; 1001], "identity", limit).await.err(), Some(StatusCode::PAYLOAD_TOO_LARGE));
    }

    #[tokio::test]
    async fn a_body_cut_short_is_400_not_413() {
        for coding in ["identity", "gzip"] {
            let chunks: Vec<Result<Bytes, io::Error>> =
                vec![Ok(Bytes::from_static(b"{ ")), Err(io::Error::new(io::ErrorKind::UnexpectedEof, "cut short"))];
            let body = Body::from_stream(futures_util::stream::iter(chunks));
            let status = read(body, &encoded_as(coding), 1 << 20, &mut ()).await.map_err(|problem| {
                use axum::response::IntoResponse;
                problem.into_response().status()
            });
            assert_eq!(status.err(), Some(StatusCode::BAD_REQUEST), "{coding}");
        }
    }

    #[tokio::test]
    async fn a_request_without_a_body_is_not_refused_for_its_coding() {
        for coding in ["compress", "gzip", "zstd"] {
            let read = read(Body::empty(), &encoded_as(coding), 1 << 20, &mut ()).await;
            assert!(read.is_ok_and(|bytes| bytes.is_empty()), "{coding}");
        }
    }

    #[tokio::test]
    async fn unknown_codings_are_415_and_undecodable_bodies_400() {
        let body = br#"{"name": "Maria"}"#;
        let mut truncated = gzip(body);
        truncated.truncate(truncated.len() - 4);
        let mut trailing = gzip(body);
        trailing.extend_from_slice(b"junk");
        let cases: [(&str, Vec<u8>, StatusCode); 9] = [
            ("compress", body.to_vec(), StatusCode::UNSUPPORTED_MEDIA_TYPE),
            ("zstd", body.to_vec(), StatusCode::UNSUPPORTED_MEDIA_TYPE),
            ("gzip, zstd", body.to_vec(), StatusCode::UNSUPPORTED_MEDIA_TYPE),
            ("gzip, gzip, gzip", gzip(&gzip(&gzip(body))), StatusCode::UNSUPPORTED_MEDIA_TYPE),
            ("gzip", body.to_vec(), StatusCode::BAD_REQUEST),
            ("gzip", truncated, StatusCode::BAD_REQUEST),
            ("gzip", trailing, StatusCode::BAD_REQUEST),
            ("deflate", gzip(body), StatusCode::BAD_REQUEST),
            ("br", body.to_vec(), StatusCode::BAD_REQUEST),
        ];
        for (coding, body, expected) in cases {
            assert_eq!(status_of(body, coding, 1 << 20).await.err(), Some(expected), "{coding}");
        }
        // The refusal names the codings as the header gave them.
        let told = |coding: &'static str, body: Vec<u8>| async move {
            read(streamed(body), &encoded_as(coding), 1 << 20, &mut ()).await.unwrap_err().detail().to_owned()
        };
        assert_eq!(told("gzip", body.to_vec()).await, "the request body is not valid gzip data");
        assert_eq!(
            told("deflate", body.to_vec()).await,
            "the request body is not valid deflate data (a zlib stream, RFC 1950)"
        );
        assert_eq!(
            told("gzip, gzip", gzip(body)).await,
            "the request body does not decode as its Content-Encoding says: gzip, gzip, applied in that order"
        );
    }
}
