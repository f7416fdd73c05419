//! The registry v1 read API (`/v1/…`), for Docker ≤ 17 daemons and other legacy clients.
//!
//! Same shape as `/v2/`: every answer is a local refusal or a 307 to a signed URL of a static
//! file `publish --v1` wrote (keys in `layout::v1`, see `docs/v1.md`); bytes never flow through
//! here. Repository routes are answered from the `v1` section of the cached repository index.
//! Image routes name no repository, so they go through the store-wide id table
//! (`v1/_images/<xx>.json`), which also says which layer blob `layer` redirects to. Anything
//! unknown or malformed gets a v1-style error (`{"error": "…"}`), never a redirect.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method as HttpMethod, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::auth::Access;
use crate::federation::cache::{CacheConfig, Cached, DocCache};
use crate::federation::Origin;
use crate::index::{RepoIndex, V1ImageShard, V1ShardEntry};
use crate::layout;
use crate::reference::{RepoName, Tag, V1ImageId};
use crate::sign::Method;

use super::v2::signed_redirect;
use super::AppState;

/// What `X-Docker-Registry-Version` says (the v1 ping answers the same).
const REGISTRY_VERSION: &str = concat!("static-registry/", env!("CARGO_PKG_VERSION"));

/// A parsed, validated `/v1/` request path.
#[derive(Debug, PartialEq, Eq)]
pub enum V1Route {
    /// `/v1/repositories/<name>/tags`
    Tags(RepoName),
    /// `/v1/repositories/<name>/tags/<tag>`
    Tag(RepoName, Tag),
    /// `/v1/repositories/<name>/images`
    Images(RepoName),
    /// `/v1/images/<id>/json|layer|ancestry`
    Image(V1ImageId, ImageFile),
}

/// Which file of a v1 image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFile {
    Json,
    Layer,
    Ancestry,
}

/// A v1-style refusal: a status and `{"error": message}` (what the v1 registry answered), never
/// with a `Location`.
#[derive(Debug, Clone)]
pub struct V1Error {
    pub status: StatusCode,
    pub message: String,
}

impl V1Error {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        V1Error {
            status,
            message: message.into(),
        }
    }
    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the registry's storage is unreachable; try again shortly",
        )
    }
}

impl IntoResponse for V1Error {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            axum::Json(serde_json::json!({ "error": self.message })),
        )
            .into_response();
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        resp
    }
}

impl V1Route {
    /// Parses a raw (still percent-encoded) path. `Ok(None)`: not a v1 API route.
    pub fn parse(path: &str) -> Result<Option<V1Route>, V1Error> {
        let Some(rest) = path.strip_prefix("/v1/") else {
            return Ok(None);
        };
        if let Some(rest) = rest.strip_prefix("images/") {
            let Some((id, file)) = rest.split_once('/') else {
                return Ok(None);
            };
            // The id first, so a malformed one is a 400 whatever follows it.
            let id = V1ImageId::parse(id).map_err(|e| V1Error::bad_request(e.to_string()))?;
            let file = match file {
                "json" => ImageFile::Json,
                "layer" => ImageFile::Layer,
                "ancestry" => ImageFile::Ancestry,
                _ => return Ok(None),
            };
            return Ok(Some(V1Route::Image(id, file)));
        }
        let Some(rest) = rest.strip_prefix("repositories/") else {
            return Ok(None);
        };
        // Names contain slashes (and may have a component called `tags`), so split from the right.
        if let Some(name) = rest.strip_suffix("/tags") {
            return Ok(Some(V1Route::Tags(name_of(name)?)));
        }
        if let Some(name) = rest.strip_suffix("/images") {
            return Ok(Some(V1Route::Images(name_of(name)?)));
        }
        let Some((head, tag)) = rest.rsplit_once('/') else {
            return Ok(None);
        };
        let Some(name) = head.strip_suffix("/tags") else {
            return Ok(None);
        };
        let name = name_of(name)?;
        let tag = Tag::parse(tag).map_err(|e| V1Error::bad_request(e.to_string()))?;
        Ok(Some(V1Route::Tag(name, tag)))
    }
}

fn name_of(s: &str) -> Result<RepoName, V1Error> {
    RepoName::parse(s).map_err(|e| V1Error::bad_request(e.to_string()))
}

/// The repositories a v1 name may mean, in order. The v1 registry filed single-component names
/// under `library/`, and Docker 1.x asks for `library/x` on some routes (`tags`) and plain `x` on
/// others (`images`), so `x` and `library/x` both mean `library/x`, falling back to a repository
/// published as plain `x` (what `publish --tag x:1` makes).
fn candidates(name: &RepoName) -> Vec<RepoName> {
    let s = name.as_str();
    let bare = match s.strip_prefix("library/") {
        Some(rest) if !rest.contains('/') => rest,
        _ if !s.contains('/') => s,
        _ => return vec![name.clone()],
    };
    [format!("library/{bare}"), bare.to_owned()]
        .iter()
        .filter_map(|n| RepoName::parse(n).ok())
        .collect()
}

/// Adds the headers every v1 answer carries: this is a standalone registry (no separate index
/// that would hand out tokens or endpoints).
fn v1_headers(h: &mut HeaderMap) {
    h.insert(
        "x-docker-registry-version",
        HeaderValue::from_static(REGISTRY_VERSION),
    );
    h.insert(
        "x-docker-registry-standalone",
        HeaderValue::from_static("true"),
    );
}

/// Answers one `/v1/` request (other than `/v1/_ping`).
pub async fn handle(state: &AppState, req: &Parts, peer: Option<SocketAddr>) -> Response {
    let method = req.method.clone();
    let mut resp = if method != HttpMethod::GET && method != HttpMethod::HEAD {
        V1Error::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "{method} is not supported: this registry is read-only; write images with `static-registry publish --v1`"
            ),
        )
        .into_response()
    } else {
        match V1Route::parse(req.uri.path()) {
            Ok(None) => V1Error::not_found("no such endpoint").into_response(),
            Err(e) => e.into_response(),
            Ok(Some(route)) => {
                match super::within(state.request_timeout, answer(state, req, peer, route)).await {
                    Some(Ok(r)) => r,
                    Some(Err(e)) => e.into_response(),
                    None => V1Error::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the request timed out; try again",
                    )
                    .into_response(),
                }
            }
        }
    };
    v1_headers(resp.headers_mut());
    resp
}

/// Per-request facts the handlers share.
struct Ctx<'a> {
    state: &'a AppState,
    region: Option<String>,
    head: bool,
    authorization: Option<&'a str>,
}

impl Ctx<'_> {
    fn origin(&self, name: Option<&RepoName>) -> &Arc<Origin> {
        self.state.federation.pick(name, self.region.as_deref())
    }

    /// The one access decision for `name` (v1 clients cannot get a token from `/token`, so in
    /// practice private repositories are denied).
    fn access(&self, name: &RepoName) -> Access {
        Access::of(self.state.auth.as_deref(), self.authorization, name)
    }
}

async fn answer(
    state: &AppState,
    req: &Parts,
    peer: Option<SocketAddr>,
    route: V1Route,
) -> Result<Response, V1Error> {
    let ctx = Ctx {
        state,
        region: state.federation.regions.region(&req.headers, peer),
        head: req.method == HttpMethod::HEAD,
        authorization: req
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    };
    match route {
        V1Route::Tags(name) => {
            let Readable { name, access, .. } = repo(&ctx, &name).await?;
            Ok(redirect(
                &ctx,
                &name,
                &access,
                &layout::v1::tags(&name),
                layout::JSON_CONTENT_TYPE,
                None,
            ))
        }
        V1Route::Images(name) => {
            let Readable { name, access, .. } = repo(&ctx, &name).await?;
            Ok(redirect(
                &ctx,
                &name,
                &access,
                &layout::v1::images(&name),
                layout::JSON_CONTENT_TYPE,
                None,
            ))
        }
        V1Route::Tag(name, tag) => {
            let Readable { name, access, idx } = repo(&ctx, &name).await?;
            if !idx.v1_tags().contains_key(&tag) {
                return Err(V1Error::not_found(format!("tag {tag} not found in {name}")));
            }
            Ok(redirect(
                &ctx,
                &name,
                &access,
                &layout::v1::tag(&name, &tag),
                layout::JSON_CONTENT_TYPE,
                None,
            ))
        }
        V1Route::Image(id, file) => {
            let (name, access, entry) = image(&ctx, &id).await?;
            let (key, content_type, size) = match file {
                ImageFile::Json => (
                    layout::v1::image_json(&id),
                    layout::JSON_CONTENT_TYPE,
                    Some(entry.image.size),
                ),
                ImageFile::Ancestry => (layout::v1::ancestry(&id), layout::JSON_CONTENT_TYPE, None),
                // The layer is the v2 blob itself: never stored twice.
                ImageFile::Layer => (
                    layout::blob(&entry.image.layer),
                    layout::BLOB_CONTENT_TYPE,
                    Some(entry.image.size),
                ),
            };
            Ok(redirect(&ctx, &name, &access, &key, content_type, size))
        }
    }
}

/// A repository this request may read, with the access decided for it and its index.
struct Readable {
    name: RepoName,
    access: Access,
    idx: Arc<RepoIndex>,
}

/// The repository a v1 name means and its index, when it has a v1 view this request may read.
async fn repo(ctx: &Ctx<'_>, asked: &RepoName) -> Result<Readable, V1Error> {
    for name in candidates(asked) {
        let access = ctx.access(&name);
        if !access.may_read() {
            return Err(V1Error::new(
                StatusCode::UNAUTHORIZED,
                format!("repository {name} is private; pull it with a registry v2 client"),
            ));
        }
        match ctx
            .origin(Some(&name))
            .repos
            .get(&layout::repo_index(&name))
            .await
        {
            Ok(Cached::Found(idx)) if idx.v1.is_some() => {
                return Ok(Readable { name, access, idx })
            }
            Ok(_) => {}
            Err(_) => return Err(V1Error::unavailable()),
        }
    }
    Err(V1Error::not_found(format!(
        "repository {asked} not found (or not published with --v1)"
    )))
}

/// Caches of the store-wide id table, one per origin. Origins are built by the federation, which
/// knows nothing of v1; the table is only needed here, so its caches live here, created on first
/// use and shared by all requests.
fn shard_cache(origin: &Origin) -> Arc<DocCache<V1ImageShard>> {
    static CACHES: OnceLock<Mutex<HashMap<String, Arc<DocCache<V1ImageShard>>>>> = OnceLock::new();
    let key = format!("{}\n{}", origin.name, origin.store.describe());
    let mut map = CACHES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    map.entry(key)
        .or_insert_with(|| {
            Arc::new(
                DocCache::new(origin.store.clone(), CacheConfig::default())
                    .with_health_flag(origin.healthy.clone()),
            )
        })
        .clone()
}

/// A v1 image by id, with a repository it may be served for (the one whose origin signs).
async fn image(ctx: &Ctx<'_>, id: &V1ImageId) -> Result<(RepoName, Access, V1ShardEntry), V1Error> {
    let unknown = || V1Error::not_found(format!("image {id} not found"));
    let cache = shard_cache(ctx.origin(None));
    let shard = match cache.get(&layout::v1::image_shard(id)).await {
        Ok(Cached::Found(s)) => s,
        Ok(Cached::Missing) => return Err(unknown()),
        Err(_) => return Err(V1Error::unavailable()),
    };
    let entry = shard.images.get(id).ok_or_else(unknown)?;
    // Private images stay hidden (404, not 401: ids are not names anyone should learn).
    let (name, access) = entry
        .repositories
        .iter()
        .map(|r| (r, ctx.access(r)))
        .find(|(_, a)| a.may_read())
        .ok_or_else(unknown)?;
    Ok((name.clone(), access, entry.clone()))
}

/// A 307 to the signed URL of `key` (signed for HEAD when the request is one, since a URL signed
/// for GET is refused on HEAD by S3), with `X-Docker-Size` when it is known.
fn redirect(
    ctx: &Ctx<'_>,
    name: &RepoName,
    access: &Access,
    key: &str,
    content_type: &str,
    size: Option<u64>,
) -> Response {
    let method = if ctx.head { Method::Head } else { Method::Get };
    let origin = ctx.origin(Some(name));
    let mut resp = signed_redirect(
        origin,
        method,
        key,
        content_type,
        access.url_ttl(ctx.state.url_ttl),
    );
    let h = resp.headers_mut();
    if let Some(size) = size {
        h.insert("x-docker-size", HeaderValue::from(size));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "55abd96a774e59f252ac2a84e55a09771bf9e0c50e361c5420e992559f7346c8";

    #[test]
    fn routes() {
        let n = |s: &str| RepoName::parse(s).unwrap();
        assert_eq!(
            V1Route::parse("/v1/repositories/a/b/tags").unwrap(),
            Some(V1Route::Tags(n("a/b")))
        );
        assert_eq!(
            V1Route::parse("/v1/repositories/a/tags/1.0").unwrap(),
            Some(V1Route::Tag(n("a"), Tag::parse("1.0").unwrap()))
        );
        // A repository may have a component called `tags`.
        assert_eq!(
            V1Route::parse("/v1/repositories/a/tags/tags").unwrap(),
            Some(V1Route::Tags(n("a/tags")))
        );
        assert_eq!(
            V1Route::parse("/v1/repositories/a/tags/images").unwrap(),
            Some(V1Route::Images(n("a/tags")))
        );
        assert_eq!(
            V1Route::parse("/v1/repositories/x/y/images").unwrap(),
            Some(V1Route::Images(n("x/y")))
        );
        for (file, want) in [
            ("json", ImageFile::Json),
            ("layer", ImageFile::Layer),
            ("ancestry", ImageFile::Ancestry),
        ] {
            assert_eq!(
                V1Route::parse(&format!("/v1/images/{ID}/{file}")).unwrap(),
                Some(V1Route::Image(V1ImageId::parse(ID).unwrap(), want))
            );
        }
        for none in [
            "/v1/",
            "/v1/search",
            "/v1/images/x",
            &format!("/v1/images/{ID}/checksum"),
            "/v1/repositories/a",
            "/v1/repositories/a/tags/1.0/json",
            "/v2/repositories/a/tags",
        ] {
            assert_eq!(V1Route::parse(none).unwrap(), None, "{none}");
        }
    }

    #[test]
    fn hostile_paths_are_400() {
        for bad in [
            "/v1/repositories/../etc/tags",
            "/v1/repositories/a/../../b/tags",
            "/v1/repositories/A/tags",
            "/v1/repositories//tags",
            "/v1/repositories/a%2f..%2fb/tags",
            "/v1/repositories/_x/images",
            "/v1/repositories/a/tags/..",
            "/v1/repositories/a/tags/%2e%2e",
            "/v1/repositories/a/tags/",
            &format!("/v1/images/{}/json", ID.to_uppercase()),
            &format!("/v1/images/{}/json", &ID[1..]),
            &format!("/v1/images/sha256:{ID}/layer"),
            "/v1/images/../../etc/passwd/json",
            "/v1/images/%2e%2e/json",
            "/v1/images//json",
        ] {
            let err = V1Route::parse(bad).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn library_namespace_first() {
        let names: Vec<String> = candidates(&RepoName::parse("hello").unwrap())
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(names, ["library/hello", "hello"]);
        let names: Vec<String> = candidates(&RepoName::parse("library/hello").unwrap())
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(names, ["library/hello", "hello"]);
        assert_eq!(
            candidates(&RepoName::parse("library/a/b").unwrap()).len(),
            1
        );
        let names = candidates(&RepoName::parse("a/b").unwrap());
        assert_eq!(names.len(), 1);
        // Too long once prefixed: only the name itself.
        let long = "a".repeat(250);
        assert_eq!(candidates(&RepoName::parse(&long).unwrap()).len(), 1);
    }
}
