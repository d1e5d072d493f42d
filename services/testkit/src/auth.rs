//! Tokens for tests: one Ed25519 key per test process, its JWKS written to
//! a temp file that every service the process starts (in process or as a
//! binary) verifies against, and helpers that mint the tokens a test needs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use qapmap_runtime::auth::claims::Claims;
use qapmap_runtime::auth::client::{AuthenticatedChannel, authenticated};
use qapmap_runtime::auth::signing::{TokenSigner, unix_now};
use tonic::transport::Channel;
use uuid::Uuid;

/// The subject of the platform token the test clients use.
pub const PLATFORM_SUBJECT: &str = "qapmap-test-platform";

struct Authority {
    signer: TokenSigner,
    jwks_path: PathBuf,
}

fn authority() -> &'static Authority {
    static AUTHORITY: OnceLock<Authority> = OnceLock::new();
    AUTHORITY.get_or_init(|| {
        let signer = TokenSigner::generate(&format!("test-{}", crate::unique_suffix()));
        // Kept for the life of the test process: services read it at start
        // and again when a key id is unknown.
        let directory = tempfile::Builder::new()
            .prefix("qapmap-test-jwks-")
            .tempdir()
            .expect("temp dir for the JWKS")
            .keep();
        let jwks_path = directory.join("jwks.json");
        signer.write_jwks(&jwks_path).expect("write the JWKS");
        Authority { signer, jwks_path }
    })
}

/// The JWKS file services under test verify tokens with.
pub fn jwks_path() -> PathBuf {
    authority().jwks_path.clone()
}

/// Signs `claims` with the test key (as given: `exp` is not touched).
pub fn sign(claims: &Claims) -> String {
    authority().signer.sign(claims)
}

/// Claims valid for an hour, with the given companies and roles.
pub fn claims(subject: &str, companies: &[Uuid], roles: &[&str]) -> Claims {
    let now = unix_now();
    Claims {
        sub: subject.to_owned(),
        iat: Some(now),
        exp: now + 3600,
        companies: companies.iter().map(Uuid::to_string).collect(),
        roles: roles.iter().map(|role| (*role).to_owned()).collect(),
        ..Claims::default()
    }
}

/// A platform token: every company, admin and operator. What the existing
/// API tests call with.
pub fn platform_token() -> String {
    static TOKEN: OnceLock<(String, u64)> = OnceLock::new();
    let (token, _) = TOKEN.get_or_init(|| {
        let mut claims = claims(PLATFORM_SUBJECT, &[], &["admin", "operator"]);
        claims.companies = vec!["*".to_owned()];
        claims.exp = unix_now() + 24 * 3600;
        let exp = claims.exp;
        (sign(&claims), exp)
    });
    token.clone()
}

/// An admin of `company` only.
pub fn admin_token(company: Uuid) -> String {
    sign(&claims(
        &format!("admin-of-{company}"),
        &[company],
        &["admin"],
    ))
}

/// An employee of `company` who is `stakeholder` there.
pub fn employee_token(company: Uuid, stakeholder: Uuid) -> String {
    let mut claims = claims(
        &format!("employee-{stakeholder}"),
        &[company],
        &["employee"],
    );
    claims.stakeholders = BTreeMap::from([(company.to_string(), stakeholder.to_string())]);
    sign(&claims)
}

/// A partner of `company` holding `scopes` (e.g. `ledger:read`).
pub fn partner_token(company: Uuid, scopes: &[&str]) -> String {
    let mut claims = claims(&format!("partner-of-{company}"), &[company], &["partner"]);
    claims.scope = scopes.join(" ");
    sign(&claims)
}

/// An admin token of `company` that expired two minutes ago (past the leeway).
pub fn expired_token(company: Uuid) -> String {
    let mut claims = claims(&format!("admin-of-{company}"), &[company], &["admin"]);
    claims.iat = Some(unix_now() - 7200);
    claims.exp = unix_now() - 120;
    sign(&claims)
}

/// An admin token of `company` signed by a key the services do not know,
/// under the test key's id (so only the signature gives it away).
pub fn forged_token(company: Uuid) -> String {
    let kid = {
        let jwks: serde_json::Value =
            serde_json::from_str(&authority().signer.jwks_json()).expect("jwks parses");
        jwks["keys"][0]["kid"].as_str().expect("kid").to_owned()
    };
    let stranger = TokenSigner::generate(&kid);
    stranger.sign_for(
        claims(&format!("admin-of-{company}"), &[company], &["admin"]),
        Duration::from_secs(3600),
    )
}

/// `channel` with the platform token on every call.
pub fn platform_channel(channel: Channel) -> AuthenticatedChannel {
    authenticated(channel, &platform_token())
}
