//! A generic gRPC client: the gateway sends already-encoded request messages to the service that
//! owns the route and gets the encoded response back, without generated stubs.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use tonic::{
    Status,
    client::Grpc,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    metadata::MetadataMap,
    transport::{Channel, Endpoint},
};

/// Passes message bytes through untouched.
#[derive(Clone, Copy, Debug, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Lazily connected channels to each upstream service: one HTTP/2 connection per core, taken in
/// turn, so that requests in flight on different cores do not all wait on one connection's state.
#[derive(Clone, Debug)]
pub(crate) struct Upstreams {
    /// Shared: the state every request clones holds this map.
    channels: Arc<BTreeMap<String, Vec<Channel>>>,
    next: Arc<AtomicUsize>,
    /// Deadline of a health check.
    timeout: Duration,
}

impl Upstreams {
    /// `addresses` maps an owner name (`healthquantum`) to its URL (`http://127.0.0.1:50061`).
    pub(crate) fn new(addresses: &BTreeMap<String, String>, timeout: Duration) -> anyhow::Result<Self> {
        let connections = std::thread::available_parallelism().map_or(1, usize::from);
        let mut channels = BTreeMap::new();
        for (owner, url) in addresses {
            let endpoint = Endpoint::from_shared(url.clone())
                .map_err(|error| anyhow::anyhow!("gateway.upstreams.{owner}: {error}"))?
                .connect_timeout(Duration::from_secs(2));
            channels.insert(owner.clone(), (0..connections).map(|_| endpoint.connect_lazy()).collect());
        }
        Ok(Self { channels: Arc::new(channels), next: Arc::default(), timeout })
    }

    pub(crate) fn owners(&self) -> impl Iterator<Item = &String> {
        self.channels.keys()
    }

    /// Calls `path` on `owner` with `message`, telling the upstream it has `timeout` to answer.
    pub(crate) async fn unary(
        &self,
        owner: &str,
        path: PathAndQuery,
        message: Bytes,
        metadata: MetadataMap,
        timeout: Duration,
    ) -> Result<Bytes, Status> {
        let channels = self
            .channels
            .get(owner)
            .ok_or_else(|| Status::unavailable(format!("no upstream configured for {owner}")))?;
        let channel = &channels[self.next.fetch_add(1, Ordering::Relaxed) % channels.len()];
        let mut grpc = Grpc::new(channel.clone());
        grpc.ready().await.map_err(|error| Status::unavailable(format!("{owner} is unavailable: {error}")))?;
        let mut request = tonic::Request::from_parts(metadata, Default::default(), message);
        request.set_timeout(timeout);
        grpc.unary(request, path, RawCodec).await.map(tonic::Response::into_inner)
    }

    /// Whether `owner` reports SERVING on `grpc.health.v1`.
    pub(crate) async fn is_serving(&self, owner: &str) -> bool {
        // An empty HealthCheckRequest asks about the whole server; SERVING encodes as field 1 = 1.
        let check = PathAndQuery::from_static("/grpc.health.v1.Health/Check");
        match self.unary(owner, check, Bytes::new(), MetadataMap::new(), self.timeout).await {
            Ok(response) => response.as_ref() == [0x08, 0x01],
            Err(_) => false,
        }
    }
}
