//! Referrers (signatures, attestations, SBOMs) of a mirrored image: found through the referrers
//! API or its tag fallbacks (cosign's `sha256-<hex>.sig` tags), and written after the commit as
//! the static `_referrers/<subject>` indexes the endpoint serves.

use super::*;

/// cosign's tag suffixes for signatures, attestations and SBOMs.
const COSIGN_SUFFIXES: [&str; 3] = ["sig", "att", "sbom"];

/// An artifact that refers to a manifest of the image (a signature, an SBOM…).
#[derive(Debug)]
pub struct Referrer {
    pub subject: Digest,
    pub descriptor: Descriptor,
    pub node: Node,
}

/// The static referrers index (an OCI image index) for one subject; fixed field order, so the
/// same list always gives the same bytes.
pub fn referrers_index_bytes(list: &[Descriptor]) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct ReferrersIndex<'a> {
        schema_version: u32,
        media_type: &'static str,
        manifests: &'a [Descriptor],
    }
    serde_json::to_vec_pretty(&ReferrersIndex {
        schema_version: 2,
        media_type: media::OCI_INDEX,
        manifests: list,
    })
    .expect("referrers index serialises")
}

/// Writes `_referrers/<subject>` for each subject from the committed (merged) index, so the file
/// lists what every publish so far added, not only this one.
pub async fn write_referrers_indexes(
    store: &dyn Store,
    committed: &RepoIndex,
    subjects: impl Iterator<Item = &Digest>,
) -> anyhow::Result<()> {
    for subject in subjects {
        let Some(list) = committed.referrers.get(subject) else {
            continue;
        };
        let key = layout::referrers(&committed.name, subject);
        let opts = PutOptions {
            content_type: media::OCI_INDEX.to_owned(),
            cache_control: layout::CACHE_INDEX,
            mode: PutMode::Overwrite,
        };
        store
            .put(&key, Bytes::from(referrers_index_bytes(list)), &opts)
            .await
            .with_context(|| format!("cannot write {key}"))?;
        tracing::debug!("wrote {key}");
    }
    Ok(())
}

impl Loader<'_> {
    /// Referrers of every subject, from the referrers API or its tag fallbacks.
    pub(super) async fn referrers(
        &mut self,
        subjects: &[Digest],
    ) -> anyhow::Result<(Vec<Referrer>, Vec<(Tag, Descriptor)>)> {
        let mut out: Vec<Referrer> = Vec::new();
        let mut tags = Vec::new();
        let mut seen: HashSet<(Digest, Digest)> = HashSet::new();
        let mut done: HashSet<Digest> = HashSet::new();
        for subject in subjects {
            if !done.insert(subject.clone()) {
                continue;
            }
            let tag_base = format!("{}-{}", subject.algorithm().as_str(), subject.hex());
            let listed = match self.client.referrers(subject).await? {
                Some(list) => list,
                None => match Tag::parse(&tag_base) {
                    Ok(t) => match self.client.manifest_opt(t.as_str(), None).await? {
                        Some(idx) => serde_json::from_slice::<Value>(&idx.bytes)
                            .ok()
                            .and_then(|v| v.get("manifests").and_then(|m| m.as_array()).cloned())
                            .unwrap_or_default(),
                        None => Vec::new(),
                    },
                    Err(_) => Vec::new(),
                },
            };
            let mut found: Vec<(Value, Option<Tag>)> =
                listed.into_iter().map(|v| (v, None)).collect();
            for suffix in COSIGN_SUFFIXES {
                let Ok(tag) = Tag::parse(&format!("{tag_base}.{suffix}")) else {
                    continue;
                };
                if let Some(fm) = self.client.manifest_opt(tag.as_str(), None).await? {
                    let v: Value = serde_json::from_slice(&fm.bytes).unwrap_or(Value::Null);
                    let mt = media::of_manifest(&v, &fm.media_type);
                    found.push((
                        serde_json::json!({
                            "mediaType": mt,
                            "digest": fm.digest,
                            "size": fm.bytes.len(),
                        }),
                        Some(tag),
                    ));
                }
            }
            for (entry, tag) in found {
                let e: SourceDescriptor = match serde_json::from_value(entry.clone()) {
                    Ok(e) => e,
                    Err(_) => {
                        tracing::warn!(
                            "{}: skipping an invalid referrer entry of {subject}",
                            self.label
                        );
                        continue;
                    }
                };
                let fm = self.fetch(&e.digest).await?;
                if fm.bytes.len() as u64 != e.size {
                    bail!(
                        "{}: referrer {} is {} bytes, the listing says {}",
                        self.label,
                        e.digest,
                        fm.bytes.len(),
                        e.size
                    );
                }
                let v: Value = serde_json::from_slice(&fm.bytes).unwrap_or(Value::Null);
                let media_type = media::of_manifest(&v, &e.media_type);
                let artifact_type = entry
                    .get("artifactType")
                    .and_then(|a| a.as_str())
                    .or_else(|| v.get("artifactType").and_then(|a| a.as_str()))
                    .map(str::to_owned)
                    .or_else(|| {
                        // Older artifacts (cosign) say what they are in the config or layer type.
                        let cfg = v["config"]["mediaType"].as_str().unwrap_or("");
                        if !cfg.is_empty()
                            && cfg != media::OCI_CONFIG
                            && cfg != media::DOCKER_CONFIG
                        {
                            Some(cfg.to_owned())
                        } else {
                            v["layers"][0]["mediaType"].as_str().map(str::to_owned)
                        }
                    });
                let descriptor = Descriptor {
                    media_type: media_type.clone(),
                    digest: e.digest.clone(),
                    size: e.size,
                    artifact_type,
                    platform: None,
                    annotations: e.annotations.clone().or_else(|| {
                        v.get("annotations")
                            .and_then(|a| serde_json::from_value(a.clone()).ok())
                    }),
                };
                if let Some(t) = tag {
                    tags.push((t, descriptor.clone()));
                }
                if !seen.insert((subject.clone(), e.digest.clone())) {
                    continue;
                }
                self.fetch_graph(&fm, false).await?;
                let Some(node) = self.node(fm, media_type, None, 1, false).await? else {
                    continue;
                };
                out.push(Referrer {
                    subject: subject.clone(),
                    descriptor,
                    node,
                });
            }
        }
        Ok((out, tags))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn referrers_index_is_deterministic() {
        let d = |s: &[u8]| Descriptor {
            media_type: media::OCI_MANIFEST.into(),
            digest: Digest::sha256_of(s),
            size: 3,
            artifact_type: Some("application/example".into()),
            platform: None,
            annotations: None,
        };
        let list = vec![d(b"a"), d(b"b")];
        let a = referrers_index_bytes(&list);
        assert_eq!(a, referrers_index_bytes(&list));
        let v: Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(v["mediaType"], media::OCI_INDEX);
        assert_eq!(v["schemaVersion"], 2);
        assert_eq!(v["manifests"][0]["artifactType"], "application/example");
    }
}
