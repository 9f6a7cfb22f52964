//! JWT auth tokens: etcd's `--auth-token jwt,sign-method=M,pub-key=F,priv-key=F,ttl=D`.
//!
//! A JWT carries the user name, the auth revision it was issued at, and an expiry, signed
//! with the configured key. Any member holding the key verifies it without shared state,
//! unlike simple tokens. As in etcd, a token's revision is checked against the auth store's:
//! once users, roles or permissions change, older tokens get "revision of auth store is
//! old" and the client authenticates again. A member given only a public key verifies
//! tokens but cannot issue them.
//!
//! This module reads the key files once at start and owns no replicated state; it never
//! proposes, logs a token, or looks at the auth store.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::{self, KeyPair as _};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject as _;
use serde::{Deserialize, Serialize};

use super::AuthError;
use crate::limits::AUTH_JWT_TTL_DEFAULT;

/// The claims of a token, named as etcd names them so tokens read the same.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    username: String,
    revision: u64,
    /// Expiry, in seconds since the Unix epoch.
    exp: u64,
}

/// Why the `--auth-token jwt,...` options are refused.
#[derive(Debug, thiserror::Error)]
pub enum JwtConfigError {
    /// An option that is not `name=value`.
    #[error("auth: invalid auth options: {0:?} is not name=value")]
    Malformed(String),
    /// `sign-method` is missing or names no algorithm we sign with.
    #[error(
        "auth: invalid auth signature method {0:?} (one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA, HS256, HS384, HS512)"
    )]
    SignMethod(String),
    /// `ttl` does not parse as a positive duration.
    #[error("auth: invalid auth options: ttl {0:?} is not a duration such as 5m")]
    Ttl(String),
    /// A key file could not be read.
    #[error("auth: reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Neither key was given (or, for HMAC, no `priv-key` secret).
    #[error("auth: missing key data")]
    MissingKey,
    /// A key file holds no key of the method's kind.
    #[error("auth: {which} is not a {method} key: {detail}")]
    BadKey {
        /// `pub-key` or `priv-key`.
        which: &'static str,
        /// The sign method.
        method: String,
        /// What the parser said.
        detail: String,
    },
    /// The public key does not verify what the private key signs.
    #[error("auth: public and private keys don't match")]
    KeyMismatch,
}

/// Why a token could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// This member holds only the public key.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The signature failed (the keys were checked at start, so this is not expected).
    #[error("signing a JWT: {0}")]
    Sign(String),
}

/// Issues and verifies JWT auth tokens.
pub struct JwtTokens {
    algorithm: Algorithm,
    /// `None` for a verify-only member (public key only).
    signing: Option<EncodingKey>,
    verifying: DecodingKey,
    ttl: Duration,
}

impl std::fmt::Debug for JwtTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys stay out of debug output.
        f.debug_struct("JwtTokens")
            .field("algorithm", &self.algorithm)
            .field("can_sign", &self.signing.is_some())
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl JwtTokens {
    /// Parses the options after `jwt,` in `--auth-token` (`sign-method`, `pub-key`,
    /// `priv-key`, `ttl`; unknown names are ignored with a warning, as etcd does) and loads
    /// the keys.
    ///
    /// # Errors
    /// [`JwtConfigError`] naming what is wrong.
    pub fn from_options(options: &str) -> Result<JwtTokens, JwtConfigError> {
        let mut method = String::new();
        let mut public = None;
        let mut private = None;
        let mut ttl = AUTH_JWT_TTL_DEFAULT;
        for option in options.split(',').filter(|option| !option.is_empty()) {
            let (name, value) = option
                .split_once('=')
                .ok_or_else(|| JwtConfigError::Malformed(option.to_owned()))?;
            match name {
                "sign-method" => value.clone_into(&mut method),
                "pub-key" => public = Some(read_key(value)?),
                "priv-key" => private = Some(read_key(value)?),
                "ttl" => {
                    ttl = humantime::parse_duration(value)
                        .ok()
                        .filter(|ttl| !ttl.is_zero())
                        .ok_or_else(|| JwtConfigError::Ttl(value.to_owned()))?;
                }
                other => tracing::warn!(option = other, "unknown JWT option ignored"),
            }
        }
        let algorithm: Algorithm = method
            .parse()
            .map_err(|_| JwtConfigError::SignMethod(method.clone()))?;
        let (signing, verifying) = keys(algorithm, &method, public.as_deref(), private.as_deref())?;
        let tokens = JwtTokens {
            algorithm,
            signing,
            verifying,
            ttl,
        };
        tokens.check_pair()?;
        Ok(tokens)
    }

    /// How long an issued token is valid.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A token for `user` at auth `revision`, valid for the TTL.
    ///
    /// # Errors
    /// [`AuthError::VerifyOnly`] on a member without the private key.
    pub fn issue(&self, user: &str, revision: u64) -> Result<String, IssueError> {
        let signing = self.signing.as_ref().ok_or(AuthError::VerifyOnly)?;
        let exp = unix_now().saturating_add(self.ttl).as_secs();
        let claims = Claims {
            username: user.to_owned(),
            revision,
            exp,
        };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, signing)
            .map_err(|error| IssueError::Sign(error.to_string()))
    }

    /// The user and auth revision a valid, unexpired token names.
    ///
    /// # Errors
    /// [`AuthError::InvalidAuthToken`] for a token that is malformed, signed with another
    /// key or method, or expired.
    pub fn resolve(&self, token: &str) -> Result<(String, u64), AuthError> {
        let mut validation = Validation::new(self.algorithm);
        // Expiry is exact, as etcd's: no grace period.
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp"]);
        jsonwebtoken::decode::<Claims>(token, &self.verifying, &validation)
            .map(|data| (data.claims.username, data.claims.revision))
            .map_err(|_| AuthError::InvalidAuthToken)
    }

    /// With both keys, a token the private key signs must verify with the public one.
    fn check_pair(&self) -> Result<(), JwtConfigError> {
        if self.signing.is_none() {
            return Ok(());
        }
        let probe = self.issue("", 0).map_err(|_| JwtConfigError::KeyMismatch)?;
        self.resolve(&probe)
            .map(|_| ())
            .map_err(|_| JwtConfigError::KeyMismatch)
    }
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

fn read_key(path: &str) -> Result<Vec<u8>, JwtConfigError> {
    std::fs::read(Path::new(path)).map_err(|source| JwtConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The signing key (from `priv-key`) and the verifying key (from `pub-key`, else derived
/// from the private key as etcd derives it).
fn keys(
    algorithm: Algorithm,
    method: &str,
    public: Option<&[u8]>,
    private: Option<&[u8]>,
) -> Result<(Option<EncodingKey>, DecodingKey), JwtConfigError> {
    let bad = |which: &'static str| {
        move |detail: String| JwtConfigError::BadKey {
            which,
            method: method.to_owned(),
            detail,
        }
    };
    if matches!(
        algorithm,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
    ) {
        // etcd-compat: an HMAC secret is the whole content of the `priv-key` file.
        let secret = private.ok_or(JwtConfigError::MissingKey)?;
        return Ok((
            Some(EncodingKey::from_secret(secret)),
            DecodingKey::from_secret(secret),
        ));
    }
    let signing = private
        .map(|pem| match algorithm {
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
            _ => EncodingKey::from_rsa_pem(pem),
        })
        .transpose()
        .map_err(|error| bad("priv-key")(error.to_string()))?;
    let verifying = match (public, private) {
        (Some(pem), _) => match algorithm {
            Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem),
            Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
            _ => DecodingKey::from_rsa_pem(pem),
        }
        .map_err(|error| bad("pub-key")(error.to_string()))?,
        (None, Some(pem)) => derive_public(algorithm, pem).map_err(bad("priv-key"))?,
        (None, None) => return Err(JwtConfigError::MissingKey),
    };
    Ok((signing, verifying))
}

/// The public half of a PEM private key, in the raw form ring verifies with.
fn derive_public(algorithm: Algorithm, pem: &[u8]) -> Result<DecodingKey, String> {
    let der = PrivateKeyDer::from_pem_slice(pem).map_err(|error| error.to_string())?;
    let rng = ring::rand::SystemRandom::new();
    let rejected = |error: ring::error::KeyRejected| error.to_string();
    match (algorithm, &der) {
        (Algorithm::ES256 | Algorithm::ES384, PrivateKeyDer::Pkcs8(pkcs8)) => {
            let curve = if algorithm == Algorithm::ES256 {
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING
            } else {
                &signature::ECDSA_P384_SHA384_FIXED_SIGNING
            };
            let pair = signature::EcdsaKeyPair::from_pkcs8(curve, pkcs8.secret_pkcs8_der(), &rng)
                .map_err(rejected)?;
            Ok(DecodingKey::from_ec_der(pair.public_key().as_ref()))
        }
        (Algorithm::ES256 | Algorithm::ES384, _) => {
            Err("EC private keys must be PKCS#8 (\"BEGIN PRIVATE KEY\")".to_owned())
        }
        (Algorithm::EdDSA, PrivateKeyDer::Pkcs8(pkcs8)) => {
            let pair =
                signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8.secret_pkcs8_der())
                    .map_err(rejected)?;
            Ok(DecodingKey::from_ed_der(pair.public_key().as_ref()))
        }
        (Algorithm::EdDSA, _) => {
            Err("Ed25519 private keys must be PKCS#8 (\"BEGIN PRIVATE KEY\")".to_owned())
        }
        (_, PrivateKeyDer::Pkcs1(pkcs1)) => {
            let pair =
                signature::RsaKeyPair::from_der(pkcs1.secret_pkcs1_der()).map_err(rejected)?;
            Ok(DecodingKey::from_rsa_der(pair.public().as_ref()))
        }
        (_, PrivateKeyDer::Pkcs8(pkcs8)) => {
            let pair =
                signature::RsaKeyPair::from_pkcs8(pkcs8.secret_pkcs8_der()).map_err(rejected)?;
            Ok(DecodingKey::from_rsa_der(pair.public().as_ref()))
        }
        (_, _) => Err("not an RSA private key".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> String {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write key");
        path.display().to_string()
    }

    fn ec_pair() -> (String, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        (key.serialize_pem(), key.public_key_pem())
    }

    #[test]
    fn a_token_names_its_user_and_revision_and_a_public_key_alone_only_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = ec_pair();
        let private = write(dir.path(), "priv.pem", &private);
        let public = write(dir.path(), "pub.pem", &public);
        // Private key only: the public half is derived.
        let signer =
            JwtTokens::from_options(&format!("sign-method=ES256,priv-key={private}")).unwrap();
        let token = signer.issue("alice", 7).unwrap();
        assert_eq!(signer.resolve(&token).unwrap(), ("alice".to_owned(), 7));
        let verifier =
            JwtTokens::from_options(&format!("sign-method=ES256,pub-key={public}")).unwrap();
        assert_eq!(verifier.resolve(&token).unwrap(), ("alice".to_owned(), 7));
        assert!(matches!(
            verifier.issue("alice", 7),
            Err(IssueError::Auth(AuthError::VerifyOnly))
        ));
        // A token altered or signed by another key is refused.
        let mut altered = token.clone();
        altered.pop();
        altered.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert!(matches!(
            verifier.resolve(&altered),
            Err(AuthError::InvalidAuthToken)
        ));
        let (other, _) = ec_pair();
        let other = write(dir.path(), "other.pem", &other);
        let stranger =
            JwtTokens::from_options(&format!("sign-method=ES256,priv-key={other}")).unwrap();
        assert!(matches!(
            stranger.resolve(&token),
            Err(AuthError::InvalidAuthToken)
        ));
        // Keys that do not belong together are refused at start.
        let mismatch = JwtTokens::from_options(&format!(
            "sign-method=ES256,priv-key={other},pub-key={public}"
        ));
        assert!(matches!(mismatch, Err(JwtConfigError::KeyMismatch)));
    }

    #[test]
    fn hmac_secrets_and_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let secret = write(dir.path(), "secret", "a shared secret of some length");
        let tokens =
            JwtTokens::from_options(&format!("sign-method=HS256,priv-key={secret},ttl=1s"))
                .unwrap();
        assert_eq!(tokens.ttl(), Duration::from_secs(1));
        let token = tokens.issue("bob", 3).unwrap();
        assert_eq!(tokens.resolve(&token).unwrap(), ("bob".to_owned(), 3));
        // `exp` has one-second resolution, so the token ends within two seconds; asked
        // every 50 ms, for at most 3 s.
        let expired = (0..60).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            matches!(tokens.resolve(&token), Err(AuthError::InvalidAuthToken))
        });
        assert!(expired, "the token outlived its 1 s TTL by 2 s");
    }

    #[test]
    fn bad_options_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let secret = write(dir.path(), "secret", "s");
        for (options, expected) in [
            ("priv-key=/nonexistent".to_owned(), "reading /nonexistent"),
            (
                format!("sign-method=XY1,priv-key={secret}"),
                "signature method \"XY1\"",
            ),
            (format!("priv-key={secret}"), "signature method \"\""),
            ("sign-method=RS256".to_owned(), "missing key data"),
            ("sign-method=HS256".to_owned(), "missing key data"),
            (
                format!("sign-method=HS256,priv-key={secret},ttl=soon"),
                "ttl \"soon\"",
            ),
            (
                "sign-method".to_owned(),
                "\"sign-method\" is not name=value",
            ),
            (
                format!("sign-method=RS256,priv-key={secret}"),
                "priv-key is not a RS256 key",
            ),
        ] {
            let error = JwtTokens::from_options(&options).unwrap_err().to_string();
            assert!(error.contains(expected), "{options}: {error}");
        }
    }
}
