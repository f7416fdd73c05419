//! The registry v2 read API: every answer is a local reply from the cached index or a 307 to a
//! signed URL; bytes never flow through here.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method as HttpMethod, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::auth::access::{self, Access, CatalogView};
use crate::index::{Catalog, ManifestEntry, RepoIndex};
use crate::layout;
use crate::reference::{Digest, ManifestRef, RepoName};
use crate::sign::{Method, SignRequest};

use crate::federation::mirror::{ns_of, Mapped, Mapping};
use crate::federation::Origin;

use super::error::OciError;
use super::recent_answers::Reuse;
use super::recent_urls::{self, UrlFor};
use super::route::V2Route;
use super::token::challenge;
use super::AppState;
use crate::federation::cache::Cached;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");

/// Answers a parsed `/v2/` read: decides access (the one [`Access`] decision per repository),
/// then answers from the cached index. Returns with the answer whether it may be re-used
/// ([`recent_answers`](super::recent_answers)).
pub async fn handle(
    state: &AppState,
    req: &Parts,
    route: V2Route,
    region: Option<&str>,
) -> (Response, Reuse) {
    let query = req.uri.query();
    let auth = state.auth.as_deref();
    let authorization = req
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let name = match &route {
        V2Route::Base => {
            // With private repositories, the root asks for a token so that clients learn
            // where `/token` is; otherwise it never challenges.
            if !access::may_enter(auth, authorization) {
                return (challenge(state, &req.headers, None), Reuse::Never);
            }
            let ok = (StatusCode::OK, axum::Json(serde_json::json!({}))).into_response();
            return (ok, Reuse::Never);
        }
        V2Route::Catalog => {
            // Lists what this client may see: no answer shared between clients.
            let view = CatalogView::of(auth, authorization);
            let ctx = Ctx {
                origin: state.federation.pick(None, region),
                url_ttl: state.url_ttl,
            };
            let answer = catalog(&ctx, query, &view).await;
            return (
                answer.unwrap_or_else(IntoResponse::into_response),
                Reuse::Never,
            );
        }
        V2Route::Tags(n)
        | V2Route::Manifest(n, _)
        | V2Route::Blob(n, _)
        | V2Route::Referrers(n, _) => n,
    };
    // Mirror namespaces (docs/mirror.md, "Mirror mode"): containerd's `?ns=`, a host path prefix
    // (podman, CRI-O) or a bare name Docker's registry-mirrors sends map to a store repository.
    let mapping = match &state.mirror {
        Some(m) => m.map(name, ns_of(query).as_deref()),
        None => Mapping::AsIs,
    };
    let answer = match &mapping {
        Mapping::AsIs => answer(state, req, &route, name, None, region).await,
        Mapping::Mirrored(m) => answer(state, req, &route, &m.store, Some(m), region).await,
        // The store's own repository of that name first: with it, nothing changes.
        Mapping::AsIsElse(m) => match answer(state, req, &route, name, None, region).await {
            Err(e) if e.code() == Some("NAME_UNKNOWN") => {
                answer(state, req, &route, &m.store, Some(m), region).await
            }
            other => other,
        },
        // An upstream this endpoint does not mirror: no other namespace may answer for it.
        Mapping::UnknownNamespace => Err(OciError::name_unknown(name.as_str()).into()),
    };
    match answer {
        Ok((resp, true)) => (resp, Reuse::ForSameRequest),
        Ok((resp, false)) => (resp, Reuse::Never),
        // An error may pass (a storage outage, a publish in flight, a mirror copy): never kept.
        Err(Answer::Challenge(resp)) => (resp, Reuse::Never),
        Err(Answer::Error(e)) => (e.into_response(), Reuse::Never),
    }
}

/// Why a repository's answer is not a plain success.
enum Answer {
    /// 401: the access decision wants a token.
    Challenge(Response),
    Error(OciError),
}

impl Answer {
    fn code(&self) -> Option<&'static str> {
        match self {
            Answer::Error(e) => Some(e.code),
            Answer::Challenge(_) => None,
        }
    }
}

impl From<OciError> for Answer {
    fn from(e: OciError) -> Self {
        Answer::Error(e)
    }
}

/// Answers a route on store repository `name` (the request's own, or the one a mirror
/// namespace maps it to): the access decision, then the handler, then mirror mode's bookkeeping.
/// Returns the answer and whether it may be re-used.
async fn answer(
    state: &AppState,
    req: &Parts,
    route: &V2Route,
    name: &RepoName,
    mirrored: Option<&Mapped>,
    region: Option<&str>,
) -> Result<(Response, bool), Answer> {
    let head = req.method == HttpMethod::HEAD;
    let query = req.uri.query();
    let authorization = req
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let access = Access::of(state.auth.as_deref(), authorization, name);
    if let Access::Denied { scope } = &access {
        return Err(Answer::Challenge(challenge(
            state,
            &req.headers,
            Some(scope),
        )));
    }
    let ctx = Ctx {
        origin: state.federation.pick(Some(name), region),
        url_ttl: access.url_ttl(state.url_ttl),
    };
    // Blob and manifest answers read neither the query nor any header; a public repository's
    // are the same for every client, so they may be re-used. Tags, catalog and referrers pages
    // read the query and are not hot enough to be worth keeping.
    let keepable = access == Access::Public;
    let answer = match route {
        V2Route::Manifest(_, r) => manifest(&ctx, head, name, r).await.map(|a| (a, keepable)),
        V2Route::Blob(_, d) => blob(&ctx, head, name, d).await.map(|a| (a, keepable)),
        V2Route::Tags(_) => tags(&ctx, name, query).await.map(|a| (a, false)),
        V2Route::Referrers(_, d) => referrers(&ctx, name, d, query).await.map(|a| (a, false)),
        V2Route::Base | V2Route::Catalog => unreachable!("answered before any repository"),
    };
    if let (Some(m), V2Route::Manifest(_, r)) = (mirrored, route) {
        // Only a 404 is a miss: an unreachable store (503) says nothing about the image.
        let hit = match &answer {
            Ok(_) => Some(true),
            Err(e) if matches!(e.code, "NAME_UNKNOWN" | "MANIFEST_UNKNOWN") => Some(false),
            Err(_) => None,
        };
        if let Some(hit) = hit {
            mirror_bookkeeping(state, &ctx, m, r, hit).await;
        }
    }
    answer.map_err(Answer::Error)
}

/// Mirror mode after a manifest answer: counts hits and misses, asks the copier to populate a
/// miss, and to re-resolve a tag the upstream last confirmed longer ago than its `tag_ttl` (the
/// tag is served meanwhile: the upstream may be down).
async fn mirror_bookkeeping(
    state: &AppState,
    ctx: &Ctx<'_>,
    m: &Mapped,
    r: &ManifestRef,
    hit: bool,
) {
    let result = if hit { "hit" } else { "miss" };
    metrics::counter!("static_registry_mirror_requests_total", "upstream" => m.upstream.host.clone(), "result" => result)
        .increment(1);
    let Some(fill) = state.mirror.as_ref().and_then(|x| x.fill.as_ref()) else {
        return;
    };
    if !hit {
        fill.missed(m, r);
        return;
    }
    let ManifestRef::Tag(t) = r else { return };
    // The index is cached: this reads no store object.
    if let Ok(idx) = repo(ctx, &m.store).await {
        if let Some(mt) = idx.mirrored.get(t) {
            let age = jiff::Timestamp::now()
                .as_second()
                .saturating_sub(mt.resolved);
            if age > i64::try_from(m.upstream.tag_ttl.as_secs()).unwrap_or(i64::MAX) {
                fill.stale(m, t);
            }
        }
    }
}

/// The origin chosen for this request, and how long its URLs live.
struct Ctx<'a> {
    origin: &'a Origin,
    url_ttl: std::time::Duration,
}

async fn repo(state: &Ctx<'_>, name: &RepoName) -> Result<Arc<RepoIndex>, OciError> {
    match state.origin.repos.get(&layout::repo_index(name)).await {
        Ok(Cached::Found(idx)) => Ok(idx),
        Ok(Cached::Missing) => Err(OciError::name_unknown(name.as_str())),
        Err(_) => Err(OciError::unavailable(
            "the registry's storage is unreachable; try again shortly",
        )),
    }
}

/// A 307 to the URL `origin` signs for `key`: the one place a redirect is signed, timed and logged
/// (v2 and v1 add their own headers to it).
pub(super) fn signed_redirect(
    origin: &Origin,
    method: Method,
    key: &str,
    content_type: &str,
    ttl: Duration,
) -> Response {
    let now = SystemTime::now();
    let second = super::unix_second(now);
    let wanted = UrlFor {
        origin: origin as *const Origin as usize,
        method,
        key,
        content_type,
        ttl,
    };
    let url = recent_urls::url(&wanted, second, || {
        let started = Instant::now();
        let url = origin.signer.sign(
            &SignRequest {
                method,
                key,
                content_type,
                ttl,
            },
            now,
        );
        super::metrics::record_sign(origin.signer.kind(), started.elapsed().as_secs_f64());
        url
    });
    // The key, never the URL: its query string is a credential.
    tracing::debug!(key, origin = %origin.name, "redirect");
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::TEMPORARY_REDIRECT;
    if let Some(v) = url {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// A GET redirect for `key`; content-addressed objects also name their digest.
fn redirect(state: &Ctx<'_>, key: &str, content_type: &str, digest: Option<&Digest>) -> Response {
    let mut resp = signed_redirect(state.origin, Method::Get, key, content_type, state.url_ttl);
    if let Some(v) = digest.and_then(|d| HeaderValue::from_str(d.as_str()).ok()) {
        resp.headers_mut().insert(DOCKER_CONTENT_DIGEST, v);
    }
    resp
}

fn local_head(content_type: &str, size: u64, digest: &Digest) -> Response {
    let mut resp = Response::new(Body::empty());
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    if let Ok(v) = HeaderValue::from_str(digest.as_str()) {
        h.insert(DOCKER_CONTENT_DIGEST, v);
    }
    resp
}

async fn manifest(
    state: &Ctx<'_>,
    head: bool,
    name: &RepoName,
    r: &ManifestRef,
) -> Result<Response, OciError> {
    let idx = repo(state, name).await?;
    // Borrowed from the cached index: nothing is copied per request.
    let (digest, media_type, size): (&Digest, &str, u64) = match r {
        ManifestRef::Tag(t) => {
            let d = idx
                .tags
                .get(t)
                .ok_or_else(|| OciError::manifest_unknown(format!("{name}:{t}")))?;
            (&d.digest, &d.media_type, d.size)
        }
        ManifestRef::Digest(d) => {
            let e: &ManifestEntry = idx
                .manifests
                .get(d)
                .ok_or_else(|| OciError::manifest_unknown(format!("{name}@{d}")))?;
            (d, &e.media_type, e.size)
        }
    };
    if head {
        return Ok(local_head(media_type, size, digest));
    }
    Ok(redirect(
        state,
        &layout::manifest(digest),
        media_type,
        Some(digest),
    ))
}

async fn blob(
    state: &Ctx<'_>,
    head: bool,
    name: &RepoName,
    d: &Digest,
) -> Result<Response, OciError> {
    let idx = repo(state, name).await?;
    if let Some(&size) = idx.blobs.get(d) {
        if head {
            return Ok(local_head(layout::BLOB_CONTENT_TYPE, size, d));
        }
        return Ok(redirect(
            state,
            &layout::blob(d),
            layout::BLOB_CONTENT_TYPE,
            Some(d),
        ));
    }
    // Manifests are content too; some clients fetch them through the blobs route.
    if let Some(m) = idx.manifests.get(d) {
        if head {
            return Ok(local_head(&m.media_type, m.size, d));
        }
        return Ok(redirect(
            state,
            &layout::manifest(d),
            &m.media_type,
            Some(d),
        ));
    }
    Err(OciError::blob_unknown(d))
}

/// `n` and `last` from a query string.
struct Page {
    n: Option<usize>,
    last: Option<String>,
}

impl Page {
    fn parse(query: Option<&str>) -> Result<Option<Page>, OciError> {
        let Some(q) = query else { return Ok(None) };
        let mut page = Page {
            n: None,
            last: None,
        };
        for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
            match &*k {
                "n" => {
                    page.n = Some(v.parse().map_err(|_| {
                        OciError::pagination_invalid(format!("n={v:?} is not a number"))
                    })?)
                }
                "last" => page.last = Some(v.into_owned()),
                _ => {}
            }
        }
        Ok((page.n.is_some() || page.last.is_some()).then_some(page))
    }

    /// The items after `last`, at most `n`, and the `last` of the next page if there is one.
    fn apply<'a>(&self, sorted: impl Iterator<Item = &'a str>) -> (Vec<String>, Option<String>) {
        let mut items = sorted.filter(|s| self.last.as_deref().is_none_or(|l| *s > l));
        let n = self.n.unwrap_or(usize::MAX);
        let page: Vec<String> = items.by_ref().take(n).map(str::to_owned).collect();
        let more = items.next().is_some();
        let next = (more && n > 0).then(|| page.last().cloned()).flatten();
        (page, next)
    }
}

fn paged(body: serde_json::Value, link: Option<String>) -> Response {
    let mut resp = axum::Json(body).into_response();
    if let Some(link) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
        resp.headers_mut().insert(header::LINK, link);
    }
    resp
}

fn query_value(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn tags(state: &Ctx<'_>, name: &RepoName, query: Option<&str>) -> Result<Response, OciError> {
    let idx = repo(state, name).await?;
    let Some(page) = Page::parse(query)? else {
        let key = layout::tags_list(name);
        return Ok(redirect(state, &key, layout::JSON_CONTENT_TYPE, None));
    };
    let (tags, next) = page.apply(idx.tags.keys().map(|t| t.as_str()));
    let link = next.map(|last| {
        format!(
            "</v2/{name}/tags/list?n={}&last={}>; rel=\"next\"",
            tags.len(),
            query_value(&last)
        )
    });
    Ok(paged(
        serde_json::json!({ "name": name, "tags": tags }),
        link,
    ))
}

async fn catalog(
    state: &Ctx<'_>,
    query: Option<&str>,
    view: &CatalogView,
) -> Result<Response, OciError> {
    let mut page = Page::parse(query)?;
    // The static file lists everything: a filtered catalog is answered here.
    if !view.lists_all() && page.is_none() {
        page = Some(Page {
            n: None,
            last: None,
        });
    }
    let doc = match state.origin.catalog.get(layout::CATALOG).await {
        Ok(Cached::Found(c)) => c,
        Ok(Cached::Missing) => Arc::new(Catalog::default()),
        Err(_) => {
            return Err(OciError::unavailable(
                "the registry's storage is unreachable",
            ))
        }
    };
    let Some(page) = page else {
        if doc.repositories.is_empty() {
            return Ok(paged(serde_json::json!({ "repositories": [] }), None));
        }
        return Ok(redirect(
            state,
            layout::CATALOG,
            layout::JSON_CONTENT_TYPE,
            None,
        ));
    };
    let (repos, next) = page.apply(
        doc.repositories
            .iter()
            .map(String::as_str)
            .filter(|r| view.lists(r)),
    );
    let link = next.map(|last| {
        format!(
            "</v2/_catalog?n={}&last={}>; rel=\"next\"",
            repos.len(),
            query_value(&last)
        )
    });
    Ok(paged(serde_json::json!({ "repositories": repos }), link))
}

async fn referrers(
    state: &Ctx<'_>,
    name: &RepoName,
    subject: &Digest,
    query: Option<&str>,
) -> Result<Response, OciError> {
    let idx = repo(state, name).await?;
    let artifact_type = query.and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "artifactType")
            .map(|(_, v)| v.into_owned())
    });
    let list = idx.referrers.get(subject);
    match (list, artifact_type) {
        (Some(_), None) => {
            let key = layout::referrers(name, subject);
            Ok(redirect(state, &key, OCI_INDEX, None))
        }
        (list, filter) => {
            let manifests: Vec<_> = list
                .into_iter()
                .flatten()
                .filter(|d| {
                    filter
                        .as_deref()
                        .is_none_or(|f| d.artifact_type.as_deref() == Some(f))
                })
                .collect();
            let body = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": manifests,
            });
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(OCI_INDEX));
            if filter.is_some() {
                headers.insert(
                    "oci-filters-applied",
                    HeaderValue::from_static("artifactType"),
                );
            }
            Ok((headers, body.to_string()).into_response())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagination() {
        let items = ["a", "b", "c", "d"];
        let p = Page {
            n: Some(2),
            last: None,
        };
        assert_eq!(
            p.apply(items.into_iter()),
            (vec!["a".into(), "b".into()], Some("b".into()))
        );
        let p = Page {
            n: Some(2),
            last: Some("b".into()),
        };
        assert_eq!(
            p.apply(items.into_iter()),
            (vec!["c".into(), "d".into()], None)
        );
        let p = Page {
            n: None,
            last: Some("c".into()),
        };
        assert_eq!(p.apply(items.into_iter()), (vec!["d".into()], None));
        let p = Page {
            n: Some(0),
            last: None,
        };
        assert_eq!(p.apply(items.into_iter()), (vec![], None));
        assert!(Page::parse(Some("n=x")).is_err());
        assert!(Page::parse(Some("foo=1")).unwrap().is_none());
    }
}
