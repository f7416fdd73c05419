//! Shared by the archive harnesses: turns fuzz input into a tar archive on disk.
//!
//! Raw tar bytes mutate badly (every header has a checksum, every blob a sha256 the manifests
//! name), so most inputs are a small framed list of entries that this builds into a valid tar,
//! filling in digests and sizes on request. An odd first byte instead writes the rest as is, so
//! the tar reader itself (and gzip/zstd detection) sees arbitrary bytes too.
//!
//! Framed entry: `kind u8, name_len u8, name, data_len u16le, data`, repeated. `kind % 4`: 0 file,
//! 1 symlink (data = target), 2 hard link (data = target), 3 directory. Placeholders, with `N` one
//! of `0-9a-z` naming entry N: in names `$N` becomes entry N's sha256 hex; in data (only for
//! entries after this one, so it is well defined) `$N` the hex and `#N` the size in bytes.

use std::io::Write;
use std::path::PathBuf;

use sha2::{Digest as _, Sha256};

const MAX_ENTRIES: usize = 36;

struct Entry {
    kind: u8,
    name: Vec<u8>,
    data: Vec<u8>,
}

fn parse_frames(mut input: &[u8]) -> Vec<Entry> {
    let mut out = Vec::new();
    while input.len() >= 2 && out.len() < MAX_ENTRIES {
        let kind = input[0] % 4;
        let name_len = input[1] as usize;
        input = &input[2..];
        let name = input[..name_len.min(input.len())].to_vec();
        input = &input[name.len()..];
        let data_len = match input {
            [a, b, ..] => u16::from_le_bytes([*a, *b]) as usize,
            _ => 0,
        };
        input = &input[2.min(input.len())..];
        let data = input[..data_len.min(input.len())].to_vec();
        input = &input[data.len()..];
        out.push(Entry { kind, name, data });
    }
    out
}

fn slot(c: u8) -> Option<usize> {
    match c {
        b'0'..=b'9' => Some((c - b'0') as usize),
        b'a'..=b'z' => Some((c - b'a') as usize + 10),
        _ => None,
    }
}

/// Replaces `$N` (and `#N` when `sizes` is given) whose N satisfies `usable`.
fn substitute(
    bytes: &[u8],
    hexes: &[Option<String>],
    sizes: Option<&[usize]>,
    usable: impl Fn(usize) -> bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let n = bytes
            .get(i + 1)
            .and_then(|&c| slot(c))
            .filter(|&n| usable(n));
        match (bytes[i], n) {
            (b'$', Some(n)) if hexes.get(n).is_some_and(Option::is_some) => {
                out.extend_from_slice(hexes[n].as_deref().unwrap_or_default().as_bytes());
                i += 2;
            }
            (b'#', Some(n)) if sizes.is_some_and(|s| n < s.len()) => {
                out.extend_from_slice(sizes.unwrap_or_default()[n].to_string().as_bytes());
                i += 2;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// The tar archive the input describes.
pub fn tar_bytes(input: &[u8]) -> Vec<u8> {
    let Some((&mode, rest)) = input.split_first() else {
        return Vec::new();
    };
    if mode & 1 == 1 {
        return rest.to_vec();
    }
    let mut entries = parse_frames(rest);
    let n = entries.len();
    let mut hexes: Vec<Option<String>> = vec![None; n];
    let mut sizes = vec![0usize; n];
    // Last to first: an entry's data may name only later entries, whose data is final by then.
    for i in (0..n).rev() {
        let data = substitute(&entries[i].data, &hexes, Some(&sizes), |k| k > i && k < n);
        entries[i].data = data;
        if entries[i].kind == 0 {
            hexes[i] = Some(hex::encode(Sha256::digest(&entries[i].data)));
        }
        sizes[i] = entries[i].data.len();
    }
    let mut tar = tar::Builder::new(Vec::new());
    for e in &entries {
        let name = substitute(&e.name, &hexes, None, |k| k < n);
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_mtime(0);
        let (kind, size) = match e.kind {
            0 => (tar::EntryType::Regular, e.data.len()),
            1 => (tar::EntryType::Symlink, 0),
            2 => (tar::EntryType::Link, 0),
            _ => (tar::EntryType::Directory, 0),
        };
        h.set_entry_type(kind);
        h.set_size(size as u64);
        if e.kind == 1 || e.kind == 2 {
            let target = &e.data[..e.data.len().min(100)];
            h.as_old_mut().linkname[..target.len()].copy_from_slice(target);
        }
        let ok = if name.len() <= 100 {
            // Written raw, so `..`, absolute and odd names reach the reader as given.
            h.as_old_mut().name[..name.len()].copy_from_slice(&name);
            h.set_cksum();
            tar.append(&h, &e.data[..size]).is_ok()
        } else {
            let name = String::from_utf8_lossy(&name).into_owned();
            tar.append_data(&mut h, name, &e.data[..size]).is_ok()
        };
        if !ok {
            continue;
        }
    }
    tar.into_inner().unwrap_or_default()
}

/// Writes the archive to a per-process file in memory-backed storage and returns its path.
pub fn write_archive(input: &[u8]) -> PathBuf {
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let path = dir.join(format!("static-registry-fuzz-{}.tar", std::process::id()));
    let mut f = std::fs::File::create(&path).expect("create the archive file");
    f.write_all(&tar_bytes(input))
        .expect("write the archive file");
    path
}

/// With `FUZZ_SHOW` set (e.g. when replaying a corpus with `-runs=0`), prints what each input
/// loaded to: shows whether the inputs reach a whole, valid image.
pub fn show(result: &anyhow::Result<()>) {
    if std::env::var_os("FUZZ_SHOW").is_some() {
        match result {
            Ok(()) => eprintln!("loaded"),
            Err(e) => eprintln!("error: {e:#}"),
        }
    }
}
