//! Pinning and machine-readable output: what a platform needs to deploy exactly what it staged.
//!
//! A tag can move; a digest cannot, and a pin tag never does. `--pin` adds a tag that is unique
//! per publish (time-ordered, so `tags/list` sorts pins chronologically, and carrying a prefix of
//! the digest so a person can match it by eye), and the summary prints the immutable reference
//! `HOST/REPO@sha256:…` to deploy. `--output json` gives the same facts to programs.

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;

use crate::index::RepoIndex;
use crate::layout;
use crate::publish::Summary;
use crate::reference::{Digest, RepoName, Tag, TaggedName};
use crate::store::Store;

/// How `publish` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    /// A summary for people.
    #[default]
    Text,
    /// One JSON document on stdout (see docs/mirror.md for the schema).
    Json,
}

/// `publish` flags for pinning and output, for every source.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PinOptions {
    /// Also publish a unique, never-reused tag (pin-<UTC time>-<digest prefix>) and print the
    /// immutable reference to deploy (HOST/REPO@sha256:…).
    #[arg(long)]
    pub pin: bool,
    /// The registry host clients pull from (the `serve` endpoint), to print deployable
    /// references as HOST/REPO@DIGEST.
    #[arg(long, env = "STATIC_REGISTRY_HOST", value_name = "HOST[:PORT]")]
    pub registry_host: Option<String>,
    /// Summary format on stdout.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// `pin-YYYYMMDDTHHMMSSZ-<first 8 hex of the digest>`: sorts by time, valid as a tag, and only
/// ever names one image (a second pin of another image in the same second differs by digest).
pub fn pin_tag(digest: &Digest, now: SystemTime) -> Tag {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let at = jiff::Timestamp::from_second(i64::try_from(secs).unwrap_or(0)).unwrap_or_default();
    let tag = format!(
        "pin-{}-{}",
        at.strftime("%Y%m%dT%H%M%SZ"),
        &digest.hex()[..8]
    );
    Tag::parse(&tag).expect("pin tags are valid tags")
}

/// A pin tag that is not yet used in the repository for another digest: `pin_tag`, suffixed
/// `-2`, `-3`… in the (same second, same digest prefix) case.
pub fn unused_pin(base: &Tag, taken: &dyn Fn(&Tag) -> bool) -> Tag {
    if !taken(base) {
        return base.clone();
    }
    (2..)
        .map(|n| Tag::parse(&format!("{base}-{n}")).expect("valid tag"))
        .find(|t| !taken(t))
        .expect("some suffix is free")
}

/// Adds the pin tag to every repository `tags` names (or to `fallback` when `tags` is empty, as
/// for `docker://REPO@DIGEST --pin`), choosing a tag none of them uses yet. Returns the tag.
pub async fn add_pin(
    store: &dyn Store,
    tags: &mut Vec<TaggedName>,
    fallback: Option<RepoName>,
    digest: &Digest,
) -> anyhow::Result<Tag> {
    let mut repos: Vec<RepoName> = Vec::new();
    for t in tags.iter() {
        if !repos.contains(&t.name) {
            repos.push(t.name.clone());
        }
    }
    if repos.is_empty() {
        repos.extend(fallback);
    }
    if repos.is_empty() {
        anyhow::bail!("--pin needs a repository: pass --tag REPO:TAG");
    }
    let mut taken: HashSet<Tag> = HashSet::new();
    for r in &repos {
        let key = layout::repo_index(r);
        if let Some(obj) = store.get(&key).await? {
            let idx = RepoIndex::from_slice(&obj.bytes)
                .with_context(|| format!("{key}: cannot parse the repository index"))?;
            taken.extend(idx.tags.into_keys());
        }
    }
    let pin = unused_pin(&pin_tag(digest, SystemTime::now()), &|t| taken.contains(t));
    for r in repos {
        tags.push(TaggedName {
            name: r,
            tag: pin.clone(),
        });
    }
    Ok(pin)
}

/// The reference to deploy: `HOST/REPO@DIGEST`, or `REPO@DIGEST` without a host.
pub fn reference(host: Option<&str>, repo: &RepoName, digest: &Digest) -> String {
    match host
        .map(|h| h.trim_end_matches('/'))
        .filter(|h| !h.is_empty())
    {
        Some(h) => format!("{h}/{repo}@{digest}"),
        None => format!("{repo}@{digest}"),
    }
}

/// One entry of `tags` in the JSON summary.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TagOut<'a> {
    repository: &'a str,
    tag: &'a str,
    digest: &'a Digest,
    media_type: &'a str,
    size: u64,
}

/// The JSON summary (schema in docs/mirror.md). Field names are snake_case like the rest of the
/// CLI's JSON, except descriptor fields, which keep the OCI spelling (`mediaType`).
pub fn summary_json(s: &Summary) -> Value {
    let tags: Vec<TagOut<'_>> = s
        .tags
        .iter()
        .map(|(t, d)| TagOut {
            repository: t.name.as_str(),
            tag: t.tag.as_str(),
            digest: &d.digest,
            media_type: &d.media_type,
            size: d.size,
        })
        .collect();
    let m = s.mirror.clone().unwrap_or_default();
    serde_json::json!({
        "source": s.source,
        "tags": tags,
        "pin": s.pin.as_ref().map(|t| t.as_str()),
        "reference": s.reference,
        "blobs_written": s.blobs_written,
        "bytes_written": s.bytes_written,
        "blobs_skipped": s.blobs_skipped,
        "bytes_skipped": s.bytes_skipped,
        "manifests_written": s.manifests_written,
        "bytes_downloaded": m.bytes_downloaded,
        "blobs_downloaded": m.blobs_downloaded,
        "manifests_downloaded": m.manifests_downloaded,
        "manifest_bytes_downloaded": m.manifest_bytes_downloaded,
        "source_registry": s.mirror.as_ref().map(|m| m.registry.clone()),
        "notes": s.notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pin_tags_are_time_ordered_and_valid() {
        let d = Digest::sha256_of(b"x");
        // 2026-11-22T13:05:01Z
        let t = UNIX_EPOCH + Duration::from_secs(1_795_352_701);
        let tag = pin_tag(&d, t);
        assert_eq!(
            tag.as_str(),
            format!("pin-20261122T130501Z-{}", &d.hex()[..8])
        );
        let later = pin_tag(&d, t + Duration::from_secs(1));
        assert!(later.as_str() > tag.as_str());
        let taken = |t: &Tag| t == &tag;
        assert_eq!(unused_pin(&tag, &taken).as_str(), format!("{tag}-2"));
    }

    #[test]
    fn references() {
        let d = Digest::sha256_of(b"x");
        let r = RepoName::parse("app/web").unwrap();
        assert_eq!(reference(None, &r, &d), format!("app/web@{d}"));
        assert_eq!(
            reference(Some("reg.example:5000/"), &r, &d),
            format!("reg.example:5000/app/web@{d}")
        );
    }
}
