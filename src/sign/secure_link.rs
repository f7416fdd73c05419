//! nginx `secure_link_md5` URLs: the cheapest self-hosted signed CDN edge.
//!
//! An nginx cache (or any edge that implements the same check) in front of the store validates
//! each URL with one MD5, so the endpoint can hand out short-lived links to a plain file or
//! proxy-cache server. The matching nginx configuration, with the defaults of this module:
//!
//! ```nginx
//! location / {
//!     secure_link $arg_md5,$arg_expires;
//!     secure_link_md5 "$secure_link_expires$uri SECRET";
//!     if ($secure_link = "")  { return 403; }   # missing or wrong hash
//!     if ($secure_link = "0") { return 410; }   # expired
//!     # ... root / proxy_pass to the store
//! }
//! ```
//!
//! The URL is `<base_url>/<prefix>/<key>?md5=<hash>&expires=<unix secs>`, where `<hash>` is the
//! MD5 of the [template](SecureLinkConfig::template) with `$secure_link_expires` replaced by the
//! expiry, `$uri` by the URL path (everything after the host, starting with `/`, including the
//! base URL's path and the prefix: what nginx's `$uri` will be), and `SECRET` by the secret;
//! encoded as nginx expects, i.e. `openssl md5 -binary | openssl base64 | tr +/ -_ | tr -d =`.
//!
//! Client-IP binding (`$remote_addr` in the template) is not supported and is refused: the client
//! that fetches the URL is not the one that asked this endpoint for it (it follows a redirect,
//! possibly through proxies), and the endpoint cannot know the address the edge will see.
//!
//! # Content types
//!
//! Every registry client needs a manifest's exact media type as `Content-Type`, and an nginx that
//! serves the store's files cannot know it from the key (`manifests/sha256/<hex>`). With
//! [`content_type_param`](SecureLinkConfig::content_type_param) set (e.g. `ct`), the URL carries
//! the type the endpoint wants answered, and the template must cover it so nobody can change it:
//!
//! ```nginx
//! location / {
//!     secure_link $arg_md5,$arg_expires;
//!     secure_link_md5 "$secure_link_expires$uri$arg_ct SECRET";
//!     if ($secure_link = "")  { return 403; }
//!     if ($secure_link = "0") { return 410; }
//!     types { }
//!     default_type "";                    # no Content-Type of nginx's own ...
//!     add_header Content-Type $arg_ct;    # ... only the signed one
//! }
//! ```
//!
//! The URL is then `...?md5=<hash>&expires=<unix secs>&ct=<type>` and the hash covers `<type>`
//! exactly as it appears in the URL (nginx's `$arg_ct` is not percent-decoded). Bytes of the type
//! other than `A-Z a-z 0-9 - . _ ~ / +` are percent-encoded, so media types without parameters
//! (every manifest and index type) appear verbatim. A proxying edge whose store keeps the right
//! `Content-Type` per object (S3, GCS: `publish` sets it) does not need this.

use std::fmt;
use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::bail;
use base64::Engine;
use md5::{Digest, Md5};
use serde::Deserialize;

use super::object_urls::{load_secret, ObjectUrls};
use super::{encode, unix_secs, SignRequest, Signer};

/// The template nginx's documentation uses, with `SECRET` for the secret.
pub const DEFAULT_TEMPLATE: &str = "$secure_link_expires$uri SECRET";

/// The `[origin]` settings of an nginx `secure_link` edge.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecureLinkConfig {
    /// The edge's URL, e.g. `https://edge.example.com`.
    pub base_url: String,
    /// Path inside the edge under which the layout lives. Default: none.
    #[serde(default)]
    pub prefix: String,
    /// A file holding the secret (one trailing newline is ignored).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Or: an environment variable holding it.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// The `secure_link_md5` expression with the secret written as `SECRET`. It must contain
    /// `$secure_link_expires`, `$uri` and `SECRET` (`${name}` also works for variables).
    /// Default: `$secure_link_expires$uri SECRET`.
    #[serde(default = "default_template")]
    pub template: String,
    /// Query parameter carrying the hash (`secure_link $arg_md5,...`). Default: `md5`.
    #[serde(default = "default_md5_param")]
    pub md5_param: String,
    /// Query parameter carrying the expiry (`secure_link ...,$arg_expires`). Default: `expires`.
    #[serde(default = "default_expires_param")]
    pub expires_param: String,
    /// Query parameter carrying the `Content-Type` the edge should answer with (e.g. `ct`), for
    /// an nginx that serves files and so cannot know a manifest's media type. The template must
    /// then contain `$arg_<name>` (e.g. `$secure_link_expires$uri$arg_ct SECRET`), so the type is
    /// covered by the hash. Default: none (no parameter).
    #[serde(default)]
    pub content_type_param: Option<String>,
}

fn default_template() -> String {
    DEFAULT_TEMPLATE.to_owned()
}
fn default_md5_param() -> String {
    "md5".to_owned()
}
fn default_expires_param() -> String {
    "expires".to_owned()
}

/// One piece of the parsed template.
#[derive(Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Expires,
    Uri,
    Secret,
    /// `$arg_<content_type_param>`: the content-type parameter's value as it appears in the URL.
    ContentType,
}

/// Splits a `secure_link_md5` expression into literals and the supported substitutions
/// (`$arg_<ct_param>` only when a content-type parameter is configured).
fn parse_template(template: &str, ct_param: Option<&str>) -> anyhow::Result<Vec<Part>> {
    let mut parts = Vec::new();
    let mut lit = String::new();
    let mut rest = template;
    while let Some(c) = rest.chars().next() {
        if let Some(r) = rest.strip_prefix("SECRET") {
            parts.push(Part::Literal(std::mem::take(&mut lit)));
            parts.push(Part::Secret);
            rest = r;
            continue;
        }
        if c != '$' {
            lit.push(c);
            rest = &rest[c.len_utf8()..];
            continue;
        }
        let after = &rest[1..];
        let (name, r) = if let Some(braced) = after.strip_prefix('{') {
            let Some(end) = braced.find('}') else {
                bail!("template: unterminated ${{ in {template:?}");
            };
            (&braced[..end], &braced[end + 1..])
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        parts.push(Part::Literal(std::mem::take(&mut lit)));
        let is_ct = |n: &str| ct_param.is_some_and(|p| n.strip_prefix("arg_") == Some(p));
        parts.push(match name {
            "secure_link_expires" => Part::Expires,
            "uri" => Part::Uri,
            n if is_ct(n) => Part::ContentType,
            "remote_addr"
            | "binary_remote_addr"
            | "http_x_forwarded_for"
            | "realip_remote_addr" => {
                bail!(
                    "template: ${name} (client-IP binding) is not supported: the client that \
                     follows the redirect is not the one the endpoint saw"
                )
            }
            "" => bail!("template: a lone $ in {template:?}"),
            other => bail!(
                "template: ${other} is not supported (only $secure_link_expires, $uri, SECRET and \
                 $arg_<content_type_param>)"
            ),
        });
        rest = r;
    }
    parts.push(Part::Literal(lit));
    parts.retain(|p| *p != Part::Literal(String::new()));
    for (needed, what) in [
        (
            Part::Expires,
            "$secure_link_expires (else links never expire)",
        ),
        (Part::Uri, "$uri (else one link opens every object)"),
        (Part::Secret, "SECRET (else anybody can make links)"),
    ] {
        if !parts.contains(&needed) {
            bail!("template {template:?} must contain {what}");
        }
    }
    if let Some(p) = ct_param {
        if !parts.contains(&Part::ContentType) {
            bail!(
                "template {template:?} must contain $arg_{p} when content_type_param = {p:?} \
                 (else anybody holding a link can change the Content-Type it is answered with)"
            );
        }
    }
    Ok(parts)
}

/// Signs URLs for an nginx `secure_link` edge (one MD5 per URL).
///
/// Exists so a self-hosted cache can front the store with expiring links and no extra software.
pub struct SecureLinkSigner {
    urls: ObjectUrls,
    secret: String,
    parts: Vec<Part>,
    md5_param: String,
    expires_param: String,
    content_type_param: Option<String>,
}

impl fmt::Debug for SecureLinkSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        f.debug_struct("SecureLinkSigner")
            .field("urls", &self.urls)
            .field("md5_param", &self.md5_param)
            .field("expires_param", &self.expires_param)
            .field("content_type_param", &self.content_type_param)
            .finish_non_exhaustive()
    }
}

/// nginx `$arg_<name>` names: letters, digits and `_`.
fn check_param(name: &str, what: &str) -> anyhow::Result<()> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        bail!("{what} {name:?} must be letters, digits and _ (an nginx $arg_ name)");
    }
    Ok(())
}

impl SecureLinkSigner {
    /// Builds the signer, reading the secret from the file or variable the config names.
    pub fn from_config(cfg: &SecureLinkConfig) -> anyhow::Result<Self> {
        let secret = load_secret(
            cfg.secret_file.as_deref(),
            cfg.secret_env.as_deref(),
            "secure_link secret",
        )?;
        Self::with_secret(cfg, secret)
    }

    /// Builds the signer with the secret given directly (the config's secret source is ignored).
    pub fn with_secret(cfg: &SecureLinkConfig, secret: String) -> anyhow::Result<Self> {
        check_param(&cfg.md5_param, "md5_param")?;
        check_param(&cfg.expires_param, "expires_param")?;
        if cfg.md5_param == cfg.expires_param {
            bail!("md5_param and expires_param must differ");
        }
        if let Some(ct) = &cfg.content_type_param {
            check_param(ct, "content_type_param")?;
            if *ct == cfg.md5_param || *ct == cfg.expires_param {
                bail!("content_type_param must differ from md5_param and expires_param");
            }
        }
        if secret.is_empty() {
            bail!("the secure_link secret is empty");
        }
        Ok(SecureLinkSigner {
            urls: ObjectUrls::new(&cfg.base_url, &cfg.prefix)?,
            secret,
            parts: parse_template(&cfg.template, cfg.content_type_param.as_deref())?,
            md5_param: cfg.md5_param.clone(),
            expires_param: cfg.expires_param.clone(),
            content_type_param: cfg.content_type_param.clone(),
        })
    }

    /// The `md5` value for a URL path, expiry and (encoded) content-type parameter.
    fn hash(&self, path: &str, expires: &str, content_type: &str) -> String {
        let mut md5 = Md5::new();
        for part in &self.parts {
            md5.update(match part {
                Part::Literal(s) => s.as_bytes(),
                Part::Expires => expires.as_bytes(),
                Part::Uri => path.as_bytes(),
                Part::Secret => self.secret.as_bytes(),
                Part::ContentType => content_type.as_bytes(),
            });
        }
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(md5.finalize())
    }
}

impl Signer for SecureLinkSigner {
    fn kind(&self) -> &'static str {
        "secure-link"
    }

    fn sign(&self, req: &SignRequest<'_>, now: SystemTime) -> String {
        let expires = unix_secs(now).saturating_add(req.ttl.as_secs()).to_string();
        let mut url = String::with_capacity(self.urls.url_len(req.key) + 64);
        url.push_str(self.urls.origin());
        let path_start = url.len();
        self.urls.push_path(&mut url, req.key);
        // Layout keys never need percent-encoding, so this path is also nginx's decoded `$uri`.
        let content_type = match self.content_type_param {
            Some(_) => {
                let mut v = String::with_capacity(req.content_type.len());
                encode::push(&mut v, req.content_type, encode::MEDIA_TYPE);
                v
            }
            None => String::new(),
        };
        let hash = self.hash(&url[path_start..], &expires, &content_type);
        for (sep, name, value) in [
            ('?', &self.md5_param, &hash),
            ('&', &self.expires_param, &expires),
        ] {
            url.push(sep);
            url.push_str(name);
            url.push('=');
            url.push_str(value);
        }
        if let Some(name) = &self.content_type_param {
            url.push('&');
            url.push_str(name);
            url.push('=');
            url.push_str(&content_type);
        }
        url
    }
}

/// An nginx `secure_link` signer for `https://edge.test` with the default template, for tests
/// elsewhere in the crate (the request table, the page).
#[cfg(test)]
pub(crate) fn test_signer() -> SecureLinkSigner {
    SecureLinkSigner::with_secret(
        &SecureLinkConfig {
            base_url: "https://edge.test".into(),
            prefix: String::new(),
            secret_file: None,
            secret_env: None,
            template: DEFAULT_TEMPLATE.into(),
            md5_param: "md5".into(),
            expires_param: "expires".into(),
            content_type_param: None,
        },
        "secret".into(),
    )
    .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::Method;
    use std::time::Duration;

    fn cfg() -> SecureLinkConfig {
        toml::from_str(
            "base_url = \"https://edge.example.com/\"\nprefix = \"/reg/\"\nsecret_env = \"X\"\n",
        )
        .unwrap()
    }

    fn signer(cfg: &SecureLinkConfig) -> SecureLinkSigner {
        SecureLinkSigner::with_secret(cfg, "s3cr3t".into()).unwrap()
    }

    fn req(key: &str) -> SignRequest<'_> {
        SignRequest {
            method: Method::Get,
            key,
            content_type: "application/octet-stream",
            ttl: Duration::from_secs(60),
        }
    }

    const T: u64 = 1_700_000_000;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(T)
    }

    #[test]
    fn known_answer() {
        // Independently: python3 -c 'import hashlib,base64;
        //   print(base64.urlsafe_b64encode(hashlib.md5(b"1700000060/reg/blobs/sha256/ab s3cr3t")
        //   .digest()).rstrip(b"=").decode())'
        let url = signer(&cfg()).sign(&req("blobs/sha256/ab"), now());
        assert_eq!(
            url,
            "https://edge.example.com/reg/blobs/sha256/ab?md5=YA5FBbRewV7FH4RawtQMMg&expires=1700000060"
        );
    }

    /// The exact pipeline nginx's documentation gives, run by a shell.
    fn openssl_md5(input: &str) -> String {
        let out = std::process::Command::new("sh")
            .args([
                "-c",
                "printf '%s' \"$1\" | openssl md5 -binary | openssl base64 | tr +/ -_ | tr -d =",
                "sh",
                input,
            ])
            .output()
            .expect("sh and openssl are needed for this test");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn param<'a>(url: &'a str, name: &str) -> &'a str {
        let q = url.split_once('?').unwrap().1;
        q.split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap()
    }

    #[test]
    fn agrees_with_openssl_pipeline() {
        let s = signer(&cfg());
        for key in [
            "blobs/sha256/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "manifests/sha256/ff",
            "repositories/library/alpine/_tags.json",
            "_catalog.json",
        ] {
            let url = s.sign(&req(key), now());
            let want = openssl_md5(&format!("1700000060/reg/{key} s3cr3t"));
            assert_eq!(param(&url, "md5"), want, "{key}");
            assert_eq!(param(&url, "expires"), "1700000060");
        }
    }

    #[test]
    fn custom_template_and_params() {
        let mut c = cfg();
        c.template = "SECRET:${uri}:$secure_link_expires".into();
        c.md5_param = "h".into();
        c.expires_param = "e".into();
        let url = signer(&c).sign(&req("blobs/sha256/ab"), now());
        let want = openssl_md5("s3cr3t:/reg/blobs/sha256/ab:1700000060");
        assert_eq!(
            url,
            format!("https://edge.example.com/reg/blobs/sha256/ab?h={want}&e=1700000060")
        );
    }

    #[test]
    fn tampering_changes_the_hash() {
        let s = signer(&cfg());
        let base = param(&s.sign(&req("blobs/sha256/ab"), now()), "md5").to_owned();
        let other_key = s.sign(&req("blobs/sha256/ac"), now());
        let later = s.sign(&req("blobs/sha256/ab"), now() + Duration::from_secs(1));
        let other_secret = SecureLinkSigner::with_secret(&cfg(), "s3cr3u".into())
            .unwrap()
            .sign(&req("blobs/sha256/ab"), now());
        for url in [other_key, later, other_secret] {
            assert_ne!(param(&url, "md5"), base);
        }
        // What nginx recomputes for a tampered URL does not match the hash it carries.
        assert_ne!(openssl_md5("1700000061/reg/blobs/sha256/ab s3cr3t"), base);
        assert_ne!(openssl_md5("1700000060/reg/blobs/sha256/ac s3cr3t"), base);
    }

    #[test]
    fn template_errors() {
        for (t, needle) in [
            ("$secure_link_expires$uri$remote_addr SECRET", "client-IP"),
            ("$uri SECRET", "$secure_link_expires"),
            ("$secure_link_expires SECRET", "$uri"),
            ("$secure_link_expires$uri secret", "SECRET"),
            ("$secure_link_expires$uri$arg_x SECRET", "$arg_x"),
            ("$secure_link_expires${uri SECRET", "unterminated"),
            ("$ $secure_link_expires$uri SECRET", "lone"),
        ] {
            let err = parse_template(t, None).unwrap_err().to_string();
            assert!(err.contains(needle), "{t}: {err}");
        }
        assert_eq!(
            parse_template(DEFAULT_TEMPLATE, None).unwrap(),
            [
                Part::Expires,
                Part::Uri,
                Part::Literal(" ".into()),
                Part::Secret
            ]
        );
        let mut c = cfg();
        c.md5_param = "a-b".into();
        assert!(SecureLinkSigner::with_secret(&c, "x".into()).is_err());
        let mut c = cfg();
        c.expires_param = "md5".into();
        assert!(SecureLinkSigner::with_secret(&c, "x".into()).is_err());
    }

    #[test]
    fn content_type_param_is_signed_and_sent() {
        let mut c = cfg();
        c.template = "$secure_link_expires$uri$arg_ct SECRET".into();
        c.content_type_param = Some("ct".into());
        let s = signer(&c);
        let mt = "application/vnd.oci.image.manifest.v1+json";
        let r = SignRequest {
            content_type: mt,
            ..req("manifests/sha256/ab")
        };
        let url = s.sign(&r, now());
        let want = openssl_md5(&format!("1700000060/reg/manifests/sha256/ab{mt} s3cr3t"));
        assert_eq!(
            url,
            format!(
                "https://edge.example.com/reg/manifests/sha256/ab?md5={want}&expires=1700000060&ct={mt}"
            )
        );
        // Another type is another hash (nobody can swap it), and what is hashed is the value
        // exactly as sent: bytes outside the safe set are percent-encoded in both.
        let other = s.sign(
            &SignRequest {
                content_type: "text/html; charset=utf-8",
                ..r
            },
            now(),
        );
        assert_eq!(param(&other, "ct"), "text/html%3B%20charset%3Dutf-8");
        assert_eq!(
            param(&other, "md5"),
            openssl_md5("1700000060/reg/manifests/sha256/abtext/html%3B%20charset%3Dutf-8 s3cr3t")
        );
        // Braced form, custom name.
        c.template = "$secure_link_expires$uri${arg_type} SECRET".into();
        c.content_type_param = Some("type".into());
        assert_eq!(param(&signer(&c).sign(&r, now()), "md5"), want);
        // Without the option, no parameter and the old hash.
        assert!(!signer(&cfg()).sign(&r, now()).contains("ct="));
        // Configured but not covered by the template, or clashing with another parameter.
        let mut c = cfg();
        c.content_type_param = Some("ct".into());
        let err = SecureLinkSigner::with_secret(&c, "x".into())
            .unwrap_err()
            .to_string();
        assert!(err.contains("$arg_ct"), "{err}");
        c.template = "$secure_link_expires$uri$arg_ct SECRET".into();
        c.content_type_param = Some("md5".into());
        assert!(SecureLinkSigner::with_secret(&c, "x".into()).is_err());
        c.content_type_param = Some("c-t".into());
        assert!(SecureLinkSigner::with_secret(&c, "x".into()).is_err());
    }

    #[test]
    fn debug_hides_secret_and_config_defaults() {
        let c = cfg();
        assert_eq!(c.template, DEFAULT_TEMPLATE);
        assert_eq!(
            (c.md5_param.as_str(), c.expires_param.as_str()),
            ("md5", "expires")
        );
        assert_eq!(c.content_type_param, None);
        assert!(
            toml::from_str::<SecureLinkConfig>("base_url = \"https://x\"\nsecret = \"x\"\n")
                .is_err()
        );
        let s = signer(&c);
        assert!(!format!("{s:?}").contains("s3cr3t"));
    }
}
