//! The demo's own signing key. Real deployments verify tokens an identity
//! provider signs; locally `scripts/run.sh` (and docker compose) make a
//! throwaway Ed25519 key before the services start:
//!
//! - `<key dir>/signing-key.pk8`: the private key (PKCS#8 DER, mode 0600),
//!   which only the demo reads;
//! - `<jwks dir>/jwks.json`: its public half, which the services read
//!   (`QAPMAP_JWT_JWKS_FILE`).
//!
//! The key id is derived from the public key, so the demo needs nothing but
//! the private key to sign tokens the JWKS verifies.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use qapmap_runtime::auth::claims::Claims;
use qapmap_runtime::auth::signing::TokenSigner;
use ring::signature::{Ed25519KeyPair, KeyPair};

/// File name of the private key in the key directory.
pub(crate) const KEY_FILE: &str = "signing-key.pk8";
/// File name of the JWKS in the JWKS directory.
pub(crate) const JWKS_FILE: &str = "jwks.json";
/// Where the demo finds its key (`scripts/run.sh` sets it).
pub(crate) const KEY_DIR_VARIABLE: &str = "QAPMAP_DEMO_KEY_DIR";

/// How long the demo's tokens live: the demo takes seconds.
const VALID_FOR: Duration = Duration::from_secs(3600);

/// `qapmap-demo keys KEY_DIR [JWKS_DIR]`: makes a key in `KEY_DIR` unless
/// one is there already (a restarted compose stack keeps its key), and
/// (re)writes its JWKS to `JWKS_DIR` (default: `KEY_DIR`).
pub(crate) fn write(key_dir: &Path, jwks_dir: Option<&Path>) -> anyhow::Result<()> {
    let jwks_dir = jwks_dir.unwrap_or(key_dir);
    std::fs::create_dir_all(key_dir).with_context(|| format!("creating {}", key_dir.display()))?;
    std::fs::create_dir_all(jwks_dir)
        .with_context(|| format!("creating {}", jwks_dir.display()))?;
    let key_path = key_dir.join(KEY_FILE);
    let kept = key_path.exists();
    if !kept {
        let rng = ring::rand::SystemRandom::new();
        let document = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
        write_private(&key_path, document.as_ref())?;
    }
    let signer = load_from(key_dir)?;
    let jwks_path = jwks_dir.join(JWKS_FILE);
    signer
        .write_jwks(&jwks_path)
        .with_context(|| format!("writing {}", jwks_path.display()))?;
    println!(
        "{} signing key {} (Ed25519); its JWKS: {}",
        if kept { "kept the" } else { "made a" },
        key_path.display(),
        jwks_path.display()
    );
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The key in `QAPMAP_DEMO_KEY_DIR`.
pub(crate) fn load() -> anyhow::Result<TokenSigner> {
    let dir = std::env::var_os(KEY_DIR_VARIABLE)
        .map(PathBuf::from)
        .with_context(|| {
            format!(
                "{KEY_DIR_VARIABLE} is not set: it names the directory `qapmap-demo keys` wrote \
             the signing key to (scripts/run.sh sets it)"
            )
        })?;
    load_from(&dir)
}

fn load_from(dir: &Path) -> anyhow::Result<TokenSigner> {
    let path = dir.join(KEY_FILE);
    let pkcs8 = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8)
        .map_err(|error| anyhow::anyhow!("{} is not an Ed25519 key: {error}", path.display()))?;
    TokenSigner::from_pkcs8(&key_id(pair.public_key().as_ref()), &pkcs8)
}

/// `qapmap-demo-` and the first 8 bytes of the public key, in hex.
fn key_id(public_key: &[u8]) -> String {
    let hex: String = public_key
        .iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("qapmap-demo-{hex}")
}

/// Claims for `subject` with `roles`, valid for an hour, stamped with the
/// issuer and audience the services check when `QAPMAP_JWT_ISSUER` /
/// `QAPMAP_JWT_AUDIENCE` are set (the same variables the services read).
pub(crate) fn claims(subject: &str, companies: Vec<String>, roles: &[&str]) -> Claims {
    let configured = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    Claims {
        sub: subject.to_owned(),
        iss: configured("QAPMAP_JWT_ISSUER"),
        aud: configured("QAPMAP_JWT_AUDIENCE"),
        companies,
        roles: roles.iter().map(|role| (*role).to_owned()).collect(),
        ..Claims::default()
    }
}

/// Signs `claims`, valid for an hour from now.
pub(crate) fn sign(signer: &TokenSigner, claims: Claims) -> String {
    signer.sign_for(claims, VALID_FOR)
}
