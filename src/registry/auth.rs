//! Registry authentication: `WWW-Authenticate` challenges, the Bearer token flow, Basic auth.
//!
//! A registry answers an unauthenticated request with 401 and a challenge. `Basic` means: send
//! the credentials on every request. `Bearer realm=…,service=…,scope=…` means: get a short-lived
//! token from `realm` (anonymously, with Basic credentials, or by exchanging an OAuth2 refresh
//! token), then send `Authorization: Bearer <token>` until it expires. Tokens are kept in memory
//! only and never logged.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Deserialize;

use super::credentials::{Credentials, Resolved, Secret};

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

/// Fetches a token from the challenge's realm for `scope`.
pub async fn fetch_token(
    http: &reqwest::Client,
    challenge: &Challenge,
    scope: &str,
    creds: &Resolved,
    registry: &str,
    repository: &str,
) -> anyhow::Result<Token> {
    let realm = challenge
        .param("realm")
        .with_context(|| format!("registry {registry} sent a Bearer challenge without a realm"))?;
    let mut url = url::Url::parse(realm)
        .with_context(|| format!("registry {registry} sent an invalid token realm {realm:?}"))?;
    if !matches!(url.scheme(), "https" | "http") {
        bail!("registry {registry} sent a token realm that is not http(s): {realm:?}");
    }
    let service = challenge.param("service");
    let scope = challenge
        .param("scope")
        .filter(|s| s.contains(repository))
        .unwrap_or(scope)
        .to_owned();
    let request = match &creds.credentials {
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
            http.post(url.clone())
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(body)
        }
        other => {
            {
                let mut q = url.query_pairs_mut();
                if let Some(s) = service {
                    q.append_pair("service", s);
                }
                q.append_pair("scope", &scope);
            }
            let req = http.get(url.clone());
            match other {
                Credentials::Basic { username, password } => {
                    req.basic_auth(username, Some(password.expose()))
                }
                _ => req,
            }
        }
    };
    let host = url.host_str().unwrap_or("?").to_owned();
    tracing::debug!("requesting a token from {host} for scope {scope}");
    let resp = request.send().await.with_context(|| {
        format!("cannot reach the token service of registry {registry} at {host}")
    })?;
    let status = resp.status().as_u16();
    if status == 401 || status == 403 {
        return Err(match creds.credentials {
            Credentials::Anonymous => AuthError::Required {
                registry: registry.to_owned(),
                repository: repository.to_owned(),
                status,
            },
            _ => AuthError::Refused {
                registry: registry.to_owned(),
                who: creds.who(),
                status,
                hint: creds.hint(),
            },
        }
        .into());
    }
    if !(200..300).contains(&status) {
        bail!("the token service of registry {registry} ({host}) answered {status}");
    }
    let body = resp
        .bytes()
        .await
        .with_context(|| format!("reading a token from registry {registry}"))?;
    parse_token_response(&body, registry, &host)
}

/// Reads a token service's answer (`token` or `access_token`, `expires_in`). Public so the fuzz
/// harnesses can reach it.
pub fn parse_token_response(body: &[u8], registry: &str, host: &str) -> anyhow::Result<Token> {
    // Parse errors are not quoted: the body holds a token.
    let parsed: TokenResponse = serde_json::from_slice(body).map_err(|_| {
        anyhow::anyhow!("the token service of registry {registry} ({host}) answered something that is not a token response")
    })?;
    let value = parsed
        .token
        .filter(|t| !t.is_empty())
        .or(parsed.access_token)
        .filter(|t| !t.is_empty())
        .with_context(|| format!("the token service of registry {registry} returned no token"))?;
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

    /// Found by `fuzz/` (target `auth`): `Instant + u64::MAX seconds` panicked.
    #[test]
    fn huge_token_lifetime_is_capped() {
        let body = br#"{"token":"ab","expires_in":18446744073709551615}"#;
        let t = parse_token_response(body, "r.test", "auth.test").unwrap();
        assert!(t.fresh());
        assert!(t.refresh_after <= Instant::now() + Duration::from_secs(MAX_TOKEN_LIFETIME));
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
