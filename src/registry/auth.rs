//! Registry authentication: `WWW-Authenticate` challenges, the Bearer token flow, Basic auth.
//!
//! A registry answers an unauthenticated request with 401 and a challenge. `Basic` means: send
//! the credentials on every request. `Bearer realm=…,service=…,scope=…` means: get a short-lived
//! token from `realm` (anonymously, with Basic credentials, or by exchanging an OAuth2 refresh
//! token), then send `Authorization: Bearer <token>` until it expires. Tokens are kept in memory
//! only and never logged.
//!
//! The `WWW-Authenticate` parser is ours rather than a crate's. `http-auth` (the kept parser) is
//! strict RFC 7235: it stops with an error at the first malformed challenge, while registries
//! send shapes it refuses (e.g. unquoted values with spaces) and the client must still read the
//! `realm`/`service`/`scope` it can. It would also be a new dependency for ~70 lines. Ours is one
//! pass over the header (no recursion, no allocation beyond the result) and is fuzzed by
//! `parsers_survive_arbitrary_input`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Deserialize;

use reqwest::header::HeaderValue;

use super::credentials::{Credentials, Resolved, Secret};
use super::transport::{host_port, read_capped, Transport};

/// One parsed challenge: its scheme (lowercase) and parameters (keys lowercase).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    pub fn param(&self, k: &str) -> Option<&str> {
        self.params.get(k).map(String::as_str)
    }
}

/// Parses a `WWW-Authenticate` value: `Scheme k="v", k2=v2[, Scheme2 …]`. Lenient about spacing
/// and quoting, because registries differ; unknown shapes yield what could be read.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let b = header.as_bytes();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && (b[*i] == b' ' || b[*i] == b'\t' || b[*i] == b',') {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= b.len() {
            break;
        }
        // A token: either a scheme (followed by a space or the end) or a parameter name.
        let start = i;
        while i < b.len() && !matches!(b[i], b' ' | b'\t' | b'=' | b',') {
            i += 1;
        }
        let token = &header[start..i];
        let mut j = i;
        while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
            j += 1;
        }
        if j < b.len() && b[j] == b'=' && !out.is_empty() {
            // A parameter of the current challenge.
            i = j + 1;
            while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
                i += 1;
            }
            let value = if i < b.len() && b[i] == b'"' {
                i += 1;
                let mut v = String::new();
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        i += 1;
                    }
                    // Copy one whole UTF-8 character.
                    let ch = header[i..].chars().next().expect("in bounds");
                    v.push(ch);
                    i += ch.len_utf8();
                }
                i += 1;
                v
            } else {
                let s = i;
                while i < b.len() && b[i] != b',' {
                    i += 1;
                }
                header[s..i].trim().to_owned()
            };
            if let Some(c) = out.last_mut() {
                c.params.insert(token.to_ascii_lowercase(), value);
            }
        } else if !token.is_empty() {
            out.push(Challenge {
                scheme: token.to_ascii_lowercase(),
                params: BTreeMap::new(),
            });
        } else {
            i += 1;
        }
    }
    out
}

/// A Bearer token and when to stop using it.
#[derive(Clone)]
pub struct Token {
    pub value: Secret,
    pub refresh_after: Instant,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

impl Token {
    pub fn fresh(&self) -> bool {
        Instant::now() < self.refresh_after
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// The token spec's default lifetime when the server does not say.
const DEFAULT_TOKEN_LIFETIME: u64 = 60;
/// Tokens that claim to live longer are still refreshed after a day (and a huge `expires_in` cannot
/// overflow the clock).
const MAX_TOKEN_LIFETIME: u64 = 24 * 3600;

/// Why authentication failed, in words a user can act on. Never contains a secret.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("registry {registry} refused the credentials for {who} ({status}): {hint}")]
    Refused {
        registry: String,
        who: String,
        status: u16,
        hint: String,
    },
    #[error("registry {registry} requires authentication to pull {repository} ({status}): pass --creds USER[:PASS], set STATIC_REGISTRY_SRC_USERNAME and STATIC_REGISTRY_SRC_PASSWORD, or `docker login {registry}`")]
    Required {
        registry: String,
        repository: String,
        status: u16,
    },
}

/// The `Authorization: Basic …` value for a user and password, marked sensitive (never logged).
pub fn basic_value(username: &str, password: &Secret) -> anyhow::Result<HeaderValue> {
    use base64::Engine as _;
    let raw = format!("{username}:{}", password.expose());
    let value = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    );
    sensitive_value(&value)
}

/// A header value holding a secret, marked so that it is never logged.
pub fn sensitive_value(value: &str) -> anyhow::Result<HeaderValue> {
    let mut v = HeaderValue::from_str(value).map_err(|_| {
        anyhow::anyhow!("the credentials or token contain bytes that cannot go in a header")
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// Why a token response was refused. Never quotes the body: it may hold a token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenResponseError {
    #[error("it is not a token response (JSON with `token` or `access_token`)")]
    NotATokenResponse,
    #[error("it holds no token")]
    NoToken,
    #[error("its token cannot go in a header")]
    NotAHeader,
}

/// Parses a token service's answer: `{"token": …}` or `{"access_token": …}`, with an optional
/// `expires_in` (seconds; the spec's 60 when absent). The token must fit in a header.
pub fn parse_token_response(body: &[u8]) -> Result<Token, TokenResponseError> {
    let parsed: TokenResponse =
        serde_json::from_slice(body).map_err(|_| TokenResponseError::NotATokenResponse)?;
    let value = parsed
        .token
        .filter(|t| !t.is_empty())
        .or(parsed.access_token)
        .filter(|t| !t.is_empty())
        .ok_or(TokenResponseError::NoToken)?;
    if HeaderValue::from_str(&format!("Bearer {value}")).is_err() {
        return Err(TokenResponseError::NotAHeader);
    }
    let lifetime = parsed
        .expires_in
        .unwrap_or(DEFAULT_TOKEN_LIFETIME)
        .clamp(1, MAX_TOKEN_LIFETIME);
    // Refresh a little early (a tenth of the lifetime, at most 30 s), so a request never leaves
    // with a token that expires on the way.
    let margin = (lifetime / 10).min(30);
    Ok(Token {
        value: Secret::new(value),
        refresh_after: Instant::now() + Duration::from_secs(lifetime - margin),
    })
}

/// The token service answered a status other than success or a refusal.
#[derive(Debug, thiserror::Error)]
#[error("the token service of registry {registry} ({host}) answered {status}")]
pub struct TokenStatus {
    pub registry: String,
    pub host: String,
    pub status: u16,
}

/// What a token request needs besides the transport.
pub struct TokenRequest<'a> {
    /// The registry's own Bearer challenge (never one reached through a redirect).
    pub challenge: &'a Challenge,
    pub scope: &'a str,
    pub creds: &'a Resolved,
    /// The registry as the user named it, and its API URL (whose scheme the realm must match).
    pub registry: &'a str,
    pub registry_url: &'a url::Url,
    pub repository: &'a str,
    /// Total time of the token request, and the most of its body read.
    pub timeout: Duration,
    pub max_body: usize,
}

/// Fetches a token from the challenge's realm for `scope`.
///
/// Where credentials go (Docker's rule): the credentials given for the registry are sent to the
/// realm its own challenge names, whatever that realm's host (Docker Hub's is auth.docker.io).
/// The realm must be https when the registry is; the request is sent with the credentials on
/// its first hop only (a redirect gets none, and a POST is not redirected at all).
pub async fn fetch_token(t: &Transport, req: &TokenRequest<'_>) -> anyhow::Result<Token> {
    let registry = req.registry;
    let realm = req
        .challenge
        .param("realm")
        .with_context(|| format!("registry {registry} sent a Bearer challenge without a realm"))?;
    let mut url = url::Url::parse(realm)
        .with_context(|| format!("registry {registry} sent an invalid token realm {realm:?}"))?;
    if !matches!(url.scheme(), "https" | "http") {
        bail!("registry {registry} sent a token realm that is not http(s): {realm:?}");
    }
    let host = host_port(&url);
    if req.registry_url.scheme() == "https" && url.scheme() != "https" {
        bail!("registry {registry} is served over https but named a plain-http token realm ({host}): refusing to send credentials there");
    }
    let service = req.challenge.param("service");
    let scope = req
        .challenge
        .param("scope")
        .filter(|s| s.contains(req.repository))
        .unwrap_or(req.scope)
        .to_owned();
    tracing::debug!("requesting a token from {host} for scope {scope}");
    let sent = match &req.creds.credentials {
        Credentials::IdentityToken(refresh) => {
            // OAuth2: exchange the refresh token (what `docker login` stores for SSO accounts).
            let mut form = vec![
                ("grant_type", "refresh_token".to_owned()),
                ("refresh_token", refresh.expose().to_owned()),
                ("client_id", "static-registry".to_owned()),
                ("scope", scope.clone()),
            ];
            if let Some(s) = service {
                form.push(("service", s.to_owned()));
            }
            let body = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(form.iter().map(|(k, v)| (*k, v.as_str())))
                .finish();
            t.post_form(&url, body, req.timeout).await
        }
        other => {
            {
                let mut q = url.query_pairs_mut();
                if let Some(s) = service {
                    q.append_pair("service", s);
                }
                q.append_pair("scope", &scope);
            }
            let credential = match other {
                Credentials::Basic { username, password } => Some(basic_value(username, password)?),
                _ => None,
            };
            t.send(
                &reqwest::Method::GET,
                &url,
                &reqwest::header::HeaderMap::new(),
                credential.as_ref(),
                req.timeout,
            )
            .await
        }
    };
    let resp = sent.with_context(|| {
        format!("cannot get a token from the token service of registry {registry} at {host}")
    })?;
    let status = resp.status().as_u16();
    if status == 401 || status == 403 {
        return Err(match req.creds.credentials {
            Credentials::Anonymous => AuthError::Required {
                registry: registry.to_owned(),
                repository: req.repository.to_owned(),
                status,
            },
            _ => AuthError::Refused {
                registry: registry.to_owned(),
                who: req.creds.who(),
                status,
                hint: req.creds.hint(),
            },
        }
        .into());
    }
    if !(200..300).contains(&status) {
        return Err(TokenStatus {
            registry: registry.to_owned(),
            host,
            status,
        }
        .into());
    }
    let body = read_capped(resp, req.max_body, "the token response")
        .await
        .with_context(|| format!("reading a token from registry {registry}"))?;
    parse_token_response(&body).map_err(|e| {
        anyhow::anyhow!("the token service of registry {registry} ({host}) answered badly: {e}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_hub_and_basic_challenges() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].param("service"), Some("registry.docker.io"));
        assert_eq!(c[0].param("scope"), Some("repository:library/alpine:pull"));
        let b = parse_challenges(r#"Basic realm="Registry Realm""#);
        assert_eq!(b[0].scheme, "basic");
        assert_eq!(b[0].param("realm"), Some("Registry Realm"));
        let two = parse_challenges(
            r#"Basic realm="a, b", Bearer realm="https://x/t", service=x,error="invalid_token""#,
        );
        assert_eq!(two.len(), 2, "{two:?}");
        assert_eq!(two[0].param("realm"), Some("a, b"));
        assert_eq!(two[1].param("service"), Some("x"));
        assert_eq!(two[1].param("error"), Some("invalid_token"));
        let esc = parse_challenges(r#"Bearer realm="a\"b", Scope = "x""#);
        assert_eq!(esc[0].param("realm"), Some("a\"b"));
        assert_eq!(esc[0].param("scope"), Some("x"));
        assert!(parse_challenges("").is_empty());
        assert_eq!(parse_challenges("Basic")[0].scheme, "basic");
    }

    #[test]
    fn token_responses_parse_or_fail_without_quoting_the_body() {
        let t = parse_token_response(br#"{"token":"abc","expires_in":300}"#).unwrap();
        assert_eq!(t.value.expose(), "abc");
        let t = parse_token_response(br#"{"access_token":"xyz"}"#).unwrap();
        assert_eq!(t.value.expose(), "xyz");
        // A lifetime too big for the clock is cut, not a panic.
        assert!(
            parse_token_response(br#"{"token":"a","expires_in":18446744073709551615}"#).is_ok()
        );
        assert_eq!(
            parse_token_response(br#"{"token":""}"#).unwrap_err(),
            TokenResponseError::NoToken
        );
        assert_eq!(
            parse_token_response(b"secret-ish garbage").unwrap_err(),
            TokenResponseError::NotATokenResponse
        );
        assert_eq!(
            parse_token_response(br#"{"token":"a\nb"}"#).unwrap_err(),
            TokenResponseError::NotAHeader
        );
        assert!(!parse_token_response(b"secret-ish garbage")
            .unwrap_err()
            .to_string()
            .contains("secret"));
    }

    /// Cheap stand-in for the fuzzer: random and mutated inputs never panic either parser.
    #[test]
    fn parsers_survive_arbitrary_input() {
        let seeds: [&[u8]; 4] = [
            br#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
            br#"Basic realm="a, b", Bearer realm="https://x/t", service=x,error="invalid_token""#,
            br#"{"token":"abc","access_token":"d","expires_in":300}"#,
            "Bearer realm=\"\u{e9}\u{1f600}\\\"".as_bytes(),
        ];
        let alphabet = b" \t,=\"\\abcBearer{}:0123456789";
        let mut rng: u64 = 0x5eed;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for round in 0..20_000 {
            let mut input = seeds[round % seeds.len()].to_vec();
            for _ in 0..(next() % 8) {
                let at = (next() as usize) % (input.len() + 1);
                match next() % 3 {
                    0 if at < input.len() => {
                        input.remove(at);
                    }
                    1 => input.insert(at, alphabet[(next() as usize) % alphabet.len()]),
                    _ => input.insert(at, next() as u8),
                }
            }
            let _ = parse_challenges(&String::from_utf8_lossy(&input));
            let _ = parse_token_response(&input);
        }
    }

    #[test]
    fn tokens_do_not_print() {
        let t = Token {
            value: Secret::new("eyJhbGciOi"),
            refresh_after: Instant::now(),
        };
        assert!(!format!("{t:?}").contains("eyJ"));
    }
}
