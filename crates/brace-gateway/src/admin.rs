//! Who may use the admin endpoints (`POST /v1/degradation/level`, `POST /v1/circuits/{name}`,
//! `POST`/`DELETE /v1/chaos`, `GET /v1/config`).
//!
//! The admin endpoints fail closed:
//!
//! - With an `admin` section, a request needs `Authorization: Bearer <token>`, the token being
//!   the value of the variable `admin.token_env` names. An unset or empty variable stops the
//!   gateway at start ([`AdminAuth::from_config`] fails), rather than leaving the endpoints
//!   open.
//! - Without one, they answer only when the gateway listens on a loopback address (as
//!   Redis's protected mode does); on any other address they answer 403 saying how to
//!   enable them.
//!
//! Tokens are compared by their BLAKE3 digests with a constant-time comparison, so neither
//! the token's content nor its length shows in how long a refusal takes.

use std::fmt;
use std::net::SocketAddr;

use http::{HeaderMap, StatusCode};

use crate::config::AdminConfig;
use crate::error::ApiError;

/// The admin endpoints' gate. See the [module docs](self).
#[derive(Clone)]
pub struct AdminAuth {
    token: Option<blake3::Hash>,
}

impl fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminAuth")
            .field("token", &self.token.map(|_| "<set>"))
            .finish()
    }
}

impl AdminAuth {
    /// The gate for `config`, reading the token's variable through `env`.
    ///
    /// # Errors
    ///
    /// A message naming the variable when `admin.token_env` names one that is unset or
    /// empty.
    pub fn from_config(
        config: Option<&AdminConfig>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let Some(config) = config else {
            return Ok(Self { token: None });
        };
        let var = config.token_env.as_str();
        match env(var) {
            Some(token) if !token.trim().is_empty() => Ok(Self {
                token: Some(blake3::hash(token.as_bytes())),
            }),
            Some(_) => Err(format!(
                "admin.token_env: the environment variable {var} is empty; set it to the admin \
                 token, or remove the `admin` section"
            )),
            None => Err(format!(
                "admin.token_env: the environment variable {var} is not set; set it to the \
                 admin token, or remove the `admin` section"
            )),
        }
    }

    /// `true` when a token is configured.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Lets a request through or says why not. `listening` is the address the gateway
    /// listens on (used only when no token is configured).
    ///
    /// # Errors
    ///
    /// 401 when the token is missing or wrong; 403 when there is no token and `listening`
    /// is not a loopback address.
    pub fn authorize(&self, headers: &HeaderMap, listening: SocketAddr) -> Result<(), ApiError> {
        let Some(expected) = &self.token else {
            if listening.ip().to_canonical().is_loopback() {
                return Ok(());
            }
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "admin endpoints are disabled: the gateway listens on {listening}, not a \
                     loopback address, and has no `admin` section. To enable them, add \
                     `admin: {{token_env: VAR}}` to the configuration and put a token in VAR; \
                     requests then send `Authorization: Bearer <token>`"
                ),
            )
            .with_code("admin_disabled"));
        };
        match bearer(headers) {
            // `blake3::Hash`'s equality is constant-time.
            Some(given) if blake3::hash(given.as_bytes()) == *expected => Ok(()),
            Some(_) => Err(
                ApiError::new(StatusCode::UNAUTHORIZED, "invalid admin token")
                    .with_code("invalid_admin_token"),
            ),
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing admin token: send `Authorization: Bearer <token>`",
            )
            .with_code("invalid_admin_token")),
        }
    }
}

/// The credential of an `Authorization: Bearer <credential>` header (the scheme in any
/// case), if there is one.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credential) = value.trim().split_once(' ')?;
    let credential = credential.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !credential.is_empty()).then_some(credential)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            authorization.parse().expect("a header value"),
        );
        headers
    }

    #[test]
    fn bearer_credentials_are_read_in_any_case_of_the_scheme() {
        assert_eq!(bearer(&headers("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&headers("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(&headers("Basic abc")), None);
        assert_eq!(bearer(&headers("Bearer ")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }

    #[test]
    fn an_unset_or_empty_token_variable_is_an_error_naming_it() {
        let config = AdminConfig {
            token_env: "MY_ADMIN_TOKEN".into(),
        };
        let unset = AdminAuth::from_config(Some(&config), |_| None).unwrap_err();
        assert!(
            unset.contains("MY_ADMIN_TOKEN") && unset.contains("not set"),
            "{unset}"
        );
        let empty = AdminAuth::from_config(Some(&config), |_| Some("  ".into())).unwrap_err();
        assert!(
            empty.contains("MY_ADMIN_TOKEN") && empty.contains("empty"),
            "{empty}"
        );
    }

    #[test]
    fn without_a_section_only_loopback_listeners_allow_admin_calls() {
        let open = AdminAuth::from_config(None, |_| None).unwrap();
        for addr in [
            "127.0.0.1:8080",
            "127.0.0.2:1",
            "[::1]:8080",
            "[::ffff:127.0.0.1]:80",
        ] {
            assert!(
                open.authorize(&HeaderMap::new(), addr.parse().unwrap())
                    .is_ok(),
                "{addr}"
            );
        }
        for addr in ["0.0.0.0:8080", "10.0.0.5:8080", "[::]:8080"] {
            let err = open
                .authorize(&HeaderMap::new(), addr.parse().unwrap())
                .unwrap_err();
            assert_eq!(err.status(), StatusCode::FORBIDDEN, "{addr}");
            assert!(
                err.message().contains("admin: {token_env"),
                "{}",
                err.message()
            );
        }
    }

    #[test]
    fn a_token_is_needed_whatever_the_address() {
        let config = AdminConfig {
            token_env: "T".into(),
        };
        let auth = AdminAuth::from_config(Some(&config), |_| Some("s3cret".into())).unwrap();
        let loopback = "127.0.0.1:8080".parse().unwrap();
        assert!(auth.authorize(&headers("Bearer s3cret"), loopback).is_ok());
        for given in ["Bearer s3cre", "Bearer s3cret2", "Bearer S3CRET"] {
            let err = auth.authorize(&headers(given), loopback).unwrap_err();
            assert_eq!(err.status(), StatusCode::UNAUTHORIZED, "{given}");
        }
        let err = auth.authorize(&HeaderMap::new(), loopback).unwrap_err();
        assert!(err.message().contains("missing admin token"));
        assert!(!format!("{auth:?}").contains("s3cret"));
    }
}
