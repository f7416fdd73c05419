//! The in-use list: what a platform runs now, one reference a line (`repo:tag`, `repo@digest` or
//! `repo:tag@digest`, optionally after a registry host; `#` comments and blank lines allowed),
//! from a file or stdin. It is hostile
//! input like any other: bounded in size, lines and line length, every reference checked with the
//! reference parsers, and a bad line is an error naming its number.

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context};

use crate::index::RepoIndex;
use crate::reference::{Digest, RepoName, TaggedName};
use crate::registry::reference::split_host;

/// Bytes of an in-use list read at most.
pub const MAX_BYTES: u64 = 16 << 20;
/// References in one list at most.
pub const MAX_ENTRIES: usize = 100_000;
/// Longest line: a repository name (255), a tag (128), a digest (71) and separators.
const MAX_LINE: usize = 512;

/// One reference in the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InUseRef {
    Tag(TaggedName),
    Digest(RepoName, Digest),
}

/// The in-use list, parsed.
#[derive(Debug, Clone, Default)]
pub struct InUse {
    pub refs: Vec<InUseRef>,
}

fn parse_line(line: &str) -> Result<Vec<InUseRef>, String> {
    if line.len() > MAX_LINE {
        return Err(format!("longer than {MAX_LINE} bytes"));
    }
    let (named, digest) = match line.split_once('@') {
        Some((n, d)) => (n, Some(Digest::parse(d).map_err(|e| e.to_string())?)),
        None => (line, None),
    };
    // What a platform runs is usually named with the registry in front
    // (`registry.example.com:5000/team/app:1.0`), which the store does not know. A first
    // component that only looks like a host (`team.x/app`) may also be this store's repository:
    // both readings are kept in use, since keeping more is the safe direction.
    let (host, path) = split_host(named);
    let mut out = named_refs(path, digest.as_ref())?;
    if host.is_some() {
        if let Ok(whole) = named_refs(named, digest.as_ref()) {
            out.extend(whole);
        }
    }
    Ok(out)
}

/// The references `named` (`REPO[:TAG]`) and an optional digest make.
fn named_refs(named: &str, digest: Option<&Digest>) -> Result<Vec<InUseRef>, String> {
    // A tag follows the last ':' after the last '/' (a registry port is not a tag).
    let slash = named.rfind('/').map_or(0, |i| i + 1);
    let tagged = named[slash..].contains(':');
    let mut out = Vec::new();
    let name = if tagged {
        let t: TaggedName = named.parse().map_err(|e| format!("{e}"))?;
        let name = t.name.clone();
        out.push(InUseRef::Tag(t));
        name
    } else {
        RepoName::parse(named).map_err(|e| e.to_string())?
    };
    match digest {
        Some(d) => out.push(InUseRef::Digest(name, d.clone())),
        None if !tagged => return Err("expected REPO:TAG or REPO@DIGEST".into()),
        None => {}
    }
    Ok(out)
}

impl InUse {
    /// Parses a list; the first bad line is an error naming its number.
    pub fn parse(text: &str) -> anyhow::Result<InUse> {
        let mut refs = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let got =
                parse_line(line).map_err(|e| anyhow::anyhow!("in-use list line {}: {e}", n + 1))?;
            refs.extend(got);
            if refs.len() > MAX_ENTRIES {
                bail!("in-use list: more than {MAX_ENTRIES} references");
            }
        }
        Ok(InUse { refs })
    }

    /// Reads a list from `path`, or stdin for `-`.
    pub fn read(path: &Path) -> anyhow::Result<InUse> {
        let mut bytes = Vec::new();
        let what = path.display();
        if path == Path::new("-") {
            std::io::stdin()
                .take(MAX_BYTES + 1)
                .read_to_end(&mut bytes)
                .context("cannot read the in-use list from stdin")?;
        } else {
            std::fs::File::open(path)
                .with_context(|| format!("cannot open the in-use list {what}"))?
                .take(MAX_BYTES + 1)
                .read_to_end(&mut bytes)
                .with_context(|| format!("cannot read the in-use list {what}"))?;
        }
        if bytes.len() as u64 > MAX_BYTES {
            bail!("in-use list {what}: larger than {MAX_BYTES} bytes");
        }
        let text = String::from_utf8(bytes)
            .map_err(|e| anyhow::anyhow!("in-use list {what}: not UTF-8 ({e})"))?;
        Self::parse(&text).with_context(|| format!("{what}"))
    }

    /// The digests in use: those named, and those the named tags point at now in `indexes`. A
    /// digest counts in every repository (a platform may write the registry host into its
    /// references; a digest is the same content wherever it is tagged). Also returns the
    /// references the store has nothing for.
    pub fn digests<'a>(
        &self,
        indexes: impl IntoIterator<Item = &'a RepoIndex>,
    ) -> (HashSet<Digest>, Vec<String>) {
        let indexes: Vec<&RepoIndex> = indexes.into_iter().collect();
        let mut out = HashSet::new();
        let mut unknown = Vec::new();
        for r in &self.refs {
            match r {
                InUseRef::Digest(_, d) => {
                    out.insert(d.clone());
                }
                InUseRef::Tag(t) => {
                    let found = indexes
                        .iter()
                        .find(|i| i.name == t.name)
                        .and_then(|i| i.tags.get(&t.tag));
                    match found {
                        Some(d) => {
                            out.insert(d.digest.clone());
                        }
                        None => unknown.push(format!("in-use {t}: no such tag in this store")),
                    }
                }
            }
        }
        (out, unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_references_comments_or_blank_and_errors_name_the_line() {
        let d = Digest::sha256_of(b"x");
        let text = format!(
            "# deployed now\n\nteam/app:1.0\n  team/app@{d}  \nregistry.example/team/app:2@{d}\n"
        );
        let l = InUse::parse(&text).unwrap();
        // The hosted line reads as `team/app` and, since a repository may be named so, as
        // `registry.example/team/app`: both are kept in use.
        assert_eq!(l.refs.len(), 6, "{l:?}");
        assert_eq!(
            l.refs[1],
            InUseRef::Digest(RepoName::parse("team/app").unwrap(), d.clone())
        );
        // A registry host in front names the same repository path.
        assert_eq!(l.refs[2], InUseRef::Tag("team/app:2".parse().unwrap()));
        let zero = Digest::parse(&format!("sha256:{}", "0".repeat(64))).unwrap();
        let hosted = InUse::parse(&format!(
            "registry.example.com:5000/team/app:1.0\nlocalhost/app@{zero}\nteam.x/app:1\n"
        ))
        .unwrap();
        let tag = |s: &str| InUseRef::Tag(s.parse().unwrap());
        let digest = |n: &str| InUseRef::Digest(RepoName::parse(n).unwrap(), zero.clone());
        assert_eq!(
            hosted.refs,
            [
                // A host with a port cannot be a repository: one reading.
                tag("team/app:1.0"),
                digest("app"),
                digest("localhost/app"),
                tag("app:1"),
                tag("team.x/app:1"),
            ]
        );
        for (bad, line) in [
            ("ok/a:1\nTeam/App:1\n", 2),
            ("a@sha256:zz\n", 1),
            ("\n\nteam/app\n", 3),
            ("a:b:c\n", 1),
            (&format!("a:{}\n", "x".repeat(600)), 1),
        ] {
            let e = InUse::parse(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("line {line}:")), "{bad:?}: {e}");
        }
        let many = "a:1\n".repeat(MAX_ENTRIES + 1);
        assert!(InUse::parse(&many).is_err());
    }
}
