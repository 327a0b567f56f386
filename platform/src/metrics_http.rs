//! `GET /metrics` for a domain service run on its own (`aigronova serve <service>`): the
//! process's Prometheus metrics on a separate plain-HTTP port, for a scraper inside the cluster
//! (the NetworkPolicy decides who reaches it). Anything else is answered 404; one request per
//! connection.

use std::{net::SocketAddr, time::Duration};

use prometheus::{Encoder, TextEncoder};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::shutdown::Shutdown;

/// The longest request head read before the connection is dropped.
const MAX_HEAD: usize = 8 * 1024;

/// A bound metrics listener.
#[derive(Debug)]
pub struct MetricsListener {
    listener: TcpListener,
}

impl MetricsListener {
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        Ok(Self { listener: TcpListener::bind(addr).await? })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Answers scrapes until `shutdown`.
    pub async fn serve(self, shutdown: Shutdown) {
        if let Ok(addr) = self.listener.local_addr() {
            tracing::info!(%addr, "metrics listening");
        }
        loop {
            let accepted = tokio::select! {
                () = shutdown.clone().wait() => return,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(async move {
                        if let Err(error) = tokio::time::timeout(Duration::from_secs(10), answer(stream)).await {
                            tracing::debug!(%error, "metrics request timed out");
                        }
                    });
                }
                Err(error) => tracing::warn!(%error, "metrics listener cannot accept"),
            }
        }
    }
}

async fn answer(mut stream: TcpStream) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = stream.read(&mut buffer).await?;
        if read == 0 || head.len() + read > MAX_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&buffer[..read]);
    }
    let request_line = head.split(|byte| *byte == b'\r').next().unwrap_or_default();
    let mut parts = request_line.split(|byte| *byte == b' ');
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let path = target.split(|byte| *byte == b'?').next().unwrap_or_default();
    let (status, content_type, body) = if method == b"GET" && path == b"/metrics" {
        let mut body = Vec::new();
        match TextEncoder::new().encode(&prometheus::gather(), &mut body) {
            Ok(()) => ("200 OK", TextEncoder::new().format_type().to_owned(), body),
            Err(error) => ("500 Internal Server Error", "text/plain".to_owned(), error.to_string().into_bytes()),
        }
    } else {
        ("404 Not Found", "text/plain".to_owned(), b"only GET /metrics is served here\n".to_vec())
    };
    let header = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(header.as_bytes()).await?;
    stream.write_all(&body).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn metrics_are_served_and_nothing_else() {
        let counter = prometheus::IntCounter::new("aigronova_metrics_http_test_total", "test").unwrap();
        prometheus::register(Box::new(counter.clone())).unwrap();
        counter.inc();
        let listener = MetricsListener::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let server = tokio::spawn(listener.serve(shutdown.clone()));

        let response = get(addr, "GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n").await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.contains("aigronova_metrics_http_test_total 1"), "{response}");
        let response = get(addr, "GET /admin HTTP/1.1\r\n\r\n").await;
        assert!(response.starts_with("HTTP/1.1 404"), "{response}");
        let response = get(addr, "POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(response.starts_with("HTTP/1.1 404"), "{response}");

        shutdown.trigger();
        server.await.unwrap();
    }
}
