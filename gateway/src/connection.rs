//! A connection's first bytes, read before HTTP takes it over: until they tell its HTTP version,
//! neither HTTP/1.1's header timeout nor HTTP/2's pings watch it, so the accept loop bounds that
//! time itself.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf},
    net::TcpStream,
};

/// What an HTTP/2 client with prior knowledge sends first (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A connection with the bytes read to tell its version put back in front of the rest.
pub(crate) struct Opened {
    read: Vec<u8>,
    served: usize,
    stream: TcpStream,
}

/// Reads `stream` until its HTTP version shows: a byte that starts no HTTP/2 preface, the whole
/// preface, or the connection's end. Each read waits on the socket.
pub(crate) async fn open(mut stream: TcpStream) -> io::Result<Opened> {
    let mut read = Vec::with_capacity(PREFACE.len());
    let mut buffer = [0; PREFACE.len()];
    loop {
        let count = stream.read(&mut buffer[..PREFACE.len() - read.len()]).await?;
        read.extend_from_slice(&buffer[..count]);
        if count == 0 || read.len() == PREFACE.len() || read[..] != PREFACE[..read.len()] {
            return Ok(Opened { read, served: 0, stream });
        }
    }
}

impl AsyncRead for Opened {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.served < this.read.len() {
            let count = (this.read.len() - this.served).min(buf.remaining());
            buf.put_slice(&this.read[this.served..this.served + count]);
            this.served += count;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Opened {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    /// What `open` reads of `sent`, then what the connection reads in all.
    async fn opened(sent: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        client.write_all(sent).await.unwrap();
        client.shutdown().await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let mut opened = open(server).await.unwrap();
        let first = opened.read.clone();
        let mut all = Vec::new();
        opened.read_to_end(&mut all).await.unwrap();
        (first, all)
    }

    #[tokio::test]
    async fn the_bytes_read_to_tell_the_version_are_read_again_by_http() {
        let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
        let (first, all) = opened(request).await;
        assert_eq!((first.as_slice(), all.as_slice()), (&request[..first.len()], &request[..]));
        assert!(!first.is_empty() && first.len() <= PREFACE.len());

        let h2 = [PREFACE.as_slice(), b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"].concat();
        let (first, all) = opened(&h2).await;
        assert_eq!((first.as_slice(), all), (PREFACE.as_slice(), h2));

        // A POST shares its first letter with the preface and is told apart at the second.
        let (first, all) = opened(b"POST / HTTP/1.1\r\n\r\n").await;
        assert!(first.len() >= 2 && first.len() <= PREFACE.len());
        assert_eq!(all, b"POST / HTTP/1.1\r\n\r\n");

        // A connection that ends within the preface is handed on as it is.
        let (first, all) = opened(b"PRI * HTTP").await;
        assert_eq!((first.as_slice(), all.as_slice()), (b"PRI * HTTP".as_slice(), b"PRI * HTTP".as_slice()));
    }
}
