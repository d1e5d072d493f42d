//! Calling any method by its path with raw protobuf bytes, so one test can
//! walk every RPC in the API's descriptor set, including ones added later.

use bytes::{Buf, BufMut};
use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RawCodec;

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RawBytes;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawBytes;
    type Decoder = RawBytes;

    fn encoder(&mut self) -> Self::Encoder {
        RawBytes
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawBytes
    }
}

impl Encoder for RawBytes {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawBytes {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut bytes = vec![0; src.remaining()];
        src.copy_to_slice(&mut bytes);
        Ok(Some(bytes))
    }
}

/// Calls `path` with `body`, sending `token` as the bearer token if given.
pub(crate) async fn call(
    channel: Channel,
    token: Option<&str>,
    path: &str,
    body: Vec<u8>,
) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|error| Status::unavailable(format!("channel not ready: {error}")))?;
    let mut request = tonic::Request::new(body);
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii token"),
        );
    }
    let path = http::uri::PathAndQuery::try_from(path).expect("a valid method path");
    grpc.unary(request, path, RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

/// One RPC of the API: its path and, when its request has one, the field
/// number of `company_id`.
#[derive(Debug, Clone)]
pub(crate) struct Method {
    pub(crate) path: String,
    pub(crate) company_field: Option<u32>,
}

/// Every method of `services` (full names, e.g. `qapmap.ops.v1.AuditService`).
pub(crate) fn methods_of(services: &[&str]) -> Vec<Method> {
    let set = prost_types::FileDescriptorSet::decode(qapmap_proto::FILE_DESCRIPTOR_SET)
        .expect("descriptor set decodes");
    let mut company_fields = std::collections::HashMap::new();
    for file in &set.file {
        for message in &file.message_type {
            if let Some(field) = message.field.iter().find(|f| f.name() == "company_id") {
                company_fields.insert(
                    format!(".{}.{}", file.package(), message.name()),
                    field.number() as u32,
                );
            }
        }
    }
    let mut methods = Vec::new();
    for file in &set.file {
        for service in &file.service {
            let full_name = format!("{}.{}", file.package(), service.name());
            if !services.contains(&full_name.as_str()) {
                continue;
            }
            for method in &service.method {
                methods.push(Method {
                    path: format!("/{full_name}/{}", method.name()),
                    company_field: company_fields.get(method.input_type()).copied(),
                });
            }
        }
    }
    methods
}

/// A request naming only `company_id` (when the method has one).
pub(crate) fn body_for(method: &Method, company_id: &str) -> Vec<u8> {
    let mut body = Vec::new();
    if let Some(field) = method.company_field {
        prost::encoding::string::encode(field, &company_id.to_owned(), &mut body);
    }
    body
}
