//! The `docker-archive:FILE[:REPO:TAG]` destination: the shape `docker save` wrote before Docker
//! 25 (`manifest.json`, `<hex>.json`, `<hex>/layer.tar`, `repositories`).

use super::*;

fn tar_header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

fn append_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    bytes: &[u8],
) -> anyhow::Result<()> {
    let mut h = tar_header(bytes.len() as u64);
    tar.append_data(&mut h, path, bytes)
        .with_context(|| format!("cannot add {path} to the archive"))
}

pub(super) async fn export_docker_archive(
    store: Arc<dyn Store>,
    image: Fetched,
    file: &Path,
    tag: Option<TaggedName>,
    what: &str,
) -> anyhow::Result<ExportSummary> {
    let config = image
        .doc
        .config
        .clone()
        .ok_or_else(|| anyhow!("{what}: the manifest has no config"))?;
    let layers = image.doc.layers.clone().unwrap_or_default();
    if let Some(f) = layers.iter().find(|l| l.foreign()) {
        // docker load needs every layer in the archive.
        if store.head(&layout::blob(&f.digest)).await?.is_none() {
            bail!(
                "{what}: layer {} is a foreign layer the store does not have; a docker-archive \
                 needs every layer",
                f.digest
            );
        }
    }
    let config_bytes = {
        let key = layout::blob(&config.digest);
        let obj = store
            .get(&key)
            .await?
            .ok_or_else(|| anyhow!("{key} is missing from the store (run verify)"))?;
        let got = Hasher::digest_like(&config.digest, &obj.bytes);
        if got != config.digest || obj.bytes.len() as u64 != config.size {
            bail!("{key}: content does not match its digest (run verify --deep)");
        }
        obj.bytes
    };
    let diff_ids: Vec<Digest> = serde_json::from_slice::<Value>(&config_bytes)
        .ok()
        .and_then(|c| {
            c["rootfs"]["diff_ids"].as_array().map(|a| {
                a.iter()
                    .filter_map(|d| d.as_str().and_then(|s| Digest::parse(s).ok()))
                    .collect()
            })
        })
        .unwrap_or_default();
    if diff_ids.len() != layers.len() {
        bail!(
            "{what}: the config lists {} diff_ids for {} layers",
            diff_ids.len(),
            layers.len()
        );
    }

    let parent = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let tmp = tempfile::NamedTempFile::new_in(&parent)
        .with_context(|| format!("cannot write in {}", parent.display()))?;
    let handle = tokio::runtime::Handle::current();
    let file = file.to_path_buf();
    let what = what.to_owned();
    let digest = image.digest.clone();
    tokio::task::spawn_blocking(move || {
        let mut summary = ExportSummary {
            reference: what.clone(),
            digest,
            destination: format!(
                "docker-archive:{}{}",
                file.display(),
                tag.as_ref().map(|t| format!(":{t}")).unwrap_or_default()
            ),
            manifests: 0,
            blobs: 1,
            bytes: config_bytes.len() as u64,
            notes: Vec::new(),
        };
        let out = std::io::BufWriter::with_capacity(256 << 10, tmp.as_file().try_clone()?);
        let mut tar = tar::Builder::new(out);
        let config_name = format!("{}.json", config.digest.hex());
        append_bytes(&mut tar, &config_name, &config_bytes)?;
        let mut layer_names = Vec::new();
        let mut written = HashSet::new();
        for (l, diff_id) in layers.iter().zip(&diff_ids) {
            let name = format!("{}/layer.tar", l.digest.hex());
            layer_names.push(name.clone());
            if !written.insert(name.clone()) {
                continue;
            }
            let key = layout::blob(&l.digest);
            let stream = handle
                .block_on(store.get_stream(&key))?
                .ok_or_else(|| anyhow!("{key} is missing from the store (run verify)"))?;
            // Read from this blocking thread: the tar writer is synchronous.
            let reader = tokio_util::io::SyncIoBridge::new_with_handle(stream, handle.clone());
            let written_size = if l.media_type == media::OCI_LAYER_ZSTD {
                append_decompressed(&mut tar, &name, reader, l, diff_id)?
            } else {
                let mut hr = HashingReader::new(reader.take(l.size), l.digest.algorithm());
                let mut h = tar_header(l.size);
                tar.append_data(&mut h, &name, &mut hr)
                    .with_context(|| format!("cannot add {key} to the archive"))?;
                let (got, n) = hr.finish();
                if got != l.digest || n != l.size {
                    bail!(
                        "{key}: {n} bytes hashing to {got}, expected {} bytes (run verify --deep)",
                        l.size
                    );
                }
                l.size
            };
            summary.blobs += 1;
            summary.bytes += written_size;
        }
        let repo_tags: Vec<String> = tag.iter().map(|t| t.to_string()).collect();
        let manifest = json!([{
            "Config": config_name,
            "RepoTags": repo_tags,
            "Layers": layer_names,
        }]);
        append_bytes(&mut tar, "manifest.json", &serde_json::to_vec(&manifest)?)?;
        // The pre-manifest.json index: repository -> tag -> top layer id. Loaders use
        // manifest.json; this keeps the file complete for the old ones.
        let mut repos: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        if let (Some(t), Some(top)) = (&tag, layers.last()) {
            repos
                .entry(t.name.to_string())
                .or_default()
                .insert(t.tag.to_string(), top.digest.hex().to_owned());
        }
        append_bytes(&mut tar, "repositories", &serde_json::to_vec(&repos)?)?;
        let mut out = tar.into_inner().context("cannot finish the archive")?;
        out.flush()?;
        drop(out);
        tmp.as_file().sync_data()?;
        tmp.persist(&file)
            .map_err(|e| e.error)
            .with_context(|| format!("cannot write {}", file.display()))?;
        anyhow::Ok(summary)
    })
    .await?
}

/// Decompresses a zstd layer into a temporary file (a tar entry needs its size up front),
/// checking its `diff_id`, then appends it.
fn append_decompressed<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    reader: impl Read,
    l: &Descriptor,
    diff_id: &Digest,
) -> anyhow::Result<u64> {
    let key = layout::blob(&l.digest);
    let mut compressed = HashingReader::new(reader.take(l.size), l.digest.algorithm());
    let mut tmp = tempfile::tempfile()?;
    let (plain_digest, plain_size) = {
        let dec = zstd::stream::read::Decoder::new(&mut compressed)
            .with_context(|| format!("{key}: not zstd"))?;
        let mut plain = HashingReader::new(dec, diff_id.algorithm());
        std::io::copy(&mut plain, &mut tmp).with_context(|| format!("decompressing {key}"))?;
        plain.finish()
    };
    // Drain whatever the decoder did not need, so the compressed digest covers every byte.
    std::io::copy(&mut compressed, &mut std::io::sink())?;
    let (got, n) = compressed.finish();
    if got != l.digest || n != l.size {
        bail!("{key}: content does not match its digest (run verify --deep)");
    }
    if plain_digest != *diff_id {
        bail!("{key}: decompresses to {plain_digest}, but the config says {diff_id}");
    }
    use std::io::Seek;
    tmp.seek(std::io::SeekFrom::Start(0))?;
    let mut h = tar_header(plain_size);
    tar.append_data(&mut h, name, &mut tmp)
        .with_context(|| format!("cannot add {key} to the archive"))?;
    Ok(plain_size)
}
