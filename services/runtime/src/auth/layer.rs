//! The tower layer in front of every QapMap gRPC service: authenticate,
//! authorize the method, check the company, rate-limit, then call the
//! handler with an [`AuthorizedCall`] in the request's extensions.
//!
//! The company check reads `company_id` straight from the request's
//! protobuf bytes (its field number comes from the API's descriptor set),
//! so it covers every method, including ones added later, in one place.
//! Health and reflection stay open.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body_util::{BodyExt, Full, Limited};
use prost::Message;
use tonic::Status;
use uuid::Uuid;

use super::policy::{self, Decision};
use super::rate_limit::{RateLimiter, Verdict};
use super::verifier::{TokenError, TokenVerifier};
use super::{Access, AuthorizedCall, Caller, with_call};
use crate::error::ApiError;
use crate::request_limits::RequestLimits;

/// Paths served to anyone: load balancers and tooling probe them without tokens.
const OPEN_PREFIXES: &[&str] = &["/grpc.health.v1.Health/", "/grpc.reflection."];

/// Everything the layer needs, shared by every connection.
#[derive(Debug)]
pub struct AuthState {
    pub verifier: TokenVerifier,
    pub limiter: RateLimiter,
    /// Method path -> field number of `company_id` in its request.
    company_fields: HashMap<String, u32>,
    /// Largest request body accepted, framing included.
    pub max_request_bytes: usize,
    limits: RequestLimits,
}

impl AuthState {
    pub fn new(verifier: TokenVerifier, limiter: RateLimiter, max_request_bytes: usize) -> Self {
        Self {
            verifier,
            limiter,
            company_fields: company_fields(),
            max_request_bytes,
            limits: RequestLimits::from_descriptors(),
        }
    }

    /// Decides a call from its path, `authorization` header and body.
    pub async fn authorize(
        &self,
        path: &str,
        authorization: Option<&str>,
        body: &[u8],
    ) -> Result<AuthorizedCall, Status> {
        let caller = self.authenticate(authorization)?;
        let policy = policy::for_method(path).ok_or_else(|| {
            Status::permission_denied(format!("method {path} is not open to any caller"))
        })?;
        let decision = policy.decide(&caller);
        if decision == Decision::Denied {
            return Err(Status::permission_denied(format!(
                "roles [{}] may not call {path}",
                caller.roles_text()
            )));
        }
        if body.first().is_some_and(|flag| *flag != 0) {
            return Err(Status::unimplemented(
                "compressed requests are not accepted",
            ));
        }
        // Bounded before anything reads the request's fields.
        if let Some(message) = body.get(5..) {
            self.limits.check(path, message)?;
        }
        let company_id = match self.company_fields.get(path) {
            Some(field) => company_in(body, *field)?,
            None => None,
        };
        let access = if policy.platform {
            Access::Platform
        } else {
            // A malformed or missing company_id is left to the handler,
            // which answers INVALID_ARGUMENT naming the field.
            if let Some(company_id) = company_id
                && !caller.companies.includes(company_id)
            {
                return Err(ApiError::not_found("company", company_id.to_string()).into());
            }
            match decision {
                Decision::SelfService => {
                    let stakeholder_id = company_id
                        .and_then(|company_id| caller.stakeholders.get(&company_id).copied())
                        .ok_or_else(|| {
                            Status::permission_denied(
                                "the token names no stakeholder of the caller in this company",
                            )
                        })?;
                    Access::SelfService { stakeholder_id }
                }
                _ => Access::Company,
            }
        };
        if let Verdict::Limited(retry_after) = self.limiter.check(&caller.subject, company_id).await
        {
            return Err(ApiError::ResourceExhausted { retry_after }.into());
        }
        Ok(AuthorizedCall {
            caller: Arc::new(caller),
            method: path.to_owned(),
            company_id,
            access,
        })
    }

    fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, Status> {
        let token = authorization
            .and_then(|value| {
                value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
            })
            .map(str::trim)
            .unwrap_or("");
        self.verifier.verify(token).map_err(|error| {
            if !matches!(error, TokenError::Missing) {
                tracing::info!(reason = %error, "refused a bearer token");
            }
            Status::unauthenticated(error.to_string())
        })
    }
}

/// Maps each method to the field number of `company_id` in its input.
fn company_fields() -> HashMap<String, u32> {
    let set = prost_types::FileDescriptorSet::decode(qapmap_proto::FILE_DESCRIPTOR_SET)
        .expect("the compiled-in descriptor set decodes");
    let mut numbers = HashMap::new();
    for file in &set.file {
        for message in &file.message_type {
            if let Some(field) = message.field.iter().find(|f| f.name() == "company_id") {
                numbers.insert(
                    format!(".{}.{}", file.package(), message.name()),
                    field.number() as u32,
                );
            }
        }
    }
    let mut fields = HashMap::new();
    for file in &set.file {
        for service in &file.service {
            for method in &service.method {
                if let Some(number) = numbers.get(method.input_type()) {
                    let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                    fields.insert(path, *number);
                }
            }
        }
    }
    fields
}

/// The `company_id` of a unary gRPC request body (one uncompressed frame),
/// or `None` when absent or not a UUID.
fn company_in(body: &[u8], field: u32) -> Result<Option<Uuid>, Status> {
    let Some((&compressed, rest)) = body.split_first() else {
        return Ok(None);
    };
    if compressed != 0 {
        return Err(Status::unimplemented(
            "compressed requests are not accepted",
        ));
    }
    let Some(message) = rest.get(4..) else {
        return Ok(None);
    };
    let value = wire::last_string_field(message, field)
        .ok_or_else(|| Status::invalid_argument("the request does not decode"))?;
    Ok(value.and_then(|text| Uuid::parse_str(text).ok()))
}

/// Just enough of the protobuf wire format to find one top-level field.
pub mod wire {
    fn varint(bytes: &mut &[u8]) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = bytes.split_first()?;
            *bytes = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    /// The last occurrence (protobuf's "last one wins") of string field
    /// `field`; `None` for a message that does not parse.
    pub fn last_string_field(mut bytes: &[u8], field: u32) -> Option<Option<&str>> {
        let mut found = None;
        while !bytes.is_empty() {
            let key = varint(&mut bytes)?;
            let (number, wire_type) = (key >> 3, key & 7);
            match wire_type {
                0 => {
                    varint(&mut bytes)?;
                }
                1 => bytes = bytes.get(8..)?,
                5 => bytes = bytes.get(4..)?,
                2 => {
                    let length = usize::try_from(varint(&mut bytes)?).ok()?;
                    let value = bytes.get(..length)?;
                    bytes = &bytes[length..];
                    if number == u64::from(field) {
                        found = Some(std::str::from_utf8(value).ok()?);
                    }
                }
                _ => return None,
            }
        }
        Some(found)
    }
}

/// Wraps a server's services with [`AuthState`] checks.
#[derive(Debug, Clone)]
pub struct AuthLayer(pub Arc<AuthState>);

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            state: self.0.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    state: Arc<AuthState>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> tower_service::Service<http::Request<tonic::body::Body>> for AuthService<S>
where
    S: tower_service::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let path = request.uri().path().to_owned();
        if OPEN_PREFIXES.iter().any(|prefix| path.starts_with(prefix)) {
            return Box::pin(self.inner.call(request));
        }
        // The ready service handles this request; a fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let state = self.state.clone();
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            let bytes = match Limited::new(body, state.max_request_bytes).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(_) => {
                    let status = Status::resource_exhausted(format!(
                        "the request is larger than {} bytes",
                        state.max_request_bytes
                    ));
                    return Ok(status.into_http());
                }
            };
            let authorization = parts
                .headers
                .get(http::header::AUTHORIZATION)
                .and_then(|value| value.to_str().ok());
            let call = match state.authorize(&path, authorization, &bytes).await {
                Ok(call) => call,
                Err(status) => return Ok(status.into_http()),
            };
            parts.extensions.insert(call.clone());
            let request =
                http::Request::from_parts(parts, tonic::body::Body::new(Full::new(bytes)));
            with_call(call, inner.call(request)).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::wire::last_string_field;
    use proptest::prelude::*;

    #[test]
    fn finds_the_last_occurrence_of_a_string_field() {
        // field 1 = "a", field 2 = varint 5, field 1 = "bc"
        let bytes = [0x0a, 1, b'a', 0x10, 5, 0x0a, 2, b'b', b'c'];
        assert_eq!(last_string_field(&bytes, 1), Some(Some("bc")));
        assert_eq!(last_string_field(&bytes, 3), Some(None));
        assert_eq!(last_string_field(&[0x0a, 5, b'a'], 1), None, "truncated");
    }

    proptest! {
        #[test]
        fn agrees_with_prost_on_company_id(company in "\\PC{0,40}", request in "\\PC{0,20}") {
            let message = qapmap_proto::equity::v1::GrantAwardRequest {
                company_id: company.clone(),
                request_id: request,
                ..Default::default()
            };
            let bytes = prost::Message::encode_to_vec(&message);
            let expected = if company.is_empty() { None } else { Some(company.as_str()) };
            prop_assert_eq!(last_string_field(&bytes, 2), Some(expected));
        }

        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = last_string_field(&bytes, 1);
        }
    }
}
