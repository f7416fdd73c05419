//! Parsing `/v2/...` paths into typed routes.
//!
//! Repository names contain slashes, so the router cannot match them with path parameters; this
//! splits the raw (still percent-encoded) path from the right and validates every piece with
//! [`crate::reference`]. Anything that fails becomes an [`OciError`], never a redirect.

use crate::reference::{Digest, ManifestRef, RepoName};

use super::error::OciError;

/// A parsed, validated `/v2/` request path.
#[derive(Debug, PartialEq, Eq)]
pub enum V2Route {
    Base,
    Catalog,
    Tags(RepoName),
    Manifest(RepoName, ManifestRef),
    Blob(RepoName, Digest),
    Referrers(RepoName, Digest),
}

impl V2Route {
    /// Parses the path after `/v2`. Returns `Ok(None)` for paths that are not registry API routes.
    pub fn parse(path: &str) -> Result<Option<V2Route>, OciError> {
        let Some(rest) = path.strip_prefix("/v2") else {
            return Ok(None);
        };
        if rest.is_empty() || rest == "/" {
            return Ok(Some(V2Route::Base));
        }
        let Some(rest) = rest.strip_prefix('/') else {
            return Ok(None);
        };
        if rest == "_catalog" {
            return Ok(Some(V2Route::Catalog));
        }
        if let Some(name) = rest.strip_suffix("/tags/list") {
            return Ok(Some(V2Route::Tags(name_of(name)?)));
        }
        let Some((head, reference)) = rest.rsplit_once('/') else {
            return Ok(None);
        };
        let Some((name, kind)) = head.rsplit_once('/') else {
            return Ok(None);
        };
        let route = match kind {
            "manifests" => {
                let name = name_of(name)?;
                // A reference that is neither a tag nor a digest names no manifest: 404
                // MANIFEST_UNKNOWN, as distribution answers and the OCI conformance suite
                // requires (it asks for `.INVALID_MANIFEST_NAME`).
                let r = ManifestRef::parse(reference)
                    .map_err(|e| OciError::manifest_unknown(format!("{name}: {e}")))?;
                V2Route::Manifest(name, r)
            }
            "blobs" => V2Route::Blob(name_of(name)?, digest_of(reference)?),
            "referrers" => V2Route::Referrers(name_of(name)?, digest_of(reference)?),
            _ => return Ok(None),
        };
        Ok(Some(route))
    }
}

fn name_of(s: &str) -> Result<RepoName, OciError> {
    RepoName::parse(s).map_err(|e| OciError::name_invalid(e.to_string()))
}

fn digest_of(s: &str) -> Result<Digest, OciError> {
    Digest::parse(s).map_err(|e| OciError::digest_invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn routes() {
        assert_eq!(V2Route::parse("/v2/").unwrap(), Some(V2Route::Base));
        assert_eq!(V2Route::parse("/v2").unwrap(), Some(V2Route::Base));
        assert_eq!(
            V2Route::parse("/v2/_catalog").unwrap(),
            Some(V2Route::Catalog)
        );
        assert!(matches!(
            V2Route::parse("/v2/a/b/tags/list").unwrap(),
            Some(V2Route::Tags(n)) if n.as_str() == "a/b"
        ));
        // A repository may itself be called "manifests".
        assert!(matches!(
            V2Route::parse("/v2/x/manifests/manifests/latest").unwrap(),
            Some(V2Route::Manifest(n, ManifestRef::Tag(_))) if n.as_str() == "x/manifests"
        ));
        assert!(matches!(
            V2Route::parse(&format!("/v2/a/blobs/{D}")).unwrap(),
            Some(V2Route::Blob(..))
        ));
        assert!(matches!(
            V2Route::parse(&format!("/v2/a/referrers/{D}")).unwrap(),
            Some(V2Route::Referrers(..))
        ));
        assert_eq!(V2Route::parse("/v2/a/other/x").unwrap(), None);
        assert_eq!(V2Route::parse("/v1/_ping").unwrap(), None);
        assert_eq!(V2Route::parse("/v2x").unwrap(), None);
    }

    #[test]
    fn hostile_paths() {
        let cases: &[(&str, &str)] = &[
            ("/v2/../etc/manifests/latest", "NAME_INVALID"),
            ("/v2/a%2f..%2fb/manifests/latest", "NAME_INVALID"),
            ("/v2/A/manifests/latest", "NAME_INVALID"),
            ("/v2//manifests/latest", "NAME_INVALID"),
            ("/v2/a/manifests/..", "MANIFEST_UNKNOWN"),
            ("/v2/a/manifests/%2e%2e", "MANIFEST_UNKNOWN"),
            ("/v2/a/manifests/sha256:XYZ", "MANIFEST_UNKNOWN"),
            ("/v2/a/manifests/.INVALID_MANIFEST_NAME", "MANIFEST_UNKNOWN"),
            ("/v2/A/manifests/.INVALID_MANIFEST_NAME", "NAME_INVALID"),
            ("/v2/a/blobs/latest", "DIGEST_INVALID"),
            ("/v2/a/blobs/sha256:..%2f..%2fetc", "DIGEST_INVALID"),
            (
                "/v2/a/blobs/md5:d41d8cd98f00b204e9800998ecf8427e",
                "DIGEST_INVALID",
            ),
            ("/v2/_x/tags/list", "NAME_INVALID"),
            ("/v2/a/referrers/nope", "DIGEST_INVALID"),
        ];
        for (path, code) in cases {
            let err = V2Route::parse(path).unwrap_err();
            assert_eq!(err.code, *code, "{path}");
        }
    }
}
