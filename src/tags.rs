//! Moving tags by hand and reading where they have been: `static-registry tag REPO:TAG --to …`
//! (retag and roll back, to content the repository already references) and `static-registry
//! history REPO[:TAG]`. A move goes through the same compare-and-swap, immutable-tag check and
//! derived-file writes as a publish (docs/store-care.md, "Tag history").

use anyhow::Context;
use serde::Serialize;

use crate::commit::{try_update_index, write_derived};
use crate::immutable::Immutable;
use crate::index::{Descriptor, RepoIndex, TagMove};
use crate::layout;
use crate::reference::{Digest, RepoName, Tag, TaggedName};
use crate::store::Store;

/// Where `tag --to` points a tag.
#[derive(Debug, Clone)]
pub enum Target {
    Digest(Digest),
    /// Wherever another tag points now (`--to REPO:OTHER`).
    Tag(TaggedName),
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(d) = Digest::parse(s) {
            return Ok(Target::Digest(d));
        }
        s.parse::<TaggedName>()
            .map(Target::Tag)
            .map_err(|e| format!("expected a digest (sha256:…) or REPO:TAG: {e}"))
    }
}

async fn index(store: &dyn Store, name: &RepoName) -> anyhow::Result<RepoIndex> {
    let key = layout::repo_index(name);
    let obj = store
        .get(&key)
        .await?
        .with_context(|| format!("repository {name} does not exist"))?;
    RepoIndex::from_slice(&obj.bytes).with_context(|| format!("{key}: cannot parse"))
}

/// Points `name:tag` at `to`, which `name` must already reference. Returns the previous digest.
pub async fn retag(
    store: &dyn Store,
    name: &RepoName,
    tag: &Tag,
    to: &Target,
    immutable: &Immutable,
) -> anyhow::Result<(Descriptor, Option<Digest>)> {
    let digest = match to {
        Target::Digest(d) => d.clone(),
        Target::Tag(other) => index(store, &other.name)
            .await?
            .tags
            .get(&other.tag)
            .map(|d| d.digest.clone())
            .with_context(|| format!("{other} does not exist"))?,
    };
    let now = jiff::Timestamp::now().as_second();
    let mut result = None;
    try_update_index(store, name, |idx| {
        let entry = idx.manifests.get(&digest).with_context(|| {
            format!("{name} does not reference {digest}: publish it there first (tag only moves to content the repository has)")
        })?;
        let to = Descriptor {
            media_type: entry.media_type.clone(),
            digest: digest.clone(),
            size: entry.size,
            artifact_type: None,
            platform: None,
            annotations: None,
        };
        let previous = idx.tags.get(tag).map(|d| d.digest.clone());
        immutable.check(name, tag, previous.as_ref(), &digest)?;
        idx.set_tag(tag, to.clone(), now);
        // Moved by hand: no longer the mirror's to refresh.
        idx.mirrored.remove(tag);
        result = Some((to, previous));
        Ok(())
    })
    .await?;
    write_derived(store, name, std::slice::from_ref(tag)).await?;
    Ok(result.expect("the change ran"))
}

/// One tag's moves, oldest first (the last is where it points now).
#[derive(Debug, Serialize)]
pub struct TagHistory {
    pub tag: Tag,
    pub moves: Vec<TagMove>,
}

/// The history of every tag of `name`, or of one.
pub async fn history(
    store: &dyn Store,
    name: &RepoName,
    tag: Option<&Tag>,
) -> anyhow::Result<Vec<TagHistory>> {
    let idx = index(store, name).await?;
    let tags: Vec<&Tag> = match tag {
        Some(t) => {
            anyhow::ensure!(idx.tags.contains_key(t), "{name}:{t} does not exist");
            vec![t]
        }
        None => idx.tags.keys().collect(),
    };
    Ok(tags
        .into_iter()
        .map(|t| TagHistory {
            tag: t.clone(),
            moves: idx.history.get(t).cloned().unwrap_or_else(|| {
                // Published before history existed: where it points, since when unknown.
                vec![TagMove {
                    digest: idx.tags[t].digest.clone(),
                    at: 0,
                }]
            }),
        })
        .collect())
}

/// `history` as text: the tag, where it points and since when, then its earlier moves.
pub fn history_text(name: &RepoName, list: &[TagHistory]) -> String {
    let when = |at: i64| match (at, jiff::Timestamp::from_second(at)) {
        (0, _) | (_, Err(_)) => "(before history)".to_owned(),
        (_, Ok(t)) => t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
    };
    let mut out = String::new();
    for h in list {
        let Some(now) = h.moves.last() else { continue };
        out.push_str(&format!(
            "{name}:{}  {}  since {}\n",
            h.tag,
            now.digest,
            when(now.at)
        ));
        for m in h.moves.iter().rev().skip(1) {
            out.push_str(&format!("    was {}  from {}\n", m.digest, when(m.at)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::ManifestEntry;
    use crate::store::LocalStore;

    fn desc(d: &Digest) -> Descriptor {
        Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: d.clone(),
            size: 10,
            artifact_type: None,
            platform: None,
            annotations: None,
        }
    }

    /// A repository that references two images, tagged `1` → a.
    async fn repo(store: &LocalStore) -> (RepoName, Digest, Digest) {
        let name = RepoName::parse("team/app").unwrap();
        let (a, b) = (Digest::sha256_of(b"a"), Digest::sha256_of(b"b"));
        let mut u = RepoIndex::new(name.clone());
        for (d, bytes) in [(&a, b"a"), (&b, b"b")] {
            let path = store.path_of(&layout::manifest(d)).unwrap();
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
            u.manifests.insert(
                d.clone(),
                ManifestEntry {
                    media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                    size: 10,
                },
            );
        }
        u.tags.insert(Tag::parse("1").unwrap(), desc(&a));
        try_update_index(store, &name, |idx| {
            idx.merge(&u);
            Ok(())
        })
        .await
        .unwrap();
        (name, a, b)
    }

    #[tokio::test]
    async fn retag_records_the_move_and_refuses_what_the_repository_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let (name, a, b) = repo(&store).await;
        let one = Tag::parse("1").unwrap();
        let (_, previous) = retag(
            &store,
            &name,
            &one,
            &Target::Digest(b.clone()),
            &Immutable::default(),
        )
        .await
        .unwrap();
        assert_eq!(previous, Some(a.clone()));
        let copy = std::fs::read(dir.path().join(layout::tag_manifest(&name, &one))).unwrap();
        assert_eq!(copy, b"b");
        let h = history(&store, &name, Some(&one)).await.unwrap();
        let digests: Vec<&Digest> = h[0].moves.iter().map(|m| &m.digest).collect();
        assert_eq!(digests, [&a, &b]);
        // Back by tag name: `--to team/app:2` after tagging 2 → a.
        let two = Tag::parse("2").unwrap();
        retag(
            &store,
            &name,
            &two,
            &Target::Digest(a.clone()),
            &Immutable::default(),
        )
        .await
        .unwrap();
        let other: Target = "team/app:2".parse().unwrap();
        retag(&store, &name, &one, &other, &Immutable::default())
            .await
            .unwrap();
        let h = history(&store, &name, Some(&one)).await.unwrap();
        assert_eq!(h[0].moves.last().unwrap().digest, a);
        assert_eq!(h[0].moves.len(), 3);
        // The tag copy follows the index.
        let copy = std::fs::read(dir.path().join(layout::tag_manifest(&name, &one))).unwrap();
        assert_eq!(copy, b"a");
        // Content the repository does not reference: refused, nothing changes.
        let c = Digest::sha256_of(b"c");
        let e = retag(
            &store,
            &name,
            &one,
            &Target::Digest(c),
            &Immutable::default(),
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("does not reference"), "{e}");
        let text = history_text(&name, &history(&store, &name, None).await.unwrap());
        assert!(
            text.contains("team/app:1") && text.contains("was "),
            "{text}"
        );
    }

    #[tokio::test]
    async fn immutable_tags_cannot_be_retagged() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let (name, a, b) = repo(&store).await;
        let rules = Immutable::new(&[crate::immutable::ImmutableRule {
            prefix: "team/".into(),
            tags: vec!["1".into()],
        }]);
        let one = Tag::parse("1").unwrap();
        let e = retag(&store, &name, &one, &Target::Digest(b.clone()), &rules)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("immutable"), "{e}");
        retag(&store, &name, &one, &Target::Digest(a.clone()), &rules)
            .await
            .unwrap();
        assert_eq!(
            history(&store, &name, Some(&one)).await.unwrap()[0]
                .moves
                .len(),
            1
        );
    }

    #[test]
    fn history_is_bounded() {
        let mut idx = RepoIndex::new(RepoName::parse("x/y").unwrap());
        let t = Tag::parse("latest").unwrap();
        for n in 0..50u32 {
            idx.set_tag(&t, desc(&Digest::sha256_of(&n.to_be_bytes())), i64::from(n));
        }
        let h = &idx.history[&t];
        assert_eq!(h.len(), crate::index::MAX_HISTORY);
        assert_eq!(h.last().unwrap().at, 49);
        // The same digest again is no move.
        let current = idx.tags[&t].clone();
        idx.set_tag(&t, current, 99);
        assert_eq!(idx.history[&t].last().unwrap().at, 49);
    }
}
