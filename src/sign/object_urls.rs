//! How every CDN signer joins a base URL, a prefix and an object key ([`ObjectUrls`]), and reads
//! its key material ([`load_secret`]): shared by the public, CloudFront, secure_link and
//! hmac-token signers, so none of them depends on another.

use std::fmt;
use std::path::Path;

use anyhow::{bail, Context};

/// How a CDN base URL, an optional prefix and an object key are joined into a URL.
///
/// Exists so every signer joins the same way: exactly one `/` between the parts (no `//`, which
/// many origins treat as a different object), and the key percent-encoded per RFC 3986 wherever a
/// byte is not unreserved or `/`. Keys from [`crate::layout`] only use `[A-Za-z0-9._/-]`, so in
/// practice the key is copied verbatim; the encoder is a safety net, not a feature.
#[derive(Clone)]
pub struct ObjectUrls {
    /// `scheme://host[:port]`, lower-cased by the URL parser.
    origin: String,
    /// Always starts and ends with `/`: the base URL's path, then the prefix.
    path_prefix: String,
}

impl fmt::Debug for ObjectUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.origin, self.path_prefix)
    }
}

impl ObjectUrls {
    /// Validates `base_url` (absolute http(s), no credentials, query or fragment) and `prefix`
    /// (path segments of unreserved characters; `.` and `..` are refused).
    pub fn new(base_url: &str, prefix: &str) -> anyhow::Result<Self> {
        let url = url::Url::parse(base_url)
            .with_context(|| format!("base_url {base_url:?} is not an absolute URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            bail!("base_url {base_url:?} must be http:// or https://");
        }
        if !url.username().is_empty() || url.password().is_some() {
            bail!("base_url must not carry credentials");
        }
        if url.query().is_some() || url.fragment().is_some() {
            bail!("base_url {base_url:?} must not have a query or a fragment");
        }
        let Some(host) = url.host_str() else {
            bail!("base_url {base_url:?} has no host");
        };
        let mut origin = format!("{}://{host}", url.scheme());
        if let Some(port) = url.port() {
            origin.push_str(&format!(":{port}"));
        }
        let mut path_prefix = String::from("/");
        for seg in url.path().split('/').chain(prefix.split('/')) {
            if seg.is_empty() {
                continue;
            }
            // The URL parser has already percent-encoded the base path; `%` is kept as is there.
            // Signers that hash the path (secure_link, hmac-token) need encoded == decoded, so
            // anything outside the unreserved set is refused rather than silently re-encoded.
            if seg == "."
                || seg == ".."
                || !super::encode::is_unchanged(seg, super::encode::QUERY_VALUE)
            {
                bail!(
                    "path segment {seg:?} of base_url/prefix must use only A-Z a-z 0-9 - . _ ~ \
                     (and not be . or ..)"
                );
            }
            path_prefix.push_str(seg);
            path_prefix.push('/');
        }
        Ok(ObjectUrls {
            origin,
            path_prefix,
        })
    }

    /// `scheme://host[:port]`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The path every object URL starts with; begins and ends with `/`.
    pub fn path_prefix(&self) -> &str {
        &self.path_prefix
    }

    /// An upper bound of the length of `push_url(key)`, for `String::with_capacity`.
    pub fn url_len(&self, key: &str) -> usize {
        self.origin.len() + self.path_prefix.len() + key.len()
    }

    /// Appends the URL path of `key` (`/prefix/key`, percent-encoded where needed).
    pub fn push_path(&self, out: &mut String, key: &str) {
        out.push_str(&self.path_prefix);
        super::encode::push(out, key.trim_start_matches('/'), super::encode::PATH);
    }

    /// Appends the absolute URL of `key`, without a query.
    pub fn push_url(&self, out: &mut String, key: &str) {
        out.push_str(&self.origin);
        self.push_path(out, key);
    }

    /// The URL path of `key`.
    pub fn path(&self, key: &str) -> String {
        let mut p = String::with_capacity(self.path_prefix.len() + key.len());
        self.push_path(&mut p, key);
        p
    }
}

/// Reads key material named in the config: a file (one trailing newline is dropped) or an
/// environment variable, exactly one of the two. Errors name the source, never the content.
pub fn load_secret(file: Option<&Path>, env: Option<&str>, what: &str) -> anyhow::Result<String> {
    let text = match (file, env) {
        (Some(path), None) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the {what} from {}", path.display()))?,
        (None, Some(var)) => std::env::var(var)
            .with_context(|| format!("environment variable {var} (the {what}) is not set"))?,
        (Some(_), Some(_)) => {
            bail!("give the {what} as a file or an environment variable, not both")
        }
        (None, None) => bail!("the {what} is missing: name a file or an environment variable"),
    };
    let text = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text)
        .to_owned();
    if text.is_empty() {
        bail!("the {what} is empty");
    }
    Ok(text)
}
