//! The benchmark's token-signing key. Every gRPC call needs a bearer JWT
//! (docs/security.md): `run.sh` has `qapmap-bench keys DIR` make a throwaway
//! Ed25519 key before it starts the processes, which verify with
//! `DIR/jwks.json`; `run` signs its one token with `DIR/signing-key.pk8`.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use qapmap_runtime::auth::claims::Claims;
use qapmap_runtime::auth::signing::TokenSigner;
use ring::signature::Ed25519KeyPair;

const KEY_FILE: &str = "signing-key.pk8";
const JWKS_FILE: &str = "jwks.json";
const KEY_ID: &str = "qapmap-bench";

/// Makes a fresh key in `dir` (which must not hold one) and its JWKS.
pub(crate) fn write(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let rng = ring::rand::SystemRandom::new();
    let document = Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
    let key_path = dir.join(KEY_FILE);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(&key_path)
        .and_then(|mut file| file.write_all(document.as_ref()))
        .with_context(|| format!("writing {}", key_path.display()))?;
    let jwks_path = dir.join(JWKS_FILE);
    TokenSigner::from_pkcs8(KEY_ID, document.as_ref())?
        .write_jwks(&jwks_path)
        .with_context(|| format!("writing {}", jwks_path.display()))?;
    Ok(())
}

/// The token every bench client sends: platform staff (admin and operator)
/// of every company, valid a day. `["*"]` rather than a list because the
/// harness creates its companies (up to a hundred, plus the cap-table one)
/// as it goes and shares its channels between them; the per-company check
/// still runs on every call, it just always passes.
pub(crate) fn platform_token(dir: &Path) -> anyhow::Result<String> {
    let key_path = dir.join(KEY_FILE);
    let pkcs8 =
        std::fs::read(&key_path).with_context(|| format!("reading {}", key_path.display()))?;
    let signer = TokenSigner::from_pkcs8(KEY_ID, &pkcs8)?;
    let claims = Claims {
        sub: "qapmap-bench".to_owned(),
        companies: vec!["*".to_owned()],
        roles: vec!["admin".to_owned(), "operator".to_owned()],
        ..Claims::default()
    };
    Ok(signer.sign_for(claims, Duration::from_secs(24 * 3600)))
}
