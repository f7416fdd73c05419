//! The `oci:DIR[:TAG]` destination: manifests and blobs byte-for-byte into an OCI image layout
//! (Docker media types converted as `skopeo copy` does), and the `index.json` entry for `TAG`.

use super::*;

/// Writes `root` and what it reaches; `fetched` holds every manifest below it, from the walk.
pub(super) async fn export_oci(
    store: Arc<dyn Store>,
    root: Fetched,
    fetched: HashMap<Digest, Fetched>,
    dir: &Path,
    ref_name: Option<String>,
    what: &str,
) -> anyhow::Result<ExportSummary> {
    let blobs_dir = dir.join("blobs");
    tokio::fs::create_dir_all(&blobs_dir)
        .await
        .with_context(|| format!("cannot create {}", blobs_dir.display()))?;
    let layout_file = dir.join("oci-layout");
    if !layout_file.exists() {
        write_file(&layout_file, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    }
    let mut summary = ExportSummary {
        reference: what.to_owned(),
        digest: root.digest.clone(),
        destination: format!(
            "oci:{}{}",
            dir.display(),
            ref_name
                .as_deref()
                .map(|r| format!(":{r}"))
                .unwrap_or_default()
        ),
        manifests: 0,
        blobs: 0,
        bytes: 0,
        notes: Vec::new(),
    };
    let store_digest = root.digest.clone();
    let mut ctx = OciCtx {
        store: store.as_ref(),
        dir,
        summary: &mut summary,
        seen: HashSet::new(),
        fetched,
        written: HashMap::new(),
    };
    let top = write_tree(&mut ctx, &root).await?;
    if top.digest != store_digest {
        summary.notes.push(format!(
            "Docker media types were converted to OCI ones, as `skopeo copy` does (skopeo and \
             containers/image read only OCI types from a layout): the layout's manifest is {}, \
             the store's {store_digest}; configs and layers are byte-for-byte",
            top.digest
        ));
    }
    let root_desc = json!({
        "mediaType": top.media_type,
        "digest": top.digest,
        "size": top.size,
    });

    // index.json: replace the entry carrying the same ref.name (or the same digest, unnamed).
    let index_path = dir.join("index.json");
    let mut index: Value = match std::fs::read(&index_path) {
        Ok(b) => serde_json::from_slice(&b)
            .with_context(|| format!("{}: not an OCI index", index_path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": []})
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", index_path.display())),
    };
    let mut desc = root_desc;
    if let Some(r) = &ref_name {
        desc["annotations"] = json!({ REF_NAME: r });
    }
    let entries = index["manifests"]
        .as_array_mut()
        .ok_or_else(|| anyhow!("{}: has no manifests array", index_path.display()))?;
    entries.retain(|e| match &ref_name {
        Some(r) => e["annotations"][REF_NAME].as_str() != Some(r),
        None => !(e["digest"] == desc["digest"] && e["annotations"][REF_NAME].is_null()),
    });
    entries.push(desc);
    write_file(&index_path, &serde_json::to_vec_pretty(&index)?)?;
    Ok(summary)
}

/// Shared by the steps of one `oci:` export.
struct OciCtx<'a> {
    store: &'a dyn Store,
    dir: &'a Path,
    summary: &'a mut ExportSummary,
    /// Blobs already written.
    seen: HashSet<Digest>,
    /// Every manifest below the root, fetched by the walk.
    fetched: HashMap<Digest, Fetched>,
    /// Manifests already written, by store digest: each is written once.
    written: HashMap<Digest, Written>,
}

/// Where one manifest of the tree ended up in the layout.
#[derive(Clone)]
struct Written {
    media_type: String,
    digest: Digest,
    size: u64,
}

/// Writes a manifest, its children and its blobs into the layout, children first. OCI
/// manifests are written byte-for-byte; Docker ones get OCI media types (and so new digests),
/// and an index whose children changed is rewritten to name them.
fn write_tree<'a>(
    ctx: &'a mut OciCtx<'_>,
    m: &'a Fetched,
) -> futures::future::BoxFuture<'a, anyhow::Result<Written>> {
    Box::pin(async move {
        if let Some(w) = ctx.written.get(&m.digest) {
            return Ok(w.clone());
        }
        let mut doc: Value = serde_json::from_slice(&m.bytes)?;
        let mut changed = false;
        for (i, c) in m.doc.children().enumerate() {
            // The walk fetched (and checked) each child once, against the first descriptor
            // that listed it; every other listing must agree on its size.
            let child = ctx
                .fetched
                .remove(&c.digest)
                .ok_or_else(|| anyhow!("internal error: {} was not fetched", c.digest))?;
            if child.bytes.len() as u64 != c.size {
                bail!(
                    "{}: lists {} with size {}, but it is {} bytes (run verify)",
                    layout::manifest(&m.digest),
                    c.digest,
                    c.size,
                    child.bytes.len()
                );
            }
            let w = write_tree(ctx, &child).await;
            ctx.fetched.insert(c.digest.clone(), child);
            let w = w?;
            if w.digest != c.digest || w.media_type != c.media_type {
                let d = &mut doc["manifests"][i];
                d["mediaType"] = json!(w.media_type);
                d["digest"] = json!(w.digest);
                d["size"] = json!(w.size);
                changed = true;
            }
        }
        for b in m.doc.config.iter().chain(m.doc.layers.iter().flatten()) {
            if !ctx.seen.insert(b.digest.clone()) {
                continue;
            }
            let dest = oci_blob_path(ctx.dir, &b.digest);
            if file_size(&dest) == Some(b.size) {
                continue;
            }
            let key = layout::blob(&b.digest);
            if b.foreign() && ctx.store.head(&key).await?.is_none() {
                ctx.summary.notes.push(format!(
                    "{} is a foreign layer the store does not have; left out, as OCI layouts allow",
                    b.digest
                ));
                continue;
            }
            copy_blob(ctx.store, b, &dest).await?;
            ctx.summary.blobs += 1;
            ctx.summary.bytes += b.size;
        }
        let mut convert = |v: &mut Value| {
            if let Some(t) = v["mediaType"].as_str().and_then(media::docker_to_oci) {
                v["mediaType"] = json!(t);
                changed = true;
            }
        };
        if doc.get("config").is_some() {
            convert(&mut doc["config"]);
        }
        if let Some(layers) = doc.get_mut("layers").and_then(|l| l.as_array_mut()) {
            layers.iter_mut().for_each(&mut convert);
        }
        let mut media_type = m.media_type.clone();
        if let Some(t) = media::docker_to_oci(&m.media_type) {
            doc["mediaType"] = json!(t);
            media_type = t.to_owned();
            changed = true;
        }
        let bytes = if changed {
            Bytes::from(serde_json::to_vec(&doc)?)
        } else {
            m.bytes.clone()
        };
        let digest = if changed {
            Digest::sha256_of(&bytes)
        } else {
            m.digest.clone()
        };
        write_file(&oci_blob_path(ctx.dir, &digest), &bytes)?;
        ctx.summary.manifests += 1;
        ctx.summary.bytes += bytes.len() as u64;
        let w = Written {
            media_type,
            digest,
            size: bytes.len() as u64,
        };
        ctx.written.insert(m.digest.clone(), w.clone());
        Ok(w)
    })
}

fn oci_blob_path(dir: &Path, d: &Digest) -> PathBuf {
    dir.join("blobs").join(d.algorithm().as_str()).join(d.hex())
}

fn file_size(p: &Path) -> Option<u64> {
    std::fs::metadata(p)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len())
}

/// Writes a whole file through a temporary file and a rename, so an interrupted export never
/// leaves a partial file under a content address.
fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(parent)
        .with_context(|| format!("cannot write in {}", parent.display()))?;
    tmp.write_all(bytes)?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Streams a blob from the store into `dest`, checking digest and size before the rename.
async fn copy_blob(store: &dyn Store, b: &Descriptor, dest: &Path) -> anyhow::Result<()> {
    let key = layout::blob(&b.digest);
    let mut r = store
        .get_stream(&key)
        .await?
        .ok_or_else(|| anyhow!("{key} is missing from the store (run verify)"))?;
    let parent = dest.parent().unwrap_or(Path::new("."));
    tokio::fs::create_dir_all(parent).await?;
    let tmp = tempfile::NamedTempFile::new_in(parent)?;
    let mut out = tokio::fs::File::from_std(tmp.reopen()?);
    let mut h = Hasher::new(b.digest.algorithm());
    let mut n = 0u64;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let k = r
            .read(&mut buf)
            .await
            .with_context(|| format!("reading {key}"))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
        tokio::io::AsyncWriteExt::write_all(&mut out, &buf[..k]).await?;
    }
    tokio::io::AsyncWriteExt::flush(&mut out).await?;
    drop(out);
    let got = h.finish();
    if got != b.digest || n != b.size {
        bail!(
            "{key}: {n} bytes hashing to {got}, expected {} bytes (run verify --deep)",
            b.size
        );
    }
    tmp.persist(dest)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", dest.display()))?;
    Ok(())
}
