//! What the fixture images (fixtures/, see fixtures/README.md) contain, read from the fixture files
//! themselves, and how to check that a pulled image is the fixture.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{hex_of, manifest_dir, sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// One single-platform image as a fixture has it.
#[derive(Debug, Clone)]
pub struct Image {
    /// The manifest digest, when publish must keep it (compressed OCI sources are published byte
    /// for byte).
    pub manifest: Option<String>,
    /// The manifest's exact bytes, when kept.
    pub manifest_bytes: Option<Vec<u8>>,
    /// The config digest (publish never rewrites the config: the image ID is kept).
    pub config: String,
    /// The layer (blob) digests, when publish must keep them.
    pub layers: Option<Vec<String>>,
    /// `rootfs.diff_ids` of the config: the digests of the uncompressed layers.
    pub diff_ids: Vec<String>,
    pub architecture: String,
    /// How publish must have compressed the layers (a media-type suffix such as `+zstd`).
    pub compression: Option<&'static str>,
}

/// What a pulled fixture must look like.
#[derive(Debug, Clone)]
pub enum Expect {
    /// A single image.
    Image(Image),
    /// An image index and its per-platform images (by architecture).
    Index {
        digest: String,
        bytes: Vec<u8>,
        images: Vec<Image>,
    },
}

impl Expect {
    /// The digest a tag of this fixture points at: the index's, or the image manifest's.
    pub fn top_digest(&self) -> String {
        match self {
            Expect::Index { digest, .. } => digest.clone(),
            Expect::Image(i) => i
                .manifest
                .clone()
                .expect("OCI fixtures keep their manifest"),
        }
    }

    /// The linux/amd64 image (the one single-platform pulls pick on this machine).
    pub fn amd64(&self) -> &Image {
        match self {
            Expect::Image(i) => i,
            Expect::Index { images, .. } => images
                .iter()
                .find(|i| i.architecture == "amd64")
                .expect("fixture index has linux/amd64"),
        }
    }
}

/// A fixture and where a test publishes it.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// Short name for messages.
    pub name: &'static str,
    /// The publish source, relative to the repository root.
    pub source: &'static str,
    /// `--tag` arguments (empty: the archive's own tag).
    pub tags: Vec<&'static str>,
    /// Other publish flags.
    pub flags: Vec<&'static str>,
    /// `REPO:TAG` to pull.
    pub pull_ref: &'static str,
    pub expect: Expect,
}

impl Fixture {
    pub fn repo(&self) -> &str {
        self.pull_ref.rsplit_once(':').expect("REPO:TAG").0
    }
    pub fn tag(&self) -> &str {
        self.pull_ref.rsplit_once(':').expect("REPO:TAG").1
    }
}

/// Every fixture, published as the pull tests do: each under its own repository.
pub fn all() -> Vec<Fixture> {
    vec![
        Fixture {
            name: "oci-single",
            source: "oci:fixtures/oci-single:1.0",
            tags: vec!["fix/oci-single:1.0"],
            flags: vec![],
            pull_ref: "fix/oci-single:1.0",
            expect: oci_single(),
        },
        Fixture {
            name: "oci-archive",
            source: "oci-archive:fixtures/oci-archive.tar:1.0",
            tags: vec!["fix/oci-archive:1.0"],
            flags: vec![],
            pull_ref: "fix/oci-archive:1.0",
            expect: oci_archive(),
        },
        Fixture {
            name: "docker-legacy (own tag)",
            source: "docker-archive:fixtures/docker-legacy.tar",
            tags: vec![],
            flags: vec![],
            pull_ref: "legacy/hello:1.0",
            expect: docker_legacy(),
        },
        Fixture {
            name: "docker-legacy (--tag)",
            source: "docker-archive:fixtures/docker-legacy.tar",
            tags: vec!["fix/docker-legacy:explicit"],
            flags: vec![],
            pull_ref: "fix/docker-legacy:explicit",
            expect: docker_legacy(),
        },
        Fixture {
            name: "docker-legacy (zstd)",
            source: "docker-archive:fixtures/docker-legacy.tar",
            tags: vec!["fix/docker-legacy:zstd"],
            flags: vec!["--compression", "zstd"],
            pull_ref: "fix/docker-legacy:zstd",
            expect: docker_legacy_zstd(),
        },
        Fixture {
            name: "docker-25 (own tag)",
            source: "docker-archive:fixtures/docker-25.tar",
            tags: vec![],
            flags: vec![],
            pull_ref: "modern/hello:2.0",
            expect: docker_25(),
        },
        Fixture {
            name: "oci-multi",
            source: "oci:fixtures/oci-multi:latest",
            tags: vec!["fix/multi:latest"],
            flags: vec![],
            pull_ref: "fix/multi:latest",
            expect: oci_multi(),
        },
    ]
}

/// Publishes every fixture of [`all`] into `store`.
pub fn publish_all(store: &Path) -> Vec<Fixture> {
    let fixtures = all();
    for f in &fixtures {
        super::publish_with(store, f.source, &f.tags, &f.flags);
    }
    fixtures
}

fn json(bytes: &[u8], what: &str) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{what} is not JSON: {e}"))
}

fn str_list(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_str().expect("string").to_owned())
        .collect()
}

/// Reads a file of an OCI layout (a directory or the members of a tar).
type ReadFile<'a> = dyn Fn(&str) -> Vec<u8> + 'a;

fn blob_path(digest: &str) -> String {
    format!("blobs/sha256/{}", super::hex_of(digest))
}

/// The image a manifest (in an OCI layout) describes.
fn oci_image(read: &ReadFile<'_>, manifest: &str, keep_layers: bool) -> Image {
    let bytes = read(&blob_path(manifest));
    assert_eq!(sha256(&bytes), manifest, "fixture manifest hash");
    let m = json(&bytes, manifest);
    let config = m["config"]["digest"]
        .as_str()
        .expect("config digest")
        .to_owned();
    let cfg = json(&read(&blob_path(&config)), &config);
    let layers: Vec<String> = m["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("layer digest").to_owned())
        .collect();
    Image {
        manifest: keep_layers.then(|| manifest.to_owned()),
        manifest_bytes: keep_layers.then_some(bytes),
        config,
        layers: keep_layers.then_some(layers),
        diff_ids: str_list(&cfg["rootfs"]["diff_ids"]),
        architecture: cfg["architecture"]
            .as_str()
            .expect("architecture")
            .to_owned(),
        compression: None,
    }
}

/// The descriptor `index.json` names `tag`.
fn oci_ref(read: &ReadFile<'_>, tag: &str) -> Value {
    let index = json(&read("index.json"), "index.json");
    index["manifests"]
        .as_array()
        .expect("index.json manifests")
        .iter()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("fixture has no ref {tag}"))
        .clone()
}

fn dir_reader(dir: &Path) -> impl Fn(&str) -> Vec<u8> + '_ {
    move |p: &str| {
        std::fs::read(dir.join(p)).unwrap_or_else(|e| panic!("read {}/{p}: {e}", dir.display()))
    }
}

/// All regular files of a tar, by member path (without a leading `./`).
pub fn tar_members(path: &Path) -> HashMap<String, Vec<u8>> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut archive = tar::Archive::new(file);
    let mut out = HashMap::new();
    for entry in archive.entries().expect("tar entries") {
        let mut entry = entry.expect("tar entry");
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .expect("member path")
            .to_string_lossy()
            .into_owned();
        let name = name.trim_start_matches("./").to_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).expect("read tar member");
        out.insert(name, bytes);
    }
    out
}

fn map_reader(members: &HashMap<String, Vec<u8>>) -> impl Fn(&str) -> Vec<u8> + '_ {
    move |p: &str| {
        members
            .get(p)
            .unwrap_or_else(|| panic!("archive has no member {p}"))
            .clone()
    }
}

pub fn oci_single() -> Expect {
    let dir = manifest_dir().join("fixtures/oci-single");
    let read = dir_reader(&dir);
    let d = oci_ref(&read, "1.0");
    Expect::Image(oci_image(&read, d["digest"].as_str().unwrap(), true))
}

pub fn oci_archive() -> Expect {
    let members = tar_members(&manifest_dir().join("fixtures/oci-archive.tar"));
    let read = map_reader(&members);
    let d = oci_ref(&read, "1.0");
    Expect::Image(oci_image(&read, d["digest"].as_str().unwrap(), true))
}

pub fn oci_multi() -> Expect {
    let dir = manifest_dir().join("fixtures/oci-multi");
    let read = dir_reader(&dir);
    let d = oci_ref(&read, "latest");
    assert_eq!(d["mediaType"], OCI_INDEX, "oci-multi:latest is an index");
    let digest = d["digest"].as_str().unwrap().to_owned();
    let bytes = read(&blob_path(&digest));
    assert_eq!(sha256(&bytes), digest);
    let index = json(&bytes, "oci-multi index");
    let images = index["manifests"]
        .as_array()
        .expect("index manifests")
        .iter()
        .map(|m| {
            let img = oci_image(&read, m["digest"].as_str().unwrap(), true);
            assert_eq!(m["platform"]["architecture"], img.architecture.as_str());
            img
        })
        .collect();
    Expect::Index {
        digest,
        bytes,
        images,
    }
}

/// A `docker save` tarball: layers are uncompressed, so publish compresses them and only the
/// config (hence the image ID and the diff_ids) stays the same.
fn docker_archive(file: &str) -> Expect {
    let members = tar_members(&manifest_dir().join("fixtures").join(file));
    let manifest = json(&members["manifest.json"], "manifest.json");
    let config_path = manifest[0]["Config"].as_str().expect("Config").to_owned();
    let config_bytes = &members[&config_path];
    let cfg = json(config_bytes, &config_path);
    let diff_ids = str_list(&cfg["rootfs"]["diff_ids"]);
    // The fixture's own consistency: each layer tar hashes to its diff_id.
    let layers = manifest[0]["Layers"].as_array().expect("Layers");
    assert_eq!(layers.len(), diff_ids.len());
    for (l, d) in layers.iter().zip(&diff_ids) {
        assert_eq!(&sha256(&members[l.as_str().unwrap()]), d, "{file}: {l}");
    }
    Expect::Image(Image {
        manifest: None,
        manifest_bytes: None,
        config: sha256(config_bytes),
        layers: None,
        diff_ids,
        architecture: cfg["architecture"]
            .as_str()
            .expect("architecture")
            .to_owned(),
        compression: None,
    })
}

pub fn docker_legacy() -> Expect {
    docker_archive("docker-legacy.tar")
}

/// docker-legacy published with `--compression zstd`.
pub fn docker_legacy_zstd() -> Expect {
    let Expect::Image(mut img) = docker_legacy() else {
        unreachable!("one image")
    };
    img.compression = Some("+zstd");
    Expect::Image(img)
}

pub fn docker_25() -> Expect {
    docker_archive("docker-25.tar")
}

/// Decompresses a layer blob by its magic bytes (gzip, zstd, or an uncompressed tar).
pub fn decompress(blob: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    if blob.starts_with(&[0x1f, 0x8b]) {
        flate2::read::MultiGzDecoder::new(blob)
            .read_to_end(&mut out)
            .map_err(|e| format!("gunzip: {e}"))?;
        Ok(out)
    } else if blob.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::stream::decode_all(blob).map_err(|e| format!("unzstd: {e}"))
    } else {
        Ok(blob.to_vec())
    }
}

/// Whether a media type says its layer is compressed, and the layer's bytes agree.
fn check_layer_encoding(media_type: &str, blob: &[u8]) -> Result<(), String> {
    let gzip = blob.starts_with(&[0x1f, 0x8b]);
    let zstd = blob.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
    let ok = if media_type.ends_with("gzip") {
        gzip
    } else if media_type.ends_with("zstd") {
        zstd
    } else {
        !gzip && !zstd
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "layer media type {media_type} does not match its bytes (gzip={gzip}, zstd={zstd})"
        ))
    }
}

/// Fetches content a client pulled, by digest.
pub type Fetch<'a> = dyn FnMut(&str) -> Result<Vec<u8>, String> + 'a;

fn fetch_verified(fetch: &mut Fetch<'_>, digest: &str) -> Result<Vec<u8>, String> {
    let bytes = fetch(digest)?;
    let got = sha256(&bytes);
    if got != digest {
        return Err(format!("content {digest} hashes to {got}"));
    }
    Ok(bytes)
}

/// Which platforms of an index a client was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platforms {
    /// Every platform (`--all`, `--all-platforms`).
    All,
    /// Only the linux/amd64 image, with the index itself pulled too (podman, ctr).
    Amd64,
    /// The client resolved the index to linux/amd64 and kept only that manifest (skopeo without
    /// `--all`): the top manifest is the amd64 image's.
    Resolved(&'static str),
}

/// Checks that what a client pulled (`top` = the digest it pulled, `fetch` = its content) is the
/// fixture: digests, bytes, and every layer decompressing to its diff_id.
pub fn check_pulled(
    expect: &Expect,
    top: &str,
    platforms: Platforms,
    fetch: &mut Fetch<'_>,
) -> Result<(), String> {
    match (expect, platforms) {
        (Expect::Index { images, .. }, Platforms::Resolved(arch)) => {
            let img = images
                .iter()
                .find(|i| i.architecture == arch)
                .ok_or_else(|| format!("fixture has no {arch} image"))?;
            check_image(img, top, fetch)
        }
        (Expect::Image(img), _) => check_image(img, top, fetch),
        (
            Expect::Index {
                digest,
                bytes,
                images,
            },
            platforms,
        ) => {
            if top != digest {
                return Err(format!("pulled {top}, want the fixture's index {digest}"));
            }
            let got = fetch_verified(fetch, top)?;
            if &got != bytes {
                return Err("the pulled index differs from the fixture's bytes".into());
            }
            let index = json(&got, "pulled index");
            let mut seen = Vec::new();
            for m in index["manifests"]
                .as_array()
                .ok_or("index without manifests")?
            {
                let arch = m["platform"]["architecture"].as_str().unwrap_or("?");
                if platforms == Platforms::Amd64 && arch != "amd64" {
                    continue;
                }
                let img = images
                    .iter()
                    .find(|i| i.architecture == arch)
                    .ok_or_else(|| format!("pulled index lists unexpected platform {arch}"))?;
                let d = m["digest"].as_str().ok_or("descriptor without digest")?;
                check_image(img, d, fetch).map_err(|e| format!("{arch}: {e}"))?;
                seen.push(arch.to_owned());
            }
            let want: Vec<String> = match platforms {
                Platforms::Amd64 => vec!["amd64".into()],
                _ => images.iter().map(|i| i.architecture.clone()).collect(),
            };
            if seen != want {
                return Err(format!("checked platforms {seen:?}, want {want:?}"));
            }
            Ok(())
        }
    }
}

fn check_image(img: &Image, digest: &str, fetch: &mut Fetch<'_>) -> Result<(), String> {
    if let Some(want) = &img.manifest {
        if digest != want {
            return Err(format!(
                "pulled manifest {digest}, want the fixture's {want}"
            ));
        }
    }
    let bytes = fetch_verified(fetch, digest)?;
    if let Some(want) = &img.manifest_bytes {
        if &bytes != want {
            return Err(format!(
                "manifest {digest}: bytes differ from the fixture's"
            ));
        }
    }
    let m = json(&bytes, digest);
    let config = m["config"]["digest"]
        .as_str()
        .ok_or("manifest without config")?;
    if config != img.config {
        return Err(format!(
            "config {config}, want the fixture's {}",
            img.config
        ));
    }
    let cfg = json(&fetch_verified(fetch, config)?, config);
    let diff_ids = str_list(&cfg["rootfs"]["diff_ids"]);
    if diff_ids != img.diff_ids {
        return Err(format!("diff_ids {diff_ids:?}, want {:?}", img.diff_ids));
    }
    let layers = m["layers"].as_array().ok_or("manifest without layers")?;
    let digests: Vec<String> = layers
        .iter()
        .map(|l| l["digest"].as_str().unwrap_or("").to_owned())
        .collect();
    if let Some(want) = &img.layers {
        if &digests != want {
            return Err(format!("layers {digests:?}, want {want:?}"));
        }
    }
    if layers.len() != img.diff_ids.len() {
        return Err(format!(
            "{} layers for {} diff_ids",
            layers.len(),
            img.diff_ids.len()
        ));
    }
    for ((l, d), diff_id) in layers.iter().zip(&digests).zip(&img.diff_ids) {
        let blob = fetch_verified(fetch, d)?;
        let media_type = l["mediaType"].as_str().unwrap_or("");
        check_layer_encoding(media_type, &blob).map_err(|e| format!("layer {d}: {e}"))?;
        if let Some(suffix) = img.compression {
            if !media_type.ends_with(suffix) {
                return Err(format!("layer {d} is {media_type}, want a {suffix} layer"));
            }
        }
        if img.layers.is_none() && d == diff_id {
            return Err(format!(
                "layer {d} is stored uncompressed (its digest is its diff_id); publish compresses \
                 archive layers"
            ));
        }
        let tar = decompress(&blob).map_err(|e| format!("layer {d}: {e}"))?;
        let got = sha256(&tar);
        if &got != diff_id {
            return Err(format!(
                "layer {d} decompresses to {got}, want diff_id {diff_id}"
            ));
        }
    }
    Ok(())
}

/// Deterministic incompressible bytes (xorshift64).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// An OCI layout with one linux/amd64 image whose single layer is an *uncompressed* tar holding
/// `size` random bytes, tagged `1.0`. Returns (layout dir, layer diff_id, config digest).
pub fn big_layout(dir: &Path, size: usize) -> (PathBuf, String, String) {
    let root = dir.join("big-oci");
    std::fs::create_dir_all(root.join("blobs/sha256")).unwrap();
    let put = |bytes: &[u8]| -> String {
        let d = sha256(bytes);
        std::fs::write(root.join("blobs/sha256").join(hex_of(&d)), bytes).unwrap();
        d
    };
    let mut tar = tar::Builder::new(Vec::new());
    let data = noise(size, 0x0005_EED0_FB16);
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(1_700_000_000);
    header.set_cksum();
    tar.append_data(&mut header, "big.bin", data.as_slice())
        .unwrap();
    let layer = tar.into_inner().unwrap();
    let diff_id = put(&layer);
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
    });
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_digest = put(&config_bytes);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_bytes.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": diff_id,
            "size": layer.len(),
        }],
    });
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    let manifest_digest = put(&manifest_bytes);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": OCI_MANIFEST,
            "digest": manifest_digest,
            "size": manifest_bytes.len(),
            "annotations": { "org.opencontainers.image.ref.name": "1.0" },
        }],
    });
    std::fs::write(root.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(root.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    (root, diff_id, config_digest)
}
