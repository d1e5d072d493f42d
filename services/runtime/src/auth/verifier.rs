//! Verifying bearer tokens: RS256 or EdDSA against the keys of a JWKS file,
//! HS256 only when explicitly enabled for local development.
//!
//! The JWKS file is re-read when [`RELOAD_INTERVAL`] has passed (checked on
//! calls), so keys rotate, and a removed key stops verifying, by replacing
//! the file; an unchanged file changes nothing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::Caller;
use super::claims::Claims;
use crate::settings::AuthSettings;

/// How often an unknown key id may trigger a re-read of the JWKS file.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(30);
/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 30;
/// Verified tokens remembered, so a client's repeated calls skip the
/// signature check; the cache is emptied when full and when keys reload.
const VERIFIED_CACHE_CAPACITY: usize = 10_000;
/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_LENGTH: usize = 8 * 1024;

/// Why a token was refused; every variant becomes UNAUTHENTICATED.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("missing bearer token")]
    Missing,
    #[error("the token is malformed")]
    Malformed,
    #[error("the token has expired")]
    Expired,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token's algorithm is not accepted")]
    AlgorithmNotAccepted,
    #[error("the token's key is unknown")]
    UnknownKey,
    #[error("the token's issuer or audience is not accepted")]
    WrongIssuerOrAudience,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token's claims are invalid: {0}")]
    InvalidClaims(String),
}

struct KeySet {
    keys: Vec<(Option<String>, Algorithm, DecodingKey)>,
    /// The file's text when the keys were read, to skip unchanged re-reads.
    source: String,
    loaded_at: Instant,
}

/// Checks tokens against the configured keys.
pub struct TokenVerifier {
    jwks_file: Option<PathBuf>,
    key_set: Mutex<KeySet>,
    hs256: Option<DecodingKey>,
    issuer: Option<String>,
    audience: Option<String>,
    /// Token -> its caller and expiry, for tokens that verified.
    verified: RwLock<HashMap<String, (Caller, u64)>>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("jwks_file", &self.jwks_file)
            .field("hs256_enabled", &self.hs256.is_some())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// Loads the JWKS file named by the settings; an unreadable or empty
    /// file stops the process at start.
    pub fn from_settings(settings: &AuthSettings) -> anyhow::Result<Self> {
        let keys = match &settings.jwks_file {
            Some(path) => load_jwks(path)?,
            None => Vec::new(),
        };
        if let Some(path) = &settings.jwks_file
            && keys.is_empty()
        {
            anyhow::bail!(
                "QAPMAP_JWT_JWKS_FILE {} holds no RS256 or EdDSA signing key",
                path.display()
            );
        }
        if settings.hs256_secret.is_some() {
            tracing::warn!(
                "HS256 tokens are accepted (QAPMAP_JWT_ALLOW_HS256): for local development only"
            );
        }
        Ok(Self {
            jwks_file: settings.jwks_file.clone(),
            key_set: Mutex::new(KeySet {
                keys,
                source: settings
                    .jwks_file
                    .as_ref()
                    .and_then(|path| std::fs::read_to_string(path).ok())
                    .unwrap_or_default(),
                loaded_at: Instant::now(),
            }),
            hs256: settings
                .hs256_secret
                .as_ref()
                .map(|secret| DecodingKey::from_secret(secret.as_bytes())),
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            verified: RwLock::new(HashMap::new()),
        })
    }

    /// The caller a token names, if it verifies.
    pub fn verify(&self, token: &str) -> Result<Caller, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > MAX_TOKEN_LENGTH {
            return Err(TokenError::Malformed);
        }
        // Keys are re-read every RELOAD_INTERVAL, so a key removed from the
        // file (a revocation) stops verifying without a restart.
        self.reload_if_due();
        let remembered = self
            .verified
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .get(token)
            .cloned();
        if let Some((caller, expires)) = remembered {
            if super::signing::unix_now() > expires + LEEWAY_SECONDS {
                return Err(TokenError::Expired);
            }
            return Ok(caller);
        }
        let (caller, expires) = self.verify_signature(token)?;
        let mut verified = self
            .verified
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        if verified.len() >= VERIFIED_CACHE_CAPACITY {
            verified.clear();
        }
        verified.insert(token.to_owned(), (caller.clone(), expires));
        Ok(caller)
    }

    fn verify_signature(&self, token: &str) -> Result<(Caller, u64), TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        let key = match header.alg {
            Algorithm::HS256 => self.hs256.clone().ok_or(TokenError::AlgorithmNotAccepted)?,
            Algorithm::RS256 | Algorithm::EdDSA => {
                self.key_for(header.kid.as_deref(), header.alg)?
            }
            _ => return Err(TokenError::AlgorithmNotAccepted),
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &self.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|error| {
            use jsonwebtoken::errors::ErrorKind;
            match error.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => {
                    TokenError::WrongIssuerOrAudience
                }
                ErrorKind::InvalidAlgorithm => TokenError::AlgorithmNotAccepted,
                ErrorKind::MissingRequiredClaim(claim) => {
                    TokenError::InvalidClaims(format!("{claim} is required"))
                }
                _ => TokenError::Malformed,
            }
        })?;
        let expires = data.claims.exp;
        let caller = data
            .claims
            .into_caller()
            .map_err(TokenError::InvalidClaims)?;
        Ok((caller, expires))
    }

    fn key_for(&self, kid: Option<&str>, algorithm: Algorithm) -> Result<DecodingKey, TokenError> {
        if let Some(key) = self.lookup(kid, algorithm) {
            return Ok(key);
        }
        self.reload_if_due();
        self.lookup(kid, algorithm).ok_or(TokenError::UnknownKey)
    }

    fn lookup(&self, kid: Option<&str>, algorithm: Algorithm) -> Option<DecodingKey> {
        let key_set = self
            .key_set
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let matching: Vec<_> = key_set
            .keys
            .iter()
            .filter(|(_, key_algorithm, _)| *key_algorithm == algorithm)
            .collect();
        match kid {
            Some(kid) => matching
                .iter()
                .find(|(key_id, _, _)| key_id.as_deref() == Some(kid))
                .map(|(_, _, key)| key.clone()),
            // Without a kid only an unambiguous key set will do.
            None if matching.len() == 1 => Some(matching[0].2.clone()),
            None => None,
        }
    }

    fn reload_if_due(&self) {
        let Some(path) = &self.jwks_file else { return };
        // Another call reloading right now is as good as reloading here.
        let Ok(mut key_set) = self.key_set.try_lock() else {
            return;
        };
        if key_set.loaded_at.elapsed() < RELOAD_INTERVAL {
            return;
        }
        key_set.loaded_at = Instant::now();
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if !text.is_empty() && text == key_set.source {
            return;
        }
        match load_jwks(path) {
            Ok(keys) if !keys.is_empty() => {
                key_set.keys = keys;
                key_set.source = text;
                // A removed key must stop its tokens now, not at their expiry.
                self.verified
                    .write()
                    .unwrap_or_else(|poison| poison.into_inner())
                    .clear();
            }
            Ok(_) => {
                tracing::warn!(path = %path.display(), "the JWKS file holds no usable key; keeping the old keys")
            }
            Err(error) => {
                tracing::warn!(path = %path.display(), error.message = %error, "re-reading the JWKS file failed; keeping the old keys")
            }
        }
    }
}

fn load_jwks(path: &PathBuf) -> anyhow::Result<Vec<(Option<String>, Algorithm, DecodingKey)>> {
    use anyhow::Context;
    use jsonwebtoken::jwk::AlgorithmParameters;

    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the JWKS file {}", path.display()))?;
    let set: JwkSet = serde_json::from_str(&text)
        .with_context(|| format!("parsing the JWKS file {}", path.display()))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let algorithm = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
            // Symmetric and EC keys are not accepted from a JWKS.
            _ => continue,
        };
        let key = DecodingKey::from_jwk(jwk)
            .with_context(|| format!("a key in {} does not load", path.display()))?;
        keys.push((jwk.common.key_id.clone(), algorithm, key));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::auth::claims::Claims;
    use crate::auth::signing::{TokenSigner, unix_now};

    fn verifier_for(signer: &TokenSigner) -> TokenVerifier {
        let path = std::env::temp_dir().join(format!("qapmap-jwks-{}.json", uuid::Uuid::new_v4()));
        signer.write_jwks(&path).expect("write jwks");
        let settings = AuthSettings {
            jwks_file: Some(path),
            ..AuthSettings::default()
        };
        TokenVerifier::from_settings(&settings).expect("verifier")
    }

    fn claims() -> Claims {
        Claims {
            sub: "ada".to_owned(),
            companies: vec!["*".to_owned()],
            roles: vec!["admin".to_owned()],
            ..Claims::default()
        }
    }

    #[test]
    fn a_signed_token_verifies_and_stays_verified_from_the_cache() {
        let signer = TokenSigner::generate("k1");
        let verifier = verifier_for(&signer);
        let token = signer.sign_for(claims(), Duration::from_secs(60));
        assert_eq!(verifier.verify(&token).expect("valid").subject, "ada");
        assert_eq!(verifier.verify(&token).expect("cached").subject, "ada");
    }

    #[test]
    fn expired_forged_and_hs256_tokens_are_refused() {
        let signer = TokenSigner::generate("k1");
        let verifier = verifier_for(&signer);
        let mut expired = claims();
        expired.exp = unix_now() - 120;
        assert!(matches!(
            verifier.verify(&signer.sign(&expired)),
            Err(TokenError::Expired)
        ));

        let stranger = TokenSigner::generate("k1");
        let forged = stranger.sign_for(claims(), Duration::from_secs(60));
        assert!(matches!(
            verifier.verify(&forged),
            Err(TokenError::BadSignature)
        ));

        let hs256 = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &Claims {
                exp: unix_now() + 60,
                ..claims()
            },
            &jsonwebtoken::EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .expect("encode");
        assert!(matches!(
            verifier.verify(&hs256),
            Err(TokenError::AlgorithmNotAccepted)
        ));
        assert!(matches!(verifier.verify(""), Err(TokenError::Missing)));
    }

    #[test]
    fn a_cached_token_is_refused_once_it_expires() {
        let signer = TokenSigner::generate("k1");
        let verifier = verifier_for(&signer);
        // Expired 10 s ago: within the leeway, so it verifies and is cached.
        let mut claims = claims();
        claims.exp = unix_now() - 10;
        let token = signer.sign(&claims);
        verifier.verify(&token).expect("within the leeway");
        // Pretend time passed beyond the leeway by rewriting the cached expiry.
        verifier
            .verified
            .write()
            .expect("lock")
            .get_mut(&token)
            .expect("cached")
            .1 = unix_now() - LEEWAY_SECONDS - 1;
        assert!(matches!(verifier.verify(&token), Err(TokenError::Expired)));
    }

    #[test]
    fn a_key_removed_from_the_file_stops_verifying_at_the_next_reload() {
        let signer = TokenSigner::generate("k1");
        let verifier = verifier_for(&signer);
        let token = signer.sign_for(claims(), Duration::from_secs(600));
        verifier.verify(&token).expect("valid");
        let path = verifier.jwks_file.clone().expect("a file");
        TokenSigner::generate("k2")
            .write_jwks(&path)
            .expect("replace the keys");
        verifier
            .verify(&token)
            .expect("still within the reload interval");
        let long_ago = Instant::now()
            .checked_sub(RELOAD_INTERVAL * 2)
            .expect("the clock is past the interval");
        verifier.key_set.lock().expect("lock").loaded_at = long_ago;
        assert!(matches!(
            verifier.verify(&token),
            Err(TokenError::UnknownKey)
        ));
    }
}
