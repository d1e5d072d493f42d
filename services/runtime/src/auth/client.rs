//! The client side: a channel that sends a bearer token with every call,
//! for the demo, the benchmarks and the tests (partners use their SDK's own).

use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// Adds `authorization: Bearer <token>` to each request.
#[derive(Clone)]
pub struct BearerToken(MetadataValue<tonic::metadata::Ascii>);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

impl BearerToken {
    pub fn new(token: &str) -> Self {
        Self(
            format!("Bearer {token}")
                .parse()
                .expect("a JWT is valid ASCII metadata"),
        )
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// A channel whose every call carries a bearer token.
pub type AuthenticatedChannel = InterceptedService<Channel, BearerToken>;

/// Wraps `channel` so its calls carry `token`.
pub fn authenticated(channel: Channel, token: &str) -> AuthenticatedChannel {
    InterceptedService::new(channel, BearerToken::new(token))
}
