//! Minting tokens: an Ed25519 key pair with its JWKS, for the demo, the
//! benchmarks and the tests. Production tokens come from the identity
//! provider; services only ever verify.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::{Ed25519KeyPair, KeyPair};

use super::claims::Claims;

/// An Ed25519 signing key and the JWKS that verifies it.
pub struct TokenSigner {
    key_id: String,
    encoding_key: EncodingKey,
    public_key: Vec<u8>,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// A fresh random key pair.
    pub fn generate(key_id: &str) -> Self {
        let rng = ring::rand::SystemRandom::new();
        let document = Ed25519KeyPair::generate_pkcs8(&rng).expect("the system RNG works");
        Self::from_pkcs8(key_id, document.as_ref()).expect("a generated key loads")
    }

    /// A key pair from its PKCS#8 DER encoding.
    pub fn from_pkcs8(key_id: &str, pkcs8: &[u8]) -> anyhow::Result<Self> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
            .map_err(|error| anyhow::anyhow!("not an Ed25519 PKCS#8 key: {error}"))?;
        Ok(Self {
            key_id: key_id.to_owned(),
            encoding_key: EncodingKey::from_ed_der(pkcs8),
            public_key: pair.public_key().as_ref().to_vec(),
        })
    }

    /// The JWKS document (one OKP key) services verify with.
    pub fn jwks_json(&self) -> String {
        serde_json::json!({
            "keys": [{
                "kty": "OKP",
                "crv": "Ed25519",
                "alg": "EdDSA",
                "use": "sig",
                "kid": self.key_id,
                "x": URL_SAFE_NO_PAD.encode(&self.public_key),
            }]
        })
        .to_string()
    }

    /// Writes the JWKS to `path`.
    pub fn write_jwks(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.jwks_json())
    }

    /// Signs `claims` as given (tests use this for expired tokens).
    pub fn sign(&self, claims: &Claims) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.key_id.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding_key).expect("claims serialize")
    }

    /// Signs `claims` with `exp` set `valid_for` from now.
    pub fn sign_for(&self, mut claims: Claims, valid_for: Duration) -> String {
        let now = unix_now();
        claims.iat = Some(now);
        claims.exp = now + valid_for.as_secs();
        self.sign(&claims)
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}
