//! `publish --v1`: the registry v1 (legacy protocol) view of a published image.
//!
//! Old Docker daemons (≤ 17.x) pull through `/v1/`: a repository's `tags` name an image id, each id
//! has a `json`, an `ancestry` (itself first) and a `layer`. This derives that chain for the image
//! just published, deterministically, and writes the static files beside the v2 layout (keys in
//! `layout::v1`, format in `docs/v1.md`):
//! - ids come from the source when it carries them (a legacy `docker save` has `<id>/json` per
//!   layer) and are otherwise computed from the config and the diff_id chain (see [`compute`]), so
//!   republishing always gives the same ids;
//! - a v1 `layer` is the v2 layer blob itself (gzip-compressed tars, which every v1 client
//!   decompresses), so nothing is stored twice: the endpoint redirects `layer` to the blob.
//!
//! Ordering follows the v2 rule (content before references): image files and the store-wide id
//! table before the repository index (which the caller commits), the per-repository files after.

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Context};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::hashing::Hasher;
use crate::index::{RepoIndex, V1Image, V1ImageShard, V1Index};
use crate::layout::{self, Key};
use crate::oci::{media, ImageIndex, ImageManifest, Platform};
use crate::publish::files::Files;
use crate::publish::render::Rendered;
use crate::reference::{Digest, RepoName, Tag, V1ImageId};
use crate::store::{update_json, PutMode, PutOptions, Store, MAX_ATTEMPTS};

/// `created` of every image below the top one, as moby's `docker save` writes it.
const EPOCH: &str = "1970-01-01T00:00:00Z";
/// `created` when the config has none: Go's zero `time.Time`, which moby would marshal.
const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// The v1 images of one published image, ready to write.
#[derive(Debug, Clone)]
pub(crate) struct V1Plan {
    /// The id the published tags name.
    pub top: V1ImageId,
    /// Every image of the chain, for the repository index and the store-wide table.
    pub images: BTreeMap<V1ImageId, V1Image>,
    /// Per image, bottom first: its `json` document and its `ancestry` body.
    docs: Vec<(V1ImageId, Vec<u8>, Vec<u8>)>,
}

impl V1Plan {
    /// The repository-index section for `tags` of one repository.
    pub fn index_for<'a>(&self, tags: impl IntoIterator<Item = &'a Tag>) -> V1Index {
        V1Index {
            tags: tags
                .into_iter()
                .map(|t| (t.clone(), self.top.clone()))
                .collect(),
            images: self.images.clone(),
        }
    }
}

/// One image of a chain before it is written: id, json document.
type Chain = Vec<(V1ImageId, Vec<u8>)>;

/// Derives the v1 chain of the published image. `Ok(None)`, with a note saying why, when the
/// image cannot be served over v1 (no linux/amd64 image in an index, zstd layers, no layers).
pub(crate) async fn plan(
    store: &dyn Store,
    files: &Files,
    rendered: &Rendered,
    notes: &mut Vec<String>,
) -> anyhow::Result<Option<V1Plan>> {
    let manifest = match single_manifest(rendered) {
        Ok(m) => m,
        Err(why) => {
            notes.push(format!("v1: not published: {why}"));
            return Ok(None);
        }
    };
    let ckey = layout::blob(&manifest.config.digest);
    let config_bytes = store
        .get(&ckey)
        .await?
        .with_context(|| format!("v1: the image config {ckey} is missing from the store"))?
        .bytes;
    let config: Value =
        serde_json::from_slice(&config_bytes).context("v1: the image config is not JSON")?;
    let diff_ids = crate::publish::oci::diff_ids(&config_bytes)?;
    if diff_ids.len() != manifest.layers.len() {
        bail!(
            "v1: the config lists {} diff_ids but the manifest {} layers",
            diff_ids.len(),
            manifest.layers.len()
        );
    }
    if diff_ids.is_empty() {
        notes.push("v1: not published: the image has no layers, and a v1 image is one".into());
        return Ok(None);
    }
    if let Some((i, l)) = manifest
        .layers
        .iter()
        .enumerate()
        .find(|(_, l)| !v1_layer_type(&l.media_type))
    {
        notes.push(format!(
            "v1: not published: layer {} is {}, which v1 clients cannot unpack (they take plain or gzip-compressed tars; publish with --compression gzip)",
            i + 1,
            l.media_type
        ));
        return Ok(None);
    }

    let from_source = {
        let (files, digest, n) = (
            files.clone(),
            manifest.config.digest.clone(),
            diff_ids.len(),
        );
        tokio::task::spawn_blocking(move || legacy_chain(&files, &digest, n)).await?
    };
    let chain = match from_source {
        Ok(Some(chain)) => chain,
        Ok(None) => compute(&config, &diff_ids)?,
        Err(e) => {
            notes.push(format!(
                "v1: the archive's own v1 ids are inconsistent ({e:#}); computed ids instead"
            ));
            compute(&config, &diff_ids)?
        }
    };

    let mut images = BTreeMap::new();
    let mut docs = Vec::with_capacity(chain.len());
    let mut parent: Option<V1ImageId> = None;
    for (i, (id, json)) in chain.iter().enumerate() {
        let layer = &manifest.layers[i];
        images.insert(
            id.clone(),
            V1Image {
                parent: parent.clone(),
                layer: layer.digest.clone(),
                size: layer.size,
            },
        );
        // Ancestry: this image, then its parents up to the base.
        let ancestry: Vec<&str> = chain[..=i].iter().rev().map(|(x, _)| x.as_str()).collect();
        let ancestry = serde_json::to_vec(&ancestry).expect("a list of strings serialises");
        docs.push((id.clone(), json.clone(), ancestry));
        parent = Some(id.clone());
    }
    let top = parent.expect("at least one layer");
    notes.push(format!("v1: image {top} ({} v1 images)", chain.len()));
    Ok(Some(V1Plan { top, images, docs }))
}

/// The one image a v1 client gets: the published manifest, or an index's linux/amd64 image (v1
/// predates multi-platform images; Docker 1.x daemons that still speak it are linux/amd64).
fn single_manifest(rendered: &Rendered) -> Result<ImageManifest, String> {
    let bytes_of = |d: &Digest| {
        rendered
            .manifests
            .iter()
            .find(|m| &m.digest == d)
            .map(|m| &m.bytes)
            .ok_or_else(|| format!("internal error: manifest {d} was not rendered"))
    };
    let mut digest = rendered.root.digest.clone();
    if media::is_index(&rendered.root.media_type) {
        let idx: ImageIndex = serde_json::from_slice(bytes_of(&digest)?)
            .map_err(|e| format!("the image index does not parse: {e}"))?;
        let amd64: Platform = "linux/amd64".parse().expect("a valid platform");
        let child = idx
            .manifests
            .iter()
            .filter(|d| d.is_for(&amd64))
            // A plain amd64 entry before any variant of it.
            .min_by_key(|d| d.platform().is_some_and(|p| p.variant.is_some()))
            .ok_or("the image index has no linux/amd64 image, the only platform v1 serves")?;
        digest = child.digest.clone();
    }
    serde_json::from_slice(bytes_of(&digest)?)
        .map_err(|e| format!("the manifest {digest} does not parse: {e}"))
}

/// Layer types a v1 client can unpack: Docker 1.x applies layers through its decompressing
/// reader, which detects plain and gzip tars (and bzip2/xz), never zstd.
fn v1_layer_type(mt: &str) -> bool {
    [
        media::DOCKER_LAYER,
        media::DOCKER_LAYER_GZIP,
        media::DOCKER_FOREIGN,
        media::OCI_LAYER,
        media::OCI_LAYER_GZIP,
        media::OCI_NONDIST_GZIP,
        media::OCI_NONDIST,
    ]
    .contains(&mt)
}

/// One image of a `docker save` `manifest.json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SaveEntry {
    config: String,
    #[serde(default)]
    layers: Vec<String>,
}

/// The v1 ids a legacy `docker save` archive carries for the image whose config is `config`: its
/// layers are `<id>/layer.tar`, each beside `<id>/json`. `Ok(None)` when the source has none
/// (OCI layouts, Docker ≥ 25 archives); an error when they are there but inconsistent.
fn legacy_chain(files: &Files, config: &Digest, layers: usize) -> anyhow::Result<Option<Chain>> {
    let Some(bytes) = files.read_small("manifest.json")? else {
        return Ok(None);
    };
    let Ok(entries) = serde_json::from_slice::<Vec<SaveEntry>>(&bytes) else {
        return Ok(None);
    };
    let mut entry = None;
    for e in &entries {
        if let Some(c) = files.read_small(&e.config)? {
            if Hasher::digest_like(config, &c) == *config {
                entry = Some(e);
                break;
            }
        }
    }
    let Some(entry) = entry else { return Ok(None) };
    if entry.layers.len() != layers {
        return Ok(None);
    }
    let mut chain: Chain = Vec::with_capacity(layers);
    for path in &entry.layers {
        let Some(dir) = path.strip_suffix("/layer.tar") else {
            return Ok(None);
        };
        let Some(json) = files.read_small(&format!("{dir}/json"))? else {
            return Ok(None);
        };
        let v: Value =
            serde_json::from_slice(&json).with_context(|| format!("{dir}/json is not JSON"))?;
        let id = v.get("id").and_then(Value::as_str).unwrap_or_default();
        if id != dir.trim_start_matches("./") {
            bail!("{dir}/json has id {id:?}");
        }
        let id = V1ImageId::parse(id)?;
        let parent = v.get("parent").and_then(Value::as_str);
        let want = chain.last().map(|(p, _)| p.as_str());
        if parent != want {
            bail!("{dir}/json has parent {parent:?}, but the layer below it is {want:?}");
        }
        if chain.iter().any(|(x, _)| *x == id) {
            bail!("{dir}: id {id} appears twice in the chain");
        }
        chain.push((id, json));
    }
    Ok(Some(chain))
}

/// A JSON object whose keys keep the order they were written in (Go's struct order), for the
/// `json` documents; serde_json's map may or may not keep order depending on crate features.
#[derive(Debug, Clone)]
enum Doc {
    Value(Value),
    Object(Vec<(&'static str, Doc)>),
}

impl Doc {
    fn write(&self, out: &mut String) {
        match self {
            // Go marshals maps with sorted keys.
            Doc::Value(v) => canonical(v, out),
            Doc::Object(fields) => {
                out.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::from(*k).to_string());
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
        }
    }

    fn to_value(&self) -> Value {
        match self {
            Doc::Value(v) => v.clone(),
            Doc::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.to_value()))
                    .collect::<Map<_, _>>(),
            ),
        }
    }
}

/// Canonical JSON: no whitespace, object keys sorted (bytewise) at every depth, strings escaped
/// as serde_json does (`"`, `\` and control characters only; other text as UTF-8).
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(k.as_str()).to_string());
                out.push(':');
                canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// What a zero field of Go's `container.Config` marshals as.
#[derive(Clone, Copy)]
enum Zero {
    Str,
    Bool,
    Null,
}

/// moby's `container.Config`, in field order: (name, omitempty, zero value).
const CONTAINER_CONFIG: &[(&str, bool, Zero)] = &[
    ("Hostname", false, Zero::Str),
    ("Domainname", false, Zero::Str),
    ("User", false, Zero::Str),
    ("AttachStdin", false, Zero::Bool),
    ("AttachStdout", false, Zero::Bool),
    ("AttachStderr", false, Zero::Bool),
    ("ExposedPorts", true, Zero::Null),
    ("Tty", false, Zero::Bool),
    ("OpenStdin", false, Zero::Bool),
    ("StdinOnce", false, Zero::Bool),
    ("Env", false, Zero::Null),
    ("Cmd", false, Zero::Null),
    ("Healthcheck", true, Zero::Null),
    ("ArgsEscaped", true, Zero::Bool),
    ("Image", false, Zero::Str),
    ("Volumes", false, Zero::Null),
    ("WorkingDir", false, Zero::Str),
    ("Entrypoint", false, Zero::Null),
    ("NetworkDisabled", true, Zero::Bool),
    ("MacAddress", true, Zero::Str),
    ("OnBuild", false, Zero::Null),
    ("Labels", false, Zero::Null),
    ("StopSignal", true, Zero::Str),
    ("StopTimeout", true, Zero::Null),
    ("Shell", true, Zero::Null),
];

/// Go's `omitempty` test.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Number(_) => false,
    }
}

/// A config object as moby marshals a `container.Config` decoded from it: every field in struct
/// order (keys matched case-insensitively, as Go decodes), zero values for missing ones,
/// `omitempty` fields only when set, unknown keys dropped.
fn container_config(src: Option<&Value>) -> Doc {
    let obj = src.and_then(Value::as_object);
    let get = |name: &str| {
        let o = obj?;
        o.get(name).or_else(|| {
            o.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        })
    };
    let mut fields = Vec::with_capacity(CONTAINER_CONFIG.len());
    for &(name, omitempty, zero) in CONTAINER_CONFIG {
        let v = get(name).filter(|v| !v.is_null()).cloned();
        let v = match (v, omitempty) {
            (Some(v), true) if is_empty(&v) => continue,
            (Some(v), _) => v,
            (None, true) => continue,
            (None, false) => match zero {
                Zero::Str => Value::from(""),
                Zero::Bool => Value::from(false),
                Zero::Null => Value::Null,
            },
        };
        fields.push((name, Doc::Value(v)));
    }
    Doc::Object(fields)
}

/// The chain ids of a diff_id list, as moby's layer store defines them:
/// `chain[0] = diff_id[0]`, `chain[i] = sha256(chain[i-1] + " " + diff_id[i])`.
fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => Digest::sha256_of(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// Computes the v1 chain of an image from its config, the way `docker save` (Docker < 25,
/// moby's `tarexport` with `v1.CreateID`) derives it, one v1 image per layer:
/// - image `i` (bottom first) has the v1 fields of the config if it is the top one (`comment`,
///   `created`, `container`, `container_config`, `docker_version`, `author`, `config`,
///   `architecture`, `variant`, `os`), otherwise only `created: 1970-01-01T00:00:00Z` and an
///   empty `container_config`;
/// - its id is the sha256 of the canonical JSON ([`canonical`]) of those fields plus
///   `layer_id` = the chain id of layers `0..=i` and, above the base, `parent` =
///   `sha256:<parent id>`;
/// - its `json` document is `id`, `parent` (the bare hex id), the fields, then `os`, in moby's
///   struct order, compact.
///
/// One deliberate difference: moby hashes nested objects (`container_config`, `config`) in Go
/// struct order, this sorts their keys too, as the project's fixture generator does (so the
/// docker-25 fixture's embedded v1 documents check this code). Ids are therefore not the ones a
/// Docker daemon computes; they need not be: a v1 id only names an image within this registry,
/// and these are deterministic and commit to every v1 field and, through `layer_id` and
/// `parent`, to every layer below.
fn compute(config: &Value, diff_ids: &[Digest]) -> anyhow::Result<Chain> {
    let chains = chain_ids(diff_ids);
    let text = |k: &str| {
        config
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(|s| Doc::Value(Value::from(s)))
    };
    let os = text("os");
    let mut out: Chain = Vec::with_capacity(chains.len());
    for (i, layer_id) in chains.iter().enumerate() {
        let top = i + 1 == chains.len();
        // The fields of moby's V1Image after `id` and `parent`, in struct order.
        let mut fields: Vec<(&'static str, Doc)> = Vec::new();
        if top {
            let created = config
                .get("created")
                .and_then(Value::as_str)
                .unwrap_or(GO_ZERO_TIME);
            let mut push = |k: &'static str, v: Option<Doc>| {
                if let Some(v) = v {
                    fields.push((k, v));
                }
            };
            push("comment", text("comment"));
            push("created", Some(Doc::Value(Value::from(created))));
            push("container", text("container"));
            push(
                "container_config",
                Some(container_config(config.get("container_config"))),
            );
            push("docker_version", text("docker_version"));
            push("author", text("author"));
            push(
                "config",
                config
                    .get("config")
                    .filter(|c| c.is_object())
                    .map(|c| container_config(Some(c))),
            );
            push("architecture", text("architecture"));
            push("variant", text("variant"));
            push("os", os.clone());
        } else {
            fields.push(("created", Doc::Value(Value::from(EPOCH))));
            fields.push(("container_config", container_config(None)));
        }
        let parent = out.last().map(|(p, _)| p.clone());
        let mut idmap = Doc::Object(fields.clone()).to_value();
        let m = idmap.as_object_mut().expect("an object");
        m.insert("layer_id".into(), Value::from(layer_id.as_str()));
        if let Some(p) = &parent {
            m.insert("parent".into(), Value::from(format!("sha256:{p}")));
        }
        let mut canon = String::new();
        canonical(&idmap, &mut canon);
        let id = V1ImageId::from_sha256(&Digest::sha256_of(canon.as_bytes()))
            .expect("a sha256 digest is a v1 id");

        let mut doc: Vec<(&'static str, Doc)> = vec![("id", Doc::Value(Value::from(id.as_str())))];
        if let Some(p) = &parent {
            doc.push(("parent", Doc::Value(Value::from(p.as_str()))));
        }
        doc.extend(fields);
        if !top {
            // moby sets `os` on every image after computing its id.
            if let Some(os) = &os {
                doc.push(("os", os.clone()));
            }
        }
        let mut json = String::new();
        Doc::Object(doc).write(&mut json);
        out.push((id, json.into_bytes()));
    }
    Ok(out)
}

fn json_put(mode: PutMode, cache_control: &'static str) -> PutOptions {
    PutOptions {
        content_type: layout::JSON_CONTENT_TYPE.to_owned(),
        cache_control,
        mode,
    }
}

/// Writes each image's `json` and `ancestry` (unless already there: they are immutable), then
/// records the images in the store-wide table under `repos`. Runs before the repository index
/// names them.
pub(crate) async fn write_images(
    store: &dyn Store,
    plan: &V1Plan,
    repos: &[RepoName],
) -> anyhow::Result<()> {
    for (id, json, ancestry) in &plan.docs {
        for (key, body) in [
            (layout::v1::image_json(id), json),
            (layout::v1::ancestry(id), ancestry),
        ] {
            if store.head(&key).await?.is_some() {
                continue;
            }
            store
                .put(
                    &key,
                    Bytes::from(body.clone()),
                    &json_put(PutMode::Overwrite, layout::CACHE_IMMUTABLE),
                )
                .await
                .with_context(|| format!("cannot write {key}"))?;
        }
    }
    let mut shards: BTreeMap<Key, BTreeMap<V1ImageId, V1Image>> = BTreeMap::new();
    for (id, img) in &plan.images {
        shards
            .entry(layout::v1::image_shard(id))
            .or_default()
            .insert(id.clone(), img.clone());
    }
    for (key, images) in &shards {
        update_json(store, key, |doc: &mut Option<V1ImageShard>| {
            let shard = doc.get_or_insert_with(V1ImageShard::default);
            for r in repos {
                shard.merge(r, images);
            }
            Ok(())
        })
        .await?;
    }
    Ok(())
}

/// Writes a repository's v1 files from its committed index: `_tags/<tag>` for `touched` and for
/// any missing, deleting those of tags that left the v1 view, then `_tags.json` and
/// `_images.json`. Repeats until the index stops moving underneath, like the v2 derived files.
pub(crate) async fn write_derived(
    store: &dyn Store,
    name: &RepoName,
    touched: &[Tag],
) -> anyhow::Result<()> {
    let key = layout::repo_index(name);
    let prefix = layout::v1::tag_files_prefix(name);
    for attempt in 0..MAX_ATTEMPTS {
        let Some(obj) = store.get(&key).await? else {
            bail!("{key}: disappeared while writing its v1 files");
        };
        let idx = RepoIndex::from_slice(&obj.bytes)
            .with_context(|| format!("{key}: cannot parse the repository index"))?;
        let tags = idx.v1_tags();
        // Tag -> the key listed for it.
        let existing: HashMap<String, String> = store
            .list(&prefix)
            .await?
            .into_iter()
            .map(|m| (m.key[prefix.len()..].to_owned(), m.key))
            .collect();
        for (tag, id) in &tags {
            if !touched.contains(tag) && existing.contains_key(tag.as_str()) {
                continue;
            }
            let tkey = layout::v1::tag(name, tag);
            let body = serde_json::to_vec(id.as_str()).expect("a string serialises");
            store
                .put(
                    &tkey,
                    Bytes::from(body),
                    &json_put(PutMode::Overwrite, layout::CACHE_INDEX),
                )
                .await
                .with_context(|| format!("cannot write {tkey}"))?;
        }
        for (_, gkey) in existing
            .iter()
            .filter(|(t, _)| !tags.keys().any(|x| x.as_str() == t.as_str()))
        {
            store
                .delete(gkey)
                .await
                .with_context(|| format!("cannot delete {gkey}"))?;
        }
        let tags_body: BTreeMap<&str, &str> = tags
            .iter()
            .map(|(t, id)| (t.as_str(), id.as_str()))
            .collect();
        let images_body: Vec<Value> = idx
            .v1
            .iter()
            .flat_map(|v| v.images.keys())
            .map(|id| serde_json::json!({ "id": id }))
            .collect();
        for (k, body) in [
            (
                layout::v1::tags(name),
                serde_json::to_vec(&tags_body).expect("tags serialise"),
            ),
            (
                layout::v1::images(name),
                serde_json::to_vec(&images_body).expect("images serialise"),
            ),
        ] {
            store
                .put(
                    &k,
                    Bytes::from(body),
                    &json_put(PutMode::Overwrite, layout::CACHE_INDEX),
                )
                .await
                .with_context(|| format!("cannot write {k}"))?;
        }
        let now = store.get(&key).await?.map(|o| o.version);
        if now.as_ref() == Some(&obj.version) {
            return Ok(());
        }
        tracing::debug!("{key}: changed while writing v1 files, rewriting (attempt {attempt})");
    }
    bail!(
        "{key}: gave up rewriting v1 files after {MAX_ATTEMPTS} attempts; the index keeps changing"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Digest {
        Digest::parse(s).unwrap()
    }

    #[test]
    fn chain_ids_follow_moby() {
        let a = Digest::sha256_of(b"a");
        let b = Digest::sha256_of(b"b");
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a);
        assert_eq!(c[1], Digest::sha256_of(format!("{a} {b}").as_bytes()));
    }

    #[test]
    fn canonical_json_sorts_every_level() {
        let v: Value =
            serde_json::from_str(r#"{"b":{"z":1,"a":[{"y":"é\n","x":null}]},"a":true}"#).unwrap();
        let mut s = String::new();
        canonical(&v, &mut s);
        assert_eq!(s, r#"{"a":true,"b":{"a":[{"x":null,"y":"é\n"}],"z":1}}"#);
    }

    #[test]
    fn container_config_in_struct_order() {
        let src: Value = serde_json::from_str(
            r#"{"cmd":["/bin/sh"],"Labels":{"b":"2","a":"1"},"ExposedPorts":{},"StopSignal":"SIGTERM","Unknown":1}"#,
        )
        .unwrap();
        let mut s = String::new();
        container_config(Some(&src)).write(&mut s);
        assert_eq!(
            s,
            r#"{"Hostname":"","Domainname":"","User":"","AttachStdin":false,"AttachStdout":false,"AttachStderr":false,"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":null,"Cmd":["/bin/sh"],"Image":"","Volumes":null,"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels":{"a":"1","b":"2"},"StopSignal":"SIGTERM"}"#
        );
    }

    /// The docker-25 fixture carries the legacy v1 JSON documents Docker would have written (made
    /// by scripts/make-fixtures.sh); computing from its config must give exactly those.
    #[test]
    fn computed_chain_matches_the_fixture_generator() {
        let files = Files::open_tar(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/docker-25.tar"),
        )
        .unwrap();
        let cfg_digest =
            d("sha256:9c5316479d3f4b15f34814f7b3965361ac020da8c45800751d347da9cd9313d1");
        let cfg_bytes = files
            .read_small(&format!("blobs/sha256/{}", cfg_digest.hex()))
            .unwrap()
            .unwrap();
        let config: Value = serde_json::from_slice(&cfg_bytes).unwrap();
        let diff_ids = crate::publish::oci::diff_ids(&cfg_bytes).unwrap();
        let chain = compute(&config, &diff_ids).unwrap();
        let expected = [
            "4e8fb2787c55163c5572e8fbbb0ba3f591b65f034cccac51b154362b24813456",
            "a4d9c36f2777c4e60848365e163de80b894c7bda5c0f2f5645caba79b847ca9e",
        ];
        assert_eq!(chain.len(), 2);
        for ((id, json), blob) in chain.iter().zip(expected) {
            let want = files
                .read_small(&format!("blobs/sha256/{blob}"))
                .unwrap()
                .unwrap();
            assert_eq!(
                String::from_utf8_lossy(json),
                String::from_utf8_lossy(&want)
            );
            let v: Value = serde_json::from_slice(&want).unwrap();
            assert_eq!(v["id"], id.as_str());
        }
        // Deterministic.
        assert_eq!(compute(&config, &diff_ids).unwrap(), chain);
        // Not a legacy archive: no ids of its own.
        assert!(legacy_chain(&files, &cfg_digest, 2).unwrap().is_none());
    }

    #[test]
    fn legacy_archive_ids_are_taken_as_they_are() {
        let files = Files::open_tar(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/docker-legacy.tar"),
        )
        .unwrap();
        let cfg = d("sha256:1d7c5aa8c55fcfa210225b0ce08560ccc26c91e3e1cf912aca166b9ebbd10127");
        let chain = legacy_chain(&files, &cfg, 2).unwrap().unwrap();
        let ids: Vec<&str> = chain.iter().map(|(i, _)| i.as_str()).collect();
        assert_eq!(
            ids,
            [
                "7c7d80e17b2e32e857bde94fdb95a0f5465d7d461ce33b3aef91f7fca44a159e",
                "55abd96a774e59f252ac2a84e55a09771bf9e0c50e361c5420e992559f7346c8"
            ]
        );
        for (id, json) in &chain {
            assert_eq!(
                *json,
                files.read_small(&format!("{id}/json")).unwrap().unwrap()
            );
        }
        // Another config, or another layer count: not this image.
        assert!(legacy_chain(&files, &Digest::sha256_of(b"x"), 2)
            .unwrap()
            .is_none());
        assert!(legacy_chain(&files, &cfg, 3).unwrap().is_none());
    }
}
