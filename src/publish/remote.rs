//! The `docker://` source: an image in another registry, mirrored into the store.
//!
//! Loading fetches the manifest tree (small documents) and turns it into the same [`Node`] tree
//! the file sources produce, so the rest of `publish` (only-missing uploads, verification in a
//! staging file, rendering, the ordered commit) is shared. Manifests named by digest are read from
//! the store when it already has them, and blobs are only downloaded when `upload` finds them
//! missing from the store: re-mirroring an unchanged image fetches the tag's manifest and nothing
//! else. Blobs stream from the registry through [`RemoteFiles`], whose reader resumes with `Range`
//! after a dropped connection; they are hashed while staged, never held in memory.
//!
//! `--platform` keeps a subset of a multi-platform index by writing a filtered index (a new digest,
//! which the summary says). `--with-referrers` also copies what the referrers API (or its tag
//! fallbacks) lists for the image, and the static referrers indexes are written after the commit.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::{bail, Context};
use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use crate::hashing::Hasher;
use crate::index::{Descriptor, RepoIndex};
use crate::layout;
use crate::oci::{media, Descriptor as SourceDescriptor, ImageManifest, Platform};
use crate::publish::files::Opened;
use crate::publish::image::{short, BlobKey, BlobRef, BlobSource, IndexNode, ManifestNode, Node};
use crate::publish::oci::{blob_path, diff_ids};
use crate::publish::render::{self, Produced, Rendered};
use crate::publish::{Compression, Loaded};
use crate::reference::{Digest, RepoName, Tag};
use crate::registry::blob_reader::BlobReader;
use crate::registry::client::{ClientOptions, Counters, FetchedManifest, RegistryClient};
use crate::registry::credentials::{self, CredsArg, Lookup};
use crate::registry::reference::RemoteRef;
use crate::store::{PutMode, PutOptions, Store};
use crate::walk::{self, WalkLimits, MAX_DEPTH};

/// Manifests fetched concurrently while walking an image's indexes.
const PARALLEL: usize = 4;
/// `publish` flags that only apply to `docker://` sources.
#[derive(Debug, Clone, clap::Args)]
pub struct MirrorOptions {
    /// Credentials for a docker:// source: USER[:PASS]. Without :PASS the password is read from
    /// standard input. Otherwise STATIC_REGISTRY_SRC_USERNAME/_PASSWORD, then Docker's
    /// config.json (auths, credsStore, credHelpers) are used. Never stored or logged.
    #[arg(long, value_name = "USER[:PASS]")]
    pub creds: Option<CredsArg>,
    /// A Docker config.json-format file to read docker:// credentials from instead of
    /// $DOCKER_CONFIG/config.json or ~/.docker/config.json.
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<std::path::PathBuf>,
    /// Keep only this platform of a multi-platform image (os/arch[/variant]); repeatable. The
    /// published index is then a filtered one, with a digest of its own.
    #[arg(long = "platform", value_name = "OS/ARCH[/VARIANT]")]
    pub platforms: Vec<Platform>,
    /// Also copy the image's referrers (signatures, SBOMs, attestations) as listed by the OCI
    /// referrers API or the sha256-<hex> / .sig / .att / .sbom tags, and publish the referrers
    /// index.
    #[arg(long)]
    pub with_referrers: bool,
    /// Verify the source registry's TLS certificate. `--src-tls-verify=false` also allows plain
    /// HTTP (tried after HTTPS). Registries on loopback may always fall back to plain HTTP.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub src_tls_verify: bool,
    /// Refuse an image whose blobs (layers and configs, referrers included) add up to more than
    /// SIZE (e.g. 2GiB), before anything is downloaded.
    #[arg(long, value_name = "SIZE")]
    pub max_image_bytes: Option<crate::byte_size::ByteSize>,
    /// Take credentials only from `creds` and `authfile`, never from the environment or Docker's
    /// default config: the mirror copier inside `serve` uses what its upstream's config names.
    #[arg(skip)]
    pub isolated_credentials: bool,
}

impl Default for MirrorOptions {
    fn default() -> Self {
        MirrorOptions {
            creds: None,
            authfile: None,
            platforms: Vec::new(),
            with_referrers: false,
            src_tls_verify: true,
            max_image_bytes: None,
            isolated_credentials: false,
        }
    }
}

/// The blobs of a registry image, readable through [`crate::publish::files::Files`]: the path
/// `blobs/<alg>/<hex>` of every blob the loaded tree references.
#[derive(Debug)]
pub struct RemoteFiles {
    client: Arc<RegistryClient>,
    label: String,
    blobs: HashMap<String, (Digest, u64)>,
    /// Configs already downloaded (and verified) while loading: not fetched twice.
    cached: HashMap<String, Bytes>,
}

impl RemoteFiles {
    pub fn display(&self) -> String {
        self.label.clone()
    }

    pub fn exists(&self, path: &str) -> bool {
        self.blobs.contains_key(path)
    }

    /// A reader that downloads the blob on first read. Must be called inside the runtime; the
    /// reader must then be read on a blocking thread (as `upload` does).
    pub fn open(&self, path: &str) -> anyhow::Result<Option<Opened>> {
        let Some((digest, size)) = self.blobs.get(path) else {
            return Ok(None);
        };
        if let Some(b) = self.cached.get(path) {
            return Ok(Some(Opened {
                reader: Box::new(io::Cursor::new(b.clone())),
                size: b.len() as u64,
            }));
        }
        let handle = tokio::runtime::Handle::try_current()
            .context("internal error: registry blobs are opened outside the runtime")?;
        let blob = BlobReader::new(self.client.clone(), digest.clone(), *size);
        Ok(Some(Opened {
            reader: Box::new(blob.into_read(handle)),
            size: *size,
        }))
    }
}

/// What mirroring adds to a publish: the client (for its counters), referrers, cosign-style tags
/// and notes.
#[derive(Debug)]
pub struct Mirror {
    pub client: Arc<RegistryClient>,
    pub source: RemoteRef,
    pub referrers: Vec<Referrer>,
    /// `sha256-<hex>.sig`-style tags to publish alongside (what cosign looks up).
    pub referrer_tags: Vec<(Tag, Descriptor)>,
    pub notes: Vec<String>,
}

/// What was downloaded, for the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MirrorStats {
    /// The registry as the user named it.
    pub registry: String,
    pub blobs_downloaded: u64,
    /// Blob bytes received (configs and layers; resumed ranges counted once each).
    pub bytes_downloaded: u64,
    pub manifests_downloaded: u64,
    pub manifest_bytes_downloaded: u64,
    pub requests: u64,
    pub retries: u64,
    pub resumes: u64,
}

impl Mirror {
    pub fn stats(&self) -> MirrorStats {
        let c: &Counters = &self.client.counters;
        MirrorStats {
            registry: self.client.registry().to_owned(),
            blobs_downloaded: Counters::get(&c.blobs),
            bytes_downloaded: Counters::get(&c.blob_bytes),
            manifests_downloaded: Counters::get(&c.manifests),
            manifest_bytes_downloaded: Counters::get(&c.manifest_bytes),
            requests: Counters::get(&c.requests),
            retries: Counters::get(&c.retries),
            resumes: Counters::get(&c.resumes),
        }
    }

    /// The repository to publish under when `--tag` is not given.
    pub fn default_repo(&self) -> RepoName {
        self.source.destination_repo()
    }

    /// Every blob of the referrers, to upload with the image's.
    pub fn blobs(&self) -> Vec<BlobRef> {
        self.referrers.iter().flat_map(|r| r.node.blobs()).collect()
    }

    /// Renders the referrers' manifests (kept byte for byte: all their blobs are copies) into
    /// `rendered`, after the image's own.
    pub fn render_into(
        &self,
        rendered: &mut Rendered,
        produced: &HashMap<BlobKey, Produced>,
        compression: Compression,
    ) -> anyhow::Result<()> {
        let mut seen: HashSet<Digest> = rendered
            .manifests
            .iter()
            .map(|m| m.digest.clone())
            .collect();
        for r in &self.referrers {
            let out = render::render(&r.node, produced, compression)?;
            for m in out.manifests {
                if seen.insert(m.digest.clone()) {
                    rendered.manifests.push(m);
                }
            }
            rendered.blobs.extend(out.blobs);
            rendered.notes.extend(out.notes);
        }
        Ok(())
    }

    /// The `referrers` map of the repository index: subject -> artifact descriptors.
    pub fn referrers_map(&self) -> BTreeMap<Digest, Vec<Descriptor>> {
        let mut out: BTreeMap<Digest, Vec<Descriptor>> = BTreeMap::new();
        for r in &self.referrers {
            let list = out.entry(r.subject.clone()).or_default();
            if !list.iter().any(|d| d.digest == r.descriptor.digest) {
                list.push(r.descriptor.clone());
            }
        }
        for list in out.values_mut() {
            list.sort_by(|a, b| a.digest.cmp(&b.digest));
        }
        out
    }
}

/// Every blob to upload: the image's, then its referrers' (each once).
pub fn all_blobs(root: &Node, mirror: Option<&Mirror>) -> Vec<BlobRef> {
    let mut out = root.blobs();
    if let Some(m) = mirror {
        let mut seen: HashSet<BlobKey> = out.iter().map(|b| b.source.key()).collect();
        out.extend(
            m.blobs()
                .into_iter()
                .filter(|b| seen.insert(b.source.key())),
        );
    }
    out
}

/// Connects to the registry, loads the image (filtered by `--platform`) and, with
/// `--with-referrers`, its referrers. Nothing is written.
pub(crate) async fn load(
    r: &RemoteRef,
    opts: &MirrorOptions,
    store: &dyn Store,
    limits: WalkLimits,
) -> anyhow::Result<(Loaded, Mirror)> {
    let lookup = Lookup {
        creds: opts.creds.clone(),
        authfile: opts.authfile.clone(),
    };
    let isolated = opts.isolated_credentials;
    let creds = tokio::task::spawn_blocking({
        let r = r.clone();
        move || {
            let env = |k: &str| (!isolated).then(|| std::env::var(k).ok()).flatten();
            credentials::resolve(&r, &lookup, &env)
        }
    })
    .await??;
    tracing::info!(
        "connecting to registry {} ({}) as {} (credentials: {})",
        r.registry,
        r.api_host,
        creds.who(),
        creds.origin
    );
    let client_opts = ClientOptions {
        tls_verify: opts.src_tls_verify,
        ..ClientOptions::default()
    };
    let client = Arc::new(RegistryClient::connect(r, creds, &client_opts).await?);
    let mut loader = Loader {
        client: &client,
        store,
        platforms: &opts.platforms,
        blobs: HashMap::new(),
        label: r.to_string(),
        notes: Vec::new(),
        tree: Vec::new(),
        cached: HashMap::new(),
        limits,
        manifests: HashMap::new(),
        built: HashMap::new(),
    };
    let reference = r.manifest_reference();
    let fetched = match &r.digest {
        Some(d) => loader.fetch(d).await?,
        None => client.manifest(&reference, None).await?,
    };
    let source_digest = fetched.digest.clone();
    loader.fetch_graph(&fetched, true).await?;
    let root = loader
        .node(fetched, String::new(), None, 0, true)
        .await?
        .with_context(|| format!("{}: no manifest matches --platform", loader.label))?;
    let root_digest = node_descriptor(&root).0;
    if root_digest != source_digest {
        let kept: Vec<String> = opts.platforms.iter().map(|p| p.to_string()).collect();
        loader.notes.push(format!(
            "--platform {}: published a filtered image index {root_digest} instead of the source's {source_digest}; pull it by that digest (signatures over the source's digest do not cover it)",
            kept.join(",")
        ));
    }
    let mut referrers = Vec::new();
    let mut referrer_tags = Vec::new();
    if opts.with_referrers {
        let mut subjects = vec![source_digest.clone()];
        subjects.extend(loader.tree.iter().cloned());
        let (rs, tags) = loader.referrers(&subjects).await?;
        referrers = rs;
        referrer_tags = tags;
        if referrers.is_empty() {
            loader.notes.push(format!(
                "--with-referrers: {} has no referrers",
                loader.label
            ));
        } else {
            loader.notes.push(format!(
                "--with-referrers: copied {} referrer(s) of {} subject(s)",
                referrers.len(),
                referrers
                    .iter()
                    .map(|r| &r.subject)
                    .collect::<HashSet<_>>()
                    .len()
            ));
        }
    }
    if let Some(max) = opts.max_image_bytes {
        let total: u64 = loader.blobs.values().map(|(_, size)| size).sum();
        if total > max.0 {
            bail!(
                "{}: the image's blobs add up to {} bytes, over the limit of {max}",
                loader.label,
                total
            );
        }
    }
    let files = RemoteFiles {
        client: client.clone(),
        label: loader.label.clone(),
        blobs: loader.blobs,
        cached: loader.cached,
    };
    let notes = loader.notes;
    let loaded = Loaded {
        files: crate::publish::files::Files::Remote(Arc::new(files)),
        root,
        default_tags: r.default_destination().into_iter().collect(),
    };
    Ok((
        loaded,
        Mirror {
            client,
            source: r.clone(),
            referrers,
            referrer_tags,
            notes,
        },
    ))
}

/// The published descriptor parts of a loaded node: digest, size, media type.
fn node_descriptor(n: &Node) -> (Digest, u64, String) {
    match n {
        Node::Manifest(m) => {
            let (bytes, d) = m.original.as_ref().expect("registry manifests have bytes");
            (d.clone(), bytes.len() as u64, m.media_type.clone())
        }
        Node::Index(i) => (
            i.digest.clone(),
            i.original.len() as u64,
            i.media_type.clone(),
        ),
    }
}

type NodeFuture<'f> = Pin<Box<dyn Future<Output = anyhow::Result<Option<Node>>> + Send + 'f>>;

/// Walks a registry image, building the tree `publish` shares with the file sources.
struct Loader<'a> {
    client: &'a Arc<RegistryClient>,
    store: &'a dyn Store,
    platforms: &'a [Platform],
    /// `blobs/<alg>/<hex>` -> digest and size, for [`RemoteFiles`].
    blobs: HashMap<String, (Digest, u64)>,
    label: String,
    notes: Vec<String>,
    /// Source digests of every manifest below the root (referrer subjects).
    tree: Vec<Digest>,
    /// `blobs/<alg>/<hex>` -> configs downloaded while loading, for [`RemoteFiles`].
    cached: HashMap<String, Bytes>,
    limits: WalkLimits,
    /// Every manifest the walks fetched, each once.
    manifests: HashMap<Digest, FetchedManifest>,
    /// Nodes already built: a child listed many times is one shared node.
    built: HashMap<Digest, Option<Arc<Node>>>,
}

/// Whether the walk (and the build) follow index entry `e`: `--platform` drops images of other
/// platforms (nested indexes are followed, and filtered below).
fn keep_entry(e: &SourceDescriptor, platforms: &[Platform], filter: bool) -> bool {
    if !filter || platforms.is_empty() || media::is_index(&e.media_type) {
        return true;
    }
    platforms.iter().any(|f| e.is_for(f))
}

/// The entries of an index the walk follows; none for an image manifest (or unparseable
/// input, which building the node reports).
fn entries_to_follow(
    m: &FetchedManifest,
    platforms: &[Platform],
    filter: bool,
) -> Vec<SourceDescriptor> {
    let Ok(value) = serde_json::from_slice::<Value>(&m.bytes) else {
        return Vec::new();
    };
    if !media::is_index(&media::of_manifest(&value, &m.media_type)) {
        return Vec::new();
    }
    value
        .get("manifests")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .filter_map(|raw| serde_json::from_value::<SourceDescriptor>(raw.clone()).ok())
        .filter(|e| keep_entry(e, platforms, filter))
        .collect()
}

impl Loader<'_> {
    /// Fetches every manifest below `root` that the build will need, each digest once, within
    /// the walk's bounds: a hostile index listing one child many times costs one fetch.
    async fn fetch_graph(&mut self, root: &FetchedManifest, filter: bool) -> anyhow::Result<()> {
        let root_desc =
            SourceDescriptor::of_manifest(&root.media_type, &root.digest, root.bytes.len() as u64);
        let this = &*self;
        let walked = walk::walk(
            [root_desc],
            self.limits,
            PARALLEL,
            &self.label,
            |d: SourceDescriptor| async move {
                match this.manifests.get(&d.digest) {
                    Some(m) => Ok(m.clone()),
                    None if d.digest == root.digest => Ok(root.clone()),
                    None => this.fetch(&d.digest).await,
                }
            },
            |m: &FetchedManifest| entries_to_follow(m, this.platforms, filter),
        )
        .await?;
        for v in walked.visits {
            self.manifests.entry(v.reference.digest).or_insert(v.value);
        }
        Ok(())
    }

    /// A manifest by digest: from the store when it has it (verified), else from the registry.
    async fn fetch(&self, digest: &Digest) -> anyhow::Result<FetchedManifest> {
        if let Ok(Some(obj)) = self.store.get(&layout::manifest(digest)).await {
            if Hasher::digest_like(digest, &obj.bytes) == *digest {
                tracing::debug!("manifest {digest}: already in the store");
                return Ok(FetchedManifest {
                    bytes: obj.bytes.to_vec(),
                    digest: digest.clone(),
                    media_type: String::new(),
                });
            }
        }
        self.client.manifest(digest.as_str(), Some(digest)).await
    }

    /// A config (small blob): from the store when it has it, else from the registry (then kept,
    /// so the upload does not download it again).
    async fn config(&mut self, d: &SourceDescriptor) -> anyhow::Result<Vec<u8>> {
        if let Ok(Some(obj)) = self.store.get(&layout::blob(&d.digest)).await {
            if obj.bytes.len() as u64 == d.size
                && Hasher::digest_like(&d.digest, &obj.bytes) == d.digest
            {
                return Ok(obj.bytes.to_vec());
            }
        }
        let path = blob_path(&d.digest);
        if let Some(b) = self.cached.get(&path) {
            return Ok(b.to_vec());
        }
        let bytes = self.client.small_blob(&d.digest, d.size).await?;
        self.cached.insert(path, Bytes::from(bytes.clone()));
        Ok(bytes)
    }

    fn blob_ref(&mut self, d: &SourceDescriptor, what: String) -> BlobRef {
        let foreign =
            media::is_foreign(&d.media_type) && d.urls.as_ref().is_some_and(|u| !u.is_empty());
        let path = blob_path(&d.digest);
        if !foreign {
            self.blobs.insert(path.clone(), (d.digest.clone(), d.size));
        }
        BlobRef {
            media_type: d.media_type.clone(),
            source: BlobSource::Copy {
                // Foreign layers live at their URLs, not in the registry: only copied if the
                // store already has them (as for file sources).
                path: (!foreign).then_some(path),
                digest: d.digest.clone(),
                size: d.size,
            },
            urls: d.urls.clone(),
            what,
        }
    }

    /// Builds the node for `m`; `None` when `filter` left nothing of an index.
    fn node<'f>(
        &'f mut self,
        m: FetchedManifest,
        descriptor_type: String,
        platform: Option<String>,
        depth: usize,
        filter: bool,
    ) -> NodeFuture<'f> {
        Box::pin(async move {
            if depth > MAX_DEPTH {
                bail!(
                    "{}: image indexes nest deeper than {MAX_DEPTH} levels",
                    self.label
                );
            }
            let value: Value = serde_json::from_slice(&m.bytes).with_context(|| {
                format!("{}: manifest {} is not valid JSON", self.label, m.digest)
            })?;
            let hint = if !descriptor_type.is_empty() {
                descriptor_type.clone()
            } else {
                m.media_type.clone()
            };
            let media_type = media::of_manifest(&value, &hint);
            media::check_manifest(
                &value,
                &media_type,
                &format!("{}: manifest {}", self.label, m.digest),
            )?;
            if media::is_index(&media_type) {
                return self
                    .index(m, value, media_type, platform, depth, filter)
                    .await;
            }
            let mj: ImageManifest = serde_json::from_value(value).with_context(|| {
                format!(
                    "{}: manifest {} is not an image manifest",
                    self.label, m.digest
                )
            })?;
            if depth == 0 && filter && !self.platforms.is_empty() {
                // A single-platform image: its config says which platform it is.
                let cfg: Value =
                    serde_json::from_slice(&self.config(&mj.config).await?).unwrap_or(Value::Null);
                if !self.platforms.iter().any(|p| p.matches_json(&cfg)) {
                    let get = |k: &str| cfg.get(k).and_then(|v| v.as_str()).unwrap_or("?");
                    bail!(
                        "{}: a single-platform image for {}/{}, which --platform does not select",
                        self.label,
                        get("os"),
                        get("architecture")
                    );
                }
            }
            let at = match &platform {
                Some(p) => format!("{} ({p})", short(&m.digest)),
                None => short(&m.digest),
            };
            let needs_diff_ids = mj
                .layers
                .iter()
                .any(|l| media::is_uncompressed_layer(&l.media_type));
            let ids = if needs_diff_ids {
                diff_ids(&self.config(&mj.config).await?)
                    .with_context(|| format!("config {}", mj.config.digest))?
            } else {
                Vec::new()
            };
            let config = self.blob_ref(&mj.config, format!("config of {at}"));
            let mut layers = Vec::with_capacity(mj.layers.len());
            for (i, l) in mj.layers.iter().enumerate() {
                let what = format!("layer {} of {at}", i + 1);
                if media::is_uncompressed_layer(&l.media_type) {
                    let Some(id) = ids.get(i) else {
                        bail!(
                            "{}: {what}: the config lists {} diff_ids for {} layers",
                            self.label,
                            ids.len(),
                            mj.layers.len()
                        );
                    };
                    let path = blob_path(&l.digest);
                    self.blobs.insert(path.clone(), (l.digest.clone(), l.size));
                    layers.push(BlobRef {
                        media_type: l.media_type.clone(),
                        source: BlobSource::Compress {
                            path,
                            diff_id: id.clone(),
                        },
                        urls: l.urls.clone(),
                        what,
                    });
                } else {
                    layers.push(self.blob_ref(l, what));
                }
            }
            Ok(Some(Node::Manifest(ManifestNode {
                original: Some((m.bytes, m.digest)),
                media_type,
                config,
                layers,
            })))
        })
    }

    async fn index(
        &mut self,
        m: FetchedManifest,
        mut value: Value,
        media_type: String,
        platform: Option<String>,
        depth: usize,
        filter: bool,
    ) -> anyhow::Result<Option<Node>> {
        let raw_entries: Vec<Value> = value
            .get("manifests")
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default();
        let mut kept_values = Vec::new();
        let mut entries = Vec::new();
        let mut children = Vec::new();
        let mut changed = false;
        let mut available = Vec::new();
        for raw in raw_entries {
            let e: SourceDescriptor = serde_json::from_value(raw.clone()).with_context(|| {
                format!(
                    "{}: image index {} has an invalid entry",
                    self.label, m.digest
                )
            })?;
            let label = e.platform_str();
            if let Some(l) = &label {
                available.push(l.clone());
            }
            if !keep_entry(&e, self.platforms, filter) {
                changed = true;
                continue;
            }
            let node = match self.built.get(&e.digest) {
                Some(built) => built.clone(),
                None => {
                    let child =
                        self.manifests.get(&e.digest).cloned().with_context(|| {
                            format!("internal error: {} was not fetched", e.digest)
                        })?;
                    self.tree.push(e.digest.clone());
                    let p = label.or_else(|| platform.clone());
                    let node = self
                        .node(child, e.media_type.clone(), p, depth + 1, filter)
                        .await?
                        .map(Arc::new);
                    self.built.insert(e.digest.clone(), node.clone());
                    node
                }
            };
            // Fetched once, checked here against every entry that lists it.
            let fetched_size = self.manifests.get(&e.digest).map(|m| m.bytes.len() as u64);
            if fetched_size != Some(e.size) {
                bail!(
                    "{}: manifest {} is {} bytes, but image index {} says {}",
                    self.label,
                    e.digest,
                    fetched_size.unwrap_or(0),
                    m.digest,
                    e.size
                );
            }
            let Some(node) = node else {
                changed = true;
                continue;
            };
            let (d, size, mt) = node_descriptor(&node);
            let mut raw = raw;
            if d != e.digest {
                changed = true;
                raw["digest"] = Value::String(d.to_string());
                raw["size"] = Value::from(size);
                raw["mediaType"] = Value::String(mt);
            }
            kept_values.push(raw.clone());
            entries.push(serde_json::from_value::<SourceDescriptor>(raw)?);
            children.push(Some(node));
        }
        if children.is_empty() {
            if depth == 0 {
                let want: Vec<String> = self.platforms.iter().map(|p| p.to_string()).collect();
                bail!(
                    "{}: --platform {} matches none of the image's platforms ({})",
                    self.label,
                    want.join(","),
                    if available.is_empty() {
                        "none listed".to_owned()
                    } else {
                        available.join(", ")
                    }
                );
            }
            return Ok(None);
        }
        let (original, digest) = if changed {
            // Re-serialised from a `Value` (sorted keys), so the same filter of the same index
            // always yields the same bytes and digest.
            value["manifests"] = Value::Array(kept_values);
            let bytes = serde_json::to_vec(&value)?;
            let d = Digest::sha256_of(&bytes);
            (bytes, d)
        } else {
            (m.bytes, m.digest)
        };
        Ok(Some(Node::Index(IndexNode {
            original,
            digest,
            media_type,
            children,
            entries,
        })))
    }
}

mod referrers;

pub use referrers::{write_referrers_indexes, Referrer};

#[cfg(test)]
mod e2e;
#[cfg(test)]
mod graph;
