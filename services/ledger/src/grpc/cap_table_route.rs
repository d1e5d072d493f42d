//! GetCapTable answered with protobuf bytes copied from the table in memory
//! (straight into the response's frame: `queries::EncodedResponse`).
//! The generated server needs an owned response, i.e. a clone of a page's
//! ~1,000 strings per read and then its encoding: a profile of cached reads
//! showed allocation and copying as half of the ledger's time (issue 10).
//! Every other method goes to the generated server; the layers in front of
//! both (auth, limits, tracing) are the same.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use prost::Message;
use prost::bytes::BufMut;
use qapmap_proto::ledger::v1 as proto;
use qapmap_proto::ledger::v1::ledger_service_server::LedgerServiceServer;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;

use super::LedgerApi;
use super::queries::EncodedResponse;

const GET_CAP_TABLE: &str = "/qapmap.ledger.v1.LedgerService/GetCapTable";

/// The ledger's gRPC service: GetCapTable here, the rest generated.
#[derive(Clone)]
pub(crate) struct LedgerRoutes {
    generated: LedgerServiceServer<LedgerApi>,
    api: Arc<LedgerApi>,
}

impl LedgerRoutes {
    pub(crate) fn new(api: LedgerApi) -> Self {
        Self {
            generated: LedgerServiceServer::new(api.clone()),
            api: Arc::new(api),
        }
    }
}

impl NamedService for LedgerRoutes {
    const NAME: &'static str = <LedgerServiceServer<LedgerApi> as NamedService>::NAME;
}

impl Service<http::Request<tonic::body::Body>> for LedgerRoutes {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        if request.uri().path() != GET_CAP_TABLE {
            return self.generated.call(request);
        }
        let method = GetCapTable(self.api.clone());
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(PreEncodedCodec);
            Ok(grpc.unary(method, request).await)
        })
    }
}

struct GetCapTable(Arc<LedgerApi>);

impl tonic::server::UnaryService<proto::GetCapTableRequest> for GetCapTable {
    type Response = EncodedResponse;
    type Future = BoxFuture<tonic::Response<EncodedResponse>, Status>;

    fn call(&mut self, request: tonic::Request<proto::GetCapTableRequest>) -> Self::Future {
        let api = self.0.clone();
        Box::pin(async move {
            let encoded = api.cap_table_encoded(request.into_inner()).await?;
            Ok(tonic::Response::new(encoded))
        })
    }
}

/// Decodes the request like the generated codec; writes the response's
/// bytes as they are.
#[derive(Debug, Clone, Copy)]
struct PreEncodedCodec;

impl Codec for PreEncodedCodec {
    type Encode = EncodedResponse;
    type Decode = proto::GetCapTableRequest;
    type Encoder = BytesEncoder;
    type Decoder = RequestDecoder;

    fn encoder(&mut self) -> BytesEncoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> RequestDecoder {
        RequestDecoder
    }
}

#[derive(Debug)]
struct BytesEncoder;

impl Encoder for BytesEncoder {
    type Item = EncodedResponse;
    type Error = Status;

    fn encode(&mut self, item: EncodedResponse, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.head.len() + item.tail.len());
        dst.put_slice(&item.head);
        dst.put_slice(&item.tail);
        Ok(())
    }
}

#[derive(Debug)]
struct RequestDecoder;

impl Decoder for RequestDecoder {
    type Item = proto::GetCapTableRequest;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        // The generated codec's status for bytes that are not the message.
        proto::GetCapTableRequest::decode(src)
            .map(Some)
            .map_err(|error| Status::internal(error.to_string()))
    }
}
