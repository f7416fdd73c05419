//! The web page: browse the store and look after it, served by `serve` from the same index files
//! (docs/ui.md).
//!
//! Server-rendered HTML (maud: checked at compile time, escaped by default, no template files to
//! ship), one stylesheet and one small script embedded in the binary, pages that work without
//! JavaScript. Every page reads only index files, manifests and image configs, through caches;
//! layers are never read. Who sees a repository is the API's own rule
//! ([`CatalogView::of_visitor`]): anonymous visitors never learn that a private one exists.

mod assets;
mod facts;
mod pages;
mod summary;

use std::sync::Arc;
use std::time::Duration;

use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::auth::access::CatalogView;
use crate::auth::TokenIssuer;
use crate::federation::Federation;
use crate::reference::{Digest, RepoName};

pub use facts::Facts;
pub use summary::{
    Reclaim, Reclaimable, RepoSummary, Retention, RetentionDrop, RetentionPreview, StoreSummary,
    Summaries,
};

/// `[ui]` in the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UiConfig {
    /// Serve the page (default true).
    pub enabled: Option<bool>,
    /// Where the page lives (default `/`); e.g. `/ui/` to keep `/` free.
    pub prefix: Option<String>,
    /// Seconds between recomputations of the store summary (default 300).
    pub refresh: Option<u64>,
}

/// The page's state, shared by every serving thread.
pub struct Ui {
    /// Always starts and ends with `/`.
    prefix: String,
    pub summaries: Arc<Summaries>,
    facts: Facts,
    federation: Arc<Federation>,
    auth: Option<Arc<TokenIssuer>>,
}

impl Ui {
    /// The page from `[ui]`; `None` when disabled.
    pub fn new(
        c: &UiConfig,
        federation: Arc<Federation>,
        auth: Option<Arc<TokenIssuer>>,
        reclaim: Option<Reclaim>,
    ) -> anyhow::Result<Option<Self>> {
        if c.enabled == Some(false) {
            return Ok(None);
        }
        let raw = c.prefix.as_deref().unwrap_or("/");
        let prefix = format!("/{}/", raw.trim_matches('/')).replace("//", "/");
        anyhow::ensure!(
            prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b)),
            "[ui] prefix {raw:?}: use letters, digits, '-', '_', '.' and '/'"
        );
        for reserved in [
            "/v2/",
            "/v1/",
            "/_origin/",
            "/token/",
            "/healthz/",
            "/readyz/",
            "/metrics/",
        ] {
            anyhow::ensure!(
                !prefix.starts_with(reserved),
                "[ui] prefix {raw:?} is under {reserved}, which the registry answers"
            );
        }
        let store = federation.pick(None, None).store.clone();
        Ok(Some(Ui {
            prefix,
            summaries: Arc::new(Summaries::new(
                store.clone(),
                Duration::from_secs(c.refresh.unwrap_or(300).max(1)),
                reclaim,
            )),
            facts: Facts::new(store),
            federation,
            auth,
        }))
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether `path` is one of the page's. Only the page's own paths: anything else under the
    /// prefix stays the registry's plain JSON 404, so the page never answers for a stray
    /// `/blobs/…` or `/_catalog.json` a misconfigured client asks for.
    pub fn owns(&self, path: &str) -> bool {
        if path == self.prefix.trim_end_matches('/') && !path.is_empty() {
            return true;
        }
        let Some(rest) = path.strip_prefix(&self.prefix) else {
            return false;
        };
        matches!(rest, "" | "store" | "login")
            || rest.starts_with("r/")
            || rest.starts_with("assets/")
    }

    /// Answers a GET or HEAD under the prefix.
    pub async fn handle(&self, req: &Parts) -> Response {
        if req.method != Method::GET && req.method != Method::HEAD {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "the page is read-only\n");
        }
        let path = req.uri.path();
        let Some(rest) = path.strip_prefix(&self.prefix) else {
            // The prefix without its slash.
            return redirect(&self.prefix);
        };
        let authorization = req
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let view = CatalogView::of_visitor(self.auth.as_deref(), authorization);
        let query = Query::parse(req.uri.query());
        let host = req
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .filter(|h| {
                h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".:-[]".contains(&b))
            })
            .unwrap_or("registry.example");
        let ctx = pages::Ctx {
            prefix: &self.prefix,
            host,
            user: view.user(),
            private: self.auth.as_ref().is_some_and(|a| a.policy.has_private()),
        };
        let page = match rest {
            "" => {
                let summary = self.summaries.current();
                pages::catalog(&ctx, &summary, &view, &query)
            }
            "store" => {
                let summary = self.summaries.current();
                let health: Vec<(String, bool)> = self
                    .federation
                    .origins
                    .iter()
                    .map(|o| {
                        (
                            o.name.clone(),
                            o.healthy.load(std::sync::atomic::Ordering::Relaxed),
                        )
                    })
                    .collect();
                pages::store(&ctx, &summary, &view, &health)
            }
            "login" => {
                if view.user().is_some() {
                    return redirect(&self.prefix);
                }
                return login_challenge(&ctx);
            }
            _ if rest.starts_with("assets/") => return assets::serve(&rest["assets/".len()..]),
            _ if rest.starts_with("r/") => {
                match self.repository_page(&ctx, &view, &rest[2..]).await {
                    Some(p) => p,
                    None => return not_found(&ctx),
                }
            }
            _ => return not_found(&ctx),
        };
        html(StatusCode::OK, page)
    }

    /// `r/NAME` (a repository) or `r/NAME@DIGEST` (an image): `None` when it does not exist or
    /// the visitor may not see it (the same answer, so nothing leaks).
    async fn repository_page(
        &self,
        ctx: &pages::Ctx<'_>,
        view: &CatalogView,
        rest: &str,
    ) -> Option<maud::Markup> {
        let (name, digest) = match rest.split_once('@') {
            Some((n, d)) => (n, Some(Digest::parse(d).ok()?)),
            None => (rest, None),
        };
        let name = RepoName::parse(name).ok()?;
        if !view.lists(name.as_str()) {
            return None;
        }
        let origin = self.federation.pick(Some(&name), None);
        let crate::federation::cache::Cached::Found(idx) = origin
            .repos
            .get(&crate::layout::repo_index(&name))
            .await
            .ok()?
        else {
            return None;
        };
        match digest {
            None => {
                let tags = self.facts.of_tags(&idx).await;
                let summary = self.summaries.current();
                let retention: Option<Vec<&RetentionDrop>> = summary
                    .retention
                    .as_ref()
                    .map(|r| r.drops.iter().filter(|d| d.repository == name).collect());
                Some(pages::repository(ctx, &idx, &tags, retention.as_deref()))
            }
            Some(d) => {
                let entry = idx.manifests.get(&d)?;
                let image = self.facts.image(&d, &entry.media_type).await.ok()?;
                Some(pages::image(ctx, &idx, &d, &image))
            }
        }
    }
}

/// `q` (search) and `page` from the query string.
#[derive(Debug, Default)]
pub struct Query {
    pub q: String,
    pub page: usize,
}

impl Query {
    fn parse(query: Option<&str>) -> Query {
        let mut out = Query::default();
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match &*k {
                // Bounded: a search term is a repository-name fragment.
                "q" => out.q = v.chars().take(256).collect::<String>().to_lowercase(),
                "page" => out.page = v.parse().unwrap_or(0).min(1_000_000),
                _ => {}
            }
        }
        out
    }
}

/// Only the page's own stylesheet and script; nothing inline, no frames, no form posts.
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn secure(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    resp
}

fn html(status: StatusCode, page: maud::Markup) -> Response {
    let mut resp = (status, page.into_string()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // Pages depend on who is signed in.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    secure(resp)
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    secure((status, text).into_response())
}

fn redirect(to: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    secure(resp)
}

fn not_found(ctx: &pages::Ctx<'_>) -> Response {
    html(StatusCode::NOT_FOUND, pages::not_found(ctx))
}

/// 401 with a Basic challenge: the browser asks for the htpasswd user and password, then sends
/// them with every page below the prefix.
fn login_challenge(ctx: &pages::Ctx<'_>) -> Response {
    let mut resp = html(StatusCode::UNAUTHORIZED, pages::login(ctx));
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"static-registry\", charset=\"UTF-8\""),
    );
    resp
}

#[cfg(test)]
mod tests;
