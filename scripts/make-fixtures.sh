#!/usr/bin/env bash
# Regenerate the container-image test fixtures in fixtures/.
#
# Works offline. Needs: umoci (>= 0.4), skopeo (>= 1.9), python3 (stdlib only),
# GNU coreutils. On Debian 12: apt-get install umoci skopeo python3
# (skopeo needs a policy at /etc/containers/policy.json or
# ~/.config/containers/policy.json; the Debian package ships one.)
#
# Idempotent: every output is deleted and rebuilt. File timestamps, image
# "created" times and tar headers are pinned, so with the same tool versions
# the outputs come out byte for byte the same.
#
# Outputs (see fixtures/README.md):
#   fixtures/oci-single/        OCI layout, one linux/amd64 image tagged 1.0
#   fixtures/oci-multi/         OCI layout, "latest" -> image index (amd64 + arm64)
#   fixtures/oci-archive.tar    oci-archive (tarred OCI layout) of oci-single:1.0
#   fixtures/docker-legacy.tar  legacy `docker save` tar (Docker < 25), legacy/hello:1.0
#   fixtures/docker-25.tar      Docker >= 25 `docker save` tar (OCI layout + manifest.json), modern/hello:2.0
set -euo pipefail
umask 022
export LC_ALL=C TZ=UTC

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FIX="$ROOT/fixtures"

# Every timestamp in the fixtures comes from here: 2024-01-01T00:00:00Z.
# Layer n (1-based) of an image is stamped BASE_EPOCH + 60*n.
BASE_EPOCH=1704067200
IMAGE_PATH_ENV="PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

for tool in umoci skopeo python3; do
    command -v "$tool" >/dev/null 2>&1 || { echo "make-fixtures: '$tool' not found (apt-get install umoci skopeo python3)" >&2; exit 1; }
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/make-fixtures.XXXXXX")"
cleanup() { chmod -R u+rwX "$WORK" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

iso() { date -u -d "@$1" +%Y-%m-%dT%H:%M:%SZ; }

# ---------------------------------------------------------------------------
# Building images with umoci
# ---------------------------------------------------------------------------

# Paths (relative to the rootfs, starting with /) written for the current layer.
TOUCHED=()

# put ROOTFS PATH CONTENT: write a regular 0644 file into the layer being built.
put() {
    local rootfs=$1 path=$2 content=$3
    mkdir -p "$rootfs$(dirname "$path")"
    printf '%s' "$content" >"$rootfs$path"
    chmod 0644 "$rootfs$path"
    TOUCHED+=("$path")
}

# Pin the mtime of every written path and of all its parent directories
# (rootfs included) to EPOCH, so the layer diff is deterministic and, as in a
# layer made by docker, lists the parent directories of what changed.
pin_mtimes() {
    local rootfs=$1 epoch=$2 p
    for p in "${TOUCHED[@]}"; do
        while [ "$p" != "/" ]; do
            touch -h -d "@$epoch" "$rootfs$p"
            p="$(dirname "$p")"
        done
    done
    touch -h -d "@$epoch" "$rootfs"
}

# build_image LAYOUT TAG ARCH TITLE LAYER_FN...
# Creates LAYOUT:TAG with one gzip layer per LAYER_FN; each LAYER_FN is called
# with the unpacked rootfs and adds files with `put`.
build_image() {
    local layout=$1 tag=$2 arch=$3 title=$4
    shift 4
    local bundle="$WORK/bundle" n=0 epoch fn
    [ -d "$layout" ] || umoci init --layout "$layout"
    umoci new --image "$layout:$tag"
    for fn in "$@"; do
        n=$((n + 1))
        epoch=$((BASE_EPOCH + 60 * n))
        rm -rf "$bundle"
        umoci unpack --rootless --image "$layout:$tag" "$bundle"
        TOUCHED=()
        "$fn" "$bundle/rootfs"
        pin_mtimes "$bundle/rootfs" "$epoch"
        umoci repack --image "$layout:$tag" \
            --history.created "$(iso "$epoch")" \
            --history.created_by "make-fixtures: $title layer $n ($fn)" \
            "$bundle"
    done
    rm -rf "$bundle"
    umoci config --image "$layout:$tag" --no-history \
        --created "$(iso "$epoch")" \
        --os linux --architecture "$arch" \
        --config.env "$IMAGE_PATH_ENV" \
        --config.cmd /bin/sh \
        --config.workingdir / \
        --config.label "org.opencontainers.image.title=$title"
}

# --- image contents --------------------------------------------------------

single_l1() {
    put "$1" /hello.txt $'hello from oci-single\n'
    put "$1" /etc/fixture-release $'FIXTURE=oci-single\nVERSION=1.0\n'
}
single_l2() {
    put "$1" /usr/share/fixture/layer2.txt $'second layer of oci-single\n'
}

# The first layer is byte-identical for both platforms (a shared blob).
multi_base() {
    put "$1" /etc/fixture-release $'FIXTURE=oci-multi\nVERSION=latest\n'
}
multi_amd64() {
    put "$1" /platform.txt $'linux/amd64\n'
}
multi_arm64() {
    put "$1" /platform.txt $'linux/arm64\n'
}

legacy_l1() {
    put "$1" /hello.txt $'hello from docker-legacy\n'
    put "$1" /etc/fixture-release $'FIXTURE=docker-legacy\nVERSION=1.0\n'
}
legacy_l2() {
    put "$1" /app/legacy.txt $'written by the legacy docker save fixture\n'
}

modern_l1() {
    put "$1" /hello.txt $'hello from docker-25\n'
    put "$1" /etc/fixture-release $'FIXTURE=docker-25\nVERSION=2.0\n'
}
modern_l2() {
    put "$1" /app/modern.txt $'written by the docker 25 save fixture\n'
}

# ---------------------------------------------------------------------------
# python3 helpers (assembling layouts/tars, checking them)
# ---------------------------------------------------------------------------
PY="$WORK/fixtures.py"
cat >"$PY" <<'PYEOF'
import gzip, hashlib, io, json, os, shutil, sys, tarfile

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_LAYER_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'


def sha(b):
    return hashlib.sha256(b).hexdigest()


def cjson(obj, sort=False):
    """Compact JSON, like Go's encoding/json."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=sort).encode()


def read_blob(layout, digest):
    algo, hexd = digest.split(":", 1)
    with open(os.path.join(layout, "blobs", algo, hexd), "rb") as f:
        return f.read()


def manifest_for_tag(layout, tag):
    with open(os.path.join(layout, "index.json")) as f:
        idx = json.load(f)
    for d in idx["manifests"]:
        if d.get("annotations", {}).get(REF_NAME) == tag:
            return d
    raise SystemExit(f"{layout}: no tag {tag}")


def image_parts(layout, tag):
    """(manifest descriptor, manifest, config, [uncompressed layer bytes])"""
    desc = manifest_for_tag(layout, tag)
    man = json.loads(read_blob(layout, desc["digest"]))
    cfg = json.loads(read_blob(layout, man["config"]["digest"]))
    layers = []
    for l in man["layers"]:
        raw = read_blob(layout, l["digest"])
        layers.append(gzip.decompress(raw) if l["mediaType"].endswith("+gzip") else raw)
    return desc, man, cfg, layers


class TarWriter:
    """Deterministic tar writer: fixed mtime, root owner, no user names."""

    def __init__(self, path):
        self.tf = tarfile.open(path, "w", format=tarfile.USTAR_FORMAT)
        self.dirs = set()

    def _info(self, name, mtime):
        ti = tarfile.TarInfo(name)
        ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = mtime, 0, 0, "", ""
        return ti

    def dir(self, name, mtime=0):
        if name in self.dirs:
            return
        ti = self._info(name, mtime)
        ti.type, ti.mode = tarfile.DIRTYPE, 0o755
        self.tf.addfile(ti)
        self.dirs.add(name)

    def file(self, name, data, mtime=0, mode=0o644):
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            self.dir("/".join(parts[:i]), mtime)
        ti = self._info(name, mtime)
        ti.size, ti.mode = len(data), mode
        self.tf.addfile(ti, io.BytesIO(data))

    def close(self):
        self.tf.close()


def write_layout_blob(layout, data):
    d = os.path.join(layout, "blobs", "sha256")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, sha(data)), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + sha(data), "size": len(data)}


# --- oci-multi -----------------------------------------------------------------
def cmd_multi(scratch, out, tag):
    """Combine scratch:amd64 and scratch:arm64 into out, tag -> image index."""
    entries = []
    for arch in ("amd64", "arm64"):
        desc = manifest_for_tag(scratch, arch)
        man = json.loads(read_blob(scratch, desc["digest"]))
        cfg = json.loads(read_blob(scratch, man["config"]["digest"]))
        assert cfg["architecture"] == arch and cfg["os"] == "linux", cfg
        for d in [desc, man["config"]] + man["layers"]:
            write_layout_blob(out, read_blob(scratch, d["digest"]))
        entries.append({
            "mediaType": MT_MANIFEST,
            "digest": desc["digest"],
            "size": desc["size"],
            "platform": {"architecture": arch, "os": "linux"},
        })
    index = cjson({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": entries})
    ref = write_layout_blob(out, index)
    top = {"schemaVersion": 2, "manifests": [
        {"mediaType": MT_INDEX, **ref, "annotations": {REF_NAME: tag}}]}
    with open(os.path.join(out, "index.json"), "wb") as f:
        f.write(cjson(top))
    with open(os.path.join(out, "oci-layout"), "wb") as f:
        f.write(OCI_LAYOUT)


# --- oci-archive ------------------------------------------------------------------
def cmd_normalize_tar(src, dst):
    """Rewrite a tar with pinned metadata (keeps order, names, modes, content)."""
    w = TarWriter(dst)
    with tarfile.open(src) as t:
        for m in t:
            if m.isdir():
                w.dir(m.name.rstrip("/"))
            elif m.isfile():
                w.file(m.name, t.extractfile(m).read(), mode=m.mode & 0o7777)
            else:
                raise SystemExit(f"{src}: unexpected member type {m.name}")
    w.close()


# --- docker config / legacy v1 json ------------------------------------------------
EMPTY_CONTAINER_CONFIG = {
    "Hostname": "", "Domainname": "", "User": "", "AttachStdin": False,
    "AttachStdout": False, "AttachStderr": False, "Tty": False, "OpenStdin": False,
    "StdinOnce": False, "Env": None, "Cmd": None, "Image": "", "Volumes": None,
    "WorkingDir": "", "Entrypoint": None, "OnBuild": None, "Labels": None,
}


def docker_config(oci_cfg, layers):
    """Docker-style image config (as `docker inspect`/buildkit write it)."""
    c = oci_cfg.get("config", {})
    cfg = {
        "architecture": oci_cfg["architecture"],
        "config": {
            "Env": c.get("Env"),
            "Cmd": c.get("Cmd"),
            "WorkingDir": c.get("WorkingDir", ""),
            "Labels": c.get("Labels"),
        },
        "created": oci_cfg["created"],
        "history": oci_cfg["history"],
        "os": oci_cfg["os"],
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + sha(l) for l in layers]},
    }
    assert cfg["rootfs"]["diff_ids"] == oci_cfg["rootfs"]["diff_ids"]
    return cjson(cfg, sort=True)


def chain_ids(diff_ids):
    out = []
    for d in diff_ids:
        out.append(d if not out else "sha256:" + sha(f"{out[-1]} {d}".encode()))
    return out


def v1_layers(cfg_bytes):
    """Per-layer legacy v1 JSON as moby's tarexport writes it (v1.CreateID):
    returns [(v1 id hex, json bytes)], bottom layer first."""
    cfg = json.loads(cfg_bytes)
    top_config = dict(EMPTY_CONTAINER_CONFIG)  # container.Config, all fields
    top_config.update({k: v for k, v in cfg["config"].items() if k in top_config})
    chains = chain_ids(cfg["rootfs"]["diff_ids"])
    out, parent = [], ""
    for i, chain in enumerate(chains):
        if i == len(chains) - 1:
            img = {"created": cfg["created"], "container_config": EMPTY_CONTAINER_CONFIG,
                   "config": top_config, "architecture": cfg["architecture"], "os": cfg["os"]}
        else:
            img = {"created": "1970-01-01T00:00:00Z", "container_config": EMPTY_CONTAINER_CONFIG}
        idmap = dict(img, layer_id=chain)
        if parent:
            idmap["parent"] = "sha256:" + parent
        v1id = sha(cjson(idmap, sort=True))
        obj = {"id": v1id, **({"parent": parent} if parent else {}), **img, "os": cfg["os"]}
        out.append((v1id, cjson(obj)))
        parent = v1id
    return out


def split_ref(ref):
    repo, tag = ref.rsplit(":", 1)
    return repo, tag


# --- docker-legacy.tar -----------------------------------------------------------
def cmd_docker_legacy(scratch, tag, out, ref, mtime):
    mtime = int(mtime)
    _, _, oci_cfg, layers = image_parts(scratch, tag)
    cfg = docker_config(oci_cfg, layers)
    cfg_hex = sha(cfg)
    v1 = v1_layers(cfg)
    repo, rtag = split_ref(ref)
    manifest = [{"Config": cfg_hex + ".json", "RepoTags": [ref],
                 "Layers": [f"{vid}/layer.tar" for vid, _ in v1]}]
    files = {cfg_hex + ".json": cfg,
             "manifest.json": cjson(manifest) + b"\n",
             "repositories": cjson({repo: {rtag: v1[-1][0]}}) + b"\n"}
    for (vid, vjson), layer in zip(v1, layers):
        files[f"{vid}/VERSION"] = b"1.0"
        files[f"{vid}/json"] = vjson
        files[f"{vid}/layer.tar"] = layer
    w = TarWriter(out)
    for name in sorted(files):  # docker walks its temp dir in lexical order
        t = 0 if name in ("manifest.json", "repositories") else mtime
        w.file(name, files[name], mtime=t)
    w.close()


# --- docker-25.tar -------------------------------------------------------------------
def cmd_docker_25(scratch, tag, out, ref, mtime):
    mtime = int(mtime)
    _, _, oci_cfg, layers = image_parts(scratch, tag)
    cfg = docker_config(oci_cfg, layers)
    platform = {"architecture": oci_cfg["architecture"], "os": oci_cfg["os"]}
    blobs = {sha(cfg): cfg}
    layer_descs = []
    for l in layers:
        blobs[sha(l)] = l
        layer_descs.append({"mediaType": MT_LAYER, "digest": "sha256:" + sha(l), "size": len(l)})
    # moby also leaves the legacy per-layer v1 JSON in blobs/ (unreferenced)
    for _, vjson in v1_layers(cfg):
        blobs[sha(vjson)] = vjson
    man = cjson({
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": "sha256:" + sha(cfg),
                   "size": len(cfg), "platform": platform},
        "layers": layer_descs,
    })
    blobs[sha(man)] = man
    repo, rtag = split_ref(ref)
    full_name = ref if "/" in repo and "." in repo.split("/")[0] else "docker.io/" + ref
    index = cjson({
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": [{
            "mediaType": MT_MANIFEST, "digest": "sha256:" + sha(man), "size": len(man),
            "annotations": {"io.containerd.image.name": full_name, REF_NAME: rtag},
            "platform": platform,
        }],
    })
    manifest_json = [{
        "Config": "blobs/sha256/" + sha(cfg),
        "RepoTags": [ref],
        "Layers": ["blobs/sha256/" + sha(l) for l in layers],
        "LayerSources": {d["digest"]: {"mediaType": d["mediaType"], "size": d["size"],
                                       "digest": d["digest"]} for d in layer_descs},
    }]
    files = {"index.json": index,
             "manifest.json": cjson(manifest_json) + b"\n",
             "oci-layout": OCI_LAYOUT,
             "repositories": cjson({repo: {rtag: sha(layers[-1])}}) + b"\n"}
    for h, b in blobs.items():
        files["blobs/sha256/" + h] = b
    w = TarWriter(out)
    w.dir("blobs", mtime)
    w.dir("blobs/sha256", mtime)
    for name in sorted(files):
        t = mtime if name.startswith("blobs/") else 0
        w.file(name, files[name], mtime=t)
    w.close()


# --- checks ------------------------------------------------------------------------------
class Src:
    """A layout/archive root: a directory or a tar file."""

    def __init__(self, path):
        self.path = path
        self.tar = None
        if os.path.isfile(path):
            self.tar = tarfile.open(path)
            self.members = {m.name.rstrip("/"): m for m in self.tar.getmembers()}
            for m in self.members.values():
                assert m.isdir() or m.isfile(), f"{path}: link/special member {m.name}"

    def names(self):
        if self.tar:
            return sorted(n for n, m in self.members.items() if m.isfile())
        out = []
        for d, _, fs in os.walk(self.path):
            out += [os.path.relpath(os.path.join(d, f), self.path) for f in fs]
        return sorted(out)

    def exists(self, name):
        return name in self.names()

    def read(self, name):
        if self.tar:
            return self.tar.extractfile(self.members[name]).read()
        with open(os.path.join(self.path, name), "rb") as f:
            return f.read()


def fail(msg):
    raise SystemExit("CHECK FAILED: " + msg)


def check_blobs(src):
    n = 0
    for name in src.names():
        if name.startswith("blobs/"):
            _, algo, hexd = name.split("/")
            if algo != "sha256" or sha(src.read(name)) != hexd:
                fail(f"{src.path}: {name} does not match its digest")
            n += 1
    return n


def check_descriptor(src, d, what):
    name = "blobs/" + d["digest"].replace(":", "/")
    if not src.exists(name):
        fail(f"{src.path}: {what} {d['digest']} missing")
    data = src.read(name)
    if len(data) != d["size"] or "sha256:" + sha(data) != d["digest"]:
        fail(f"{src.path}: {what} {d['digest']} size/digest mismatch")
    return data


def check_image_manifest(src, d):
    man = json.loads(check_descriptor(src, d, "manifest"))
    if man.get("mediaType", MT_MANIFEST) != MT_MANIFEST or man["schemaVersion"] != 2:
        fail(f"{src.path}: bad manifest {d['digest']}")
    cfg = json.loads(check_descriptor(src, man["config"], "config"))
    diff_ids = []
    for l in man["layers"]:
        raw = check_descriptor(src, l, "layer")
        if l["mediaType"] == MT_LAYER_GZ:
            if raw[:2] != b"\x1f\x8b":
                fail(f"{src.path}: {l['digest']} not gzip")
            raw = gzip.decompress(raw)
        elif l["mediaType"] == MT_LAYER:
            if raw[:2] == b"\x1f\x8b":
                fail(f"{src.path}: {l['digest']} should be uncompressed")
        else:
            fail(f"{src.path}: unexpected layer type {l['mediaType']}")
        tarfile.open(fileobj=io.BytesIO(raw)).getmembers()  # is a tar
        diff_ids.append("sha256:" + sha(raw))
    if cfg["rootfs"]["diff_ids"] != diff_ids:
        fail(f"{src.path}: diff_ids do not match layers of {d['digest']}")
    if "platform" in d and (d["platform"]["architecture"], d["platform"]["os"]) != (cfg["architecture"], cfg["os"]):
        fail(f"{src.path}: platform of {d['digest']} disagrees with config")
    return man, cfg


def describe(tag, d, man, cfg):
    return (f"  tag {tag}: {d['mediaType']} {d['digest']} ({d['size']} B) "
            f"{cfg['os']}/{cfg['architecture']}, {len(man['layers'])} layers "
            f"[{', '.join(sorted(set(l['mediaType'].rsplit('.', 1)[-1] for l in man['layers'])))}]")


def check_oci(path, want_tag, want_arches, want_mt):
    src = Src(path)
    if json.loads(src.read("oci-layout")) != {"imageLayoutVersion": "1.0.0"}:
        fail(f"{path}: bad oci-layout")
    nblobs = check_blobs(src)
    idx = json.loads(src.read("index.json"))
    tags = [m.get("annotations", {}).get(REF_NAME) for m in idx["manifests"]]
    if tags != [want_tag]:
        fail(f"{path}: tags {tags} != [{want_tag}]")
    d = idx["manifests"][0]
    if d["mediaType"] != want_mt:
        fail(f"{path}: {d['mediaType']} != {want_mt}")
    lines = []
    if d["mediaType"] == MT_INDEX:
        sub = json.loads(check_descriptor(src, d, "index"))
        if sub.get("mediaType") != MT_INDEX:
            fail(f"{path}: nested index lacks mediaType")
        arches = []
        lines.append(f"  tag {want_tag}: {MT_INDEX} {d['digest']} ({d['size']} B)")
        for m in sub["manifests"]:
            man, cfg = check_image_manifest(src, m)
            arches.append(m["platform"]["architecture"])
            lines.append("  " + describe(m["platform"]["os"] + "/" + m["platform"]["architecture"], m, man, cfg))
    else:
        man, cfg = check_image_manifest(src, d)
        arches = [cfg["architecture"]]
        lines.append(describe(want_tag, d, man, cfg))
    if arches != want_arches:
        fail(f"{path}: arches {arches} != {want_arches}")
    return src, nblobs, lines


def check_legacy_manifest(src, want_ref, legacy_dirs):
    mj = json.loads(src.read("manifest.json"))
    if len(mj) != 1 or mj[0]["RepoTags"] != [want_ref]:
        fail(f"{src.path}: manifest.json RepoTags {mj}")
    e = mj[0]
    cfg_bytes = src.read(e["Config"])
    if sha(cfg_bytes) != os.path.basename(e["Config"]).removesuffix(".json"):
        fail(f"{src.path}: config {e['Config']} does not match its name")
    cfg = json.loads(cfg_bytes)
    diff_ids = []
    for l in e["Layers"]:
        raw = src.read(l)
        if raw[:2] == b"\x1f\x8b":
            fail(f"{src.path}: {l} is compressed")
        tarfile.open(fileobj=io.BytesIO(raw)).getmembers()
        diff_ids.append("sha256:" + sha(raw))
    if cfg["rootfs"]["diff_ids"] != diff_ids:
        fail(f"{src.path}: diff_ids do not match manifest.json layers")
    repo, tag = split_ref(want_ref)
    repos = json.loads(src.read("repositories"))
    top = repos[repo][tag]
    if legacy_dirs:
        if top != e["Layers"][-1].split("/")[0]:
            fail(f"{src.path}: repositories does not name the top layer")
        parent = None
        for l in e["Layers"]:
            vid = l.split("/")[0]
            v = json.loads(src.read(vid + "/json"))
            if src.read(vid + "/VERSION") != b"1.0" or v["id"] != vid or v.get("parent") != parent:
                fail(f"{src.path}: bad legacy layer dir {vid}")
            parent = vid
    elif top != e["Layers"][-1].split("/")[-1]:
        fail(f"{src.path}: repositories does not name the top layer")
    return e, cfg


def cmd_check(fix):
    report = []
    p = os.path.join(fix, "oci-single")
    _, n, lines = check_oci(p, "1.0", ["amd64"], MT_MANIFEST)
    report += [f"oci-single/ ({n} blobs)"] + lines

    p = os.path.join(fix, "oci-multi")
    _, n, lines = check_oci(p, "latest", ["amd64", "arm64"], MT_INDEX)
    report += [f"oci-multi/ ({n} blobs)"] + lines

    p = os.path.join(fix, "oci-archive.tar")
    _, n, lines = check_oci(p, "1.0", ["amd64"], MT_MANIFEST)
    single = json.load(open(os.path.join(fix, "oci-single", "index.json")))["manifests"][0]["digest"]
    if single not in lines[0]:
        fail("oci-archive.tar manifest differs from oci-single")
    report += [f"oci-archive.tar ({n} blobs)"] + lines

    p = os.path.join(fix, "docker-legacy.tar")
    src = Src(p)
    if src.exists("index.json") or src.exists("oci-layout"):
        fail(f"{p}: legacy archive must not be an OCI layout")
    e, cfg = check_legacy_manifest(src, "legacy/hello:1.0", True)
    report += [f"docker-legacy.tar", f"  RepoTags {e['RepoTags']}: config sha256:{e['Config'][:-5]} "
               f"{cfg['os']}/{cfg['architecture']}, {len(e['Layers'])} uncompressed layers"]

    p = os.path.join(fix, "docker-25.tar")
    src, n, lines = check_oci(p, "2.0", ["amd64"], MT_MANIFEST)
    e, cfg = check_legacy_manifest(src, "modern/hello:2.0", False)
    idx = json.loads(src.read("index.json"))
    d = idx["manifests"][0]
    if d["annotations"].get("io.containerd.image.name") != "docker.io/modern/hello:2.0":
        fail(f"{p}: io.containerd.image.name")
    man = json.loads(src.read("blobs/" + d["digest"].replace(":", "/")))
    if ["blobs/sha256/" + l["digest"][7:] for l in man["layers"]] != e["Layers"] or \
            "blobs/sha256/" + man["config"]["digest"][7:] != e["Config"]:
        fail(f"{p}: manifest.json and the OCI manifest disagree")
    report += [f"docker-25.tar ({n} blobs)"] + lines + [f"  RepoTags {e['RepoTags']}"]

    # distinct content
    diffs = {}
    for name in ("oci-single", "oci-multi"):
        for dirpath, _, fs in os.walk(os.path.join(fix, name, "blobs")):
            for f in fs:
                diffs.setdefault(f, set()).add(name)
    for name in ("docker-legacy.tar", "docker-25.tar"):
        s = Src(os.path.join(fix, name))
        for m in s.names():
            if m.endswith("layer.tar") or m.startswith("blobs/"):
                diffs.setdefault(sha(s.read(m)), set()).add(name)
    shared = {k: v for k, v in diffs.items() if len(v) > 1}
    if shared:
        fail(f"blobs shared between fixtures: {shared}")

    for f in sorted(os.listdir(fix)):
        p = os.path.join(fix, f)
        size = os.path.getsize(p) if os.path.isfile(p) else sum(
            os.path.getsize(os.path.join(d, x)) for d, _, xs in os.walk(p) for x in xs)
        if size > 100 * 1024:
            fail(f"{f} is {size} bytes (> 100 KiB)")
        report.append(f"size {f}: {size} B")
    print("\n".join(report))


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"multi": cmd_multi, "normalize-tar": cmd_normalize_tar,
     "docker-legacy": cmd_docker_legacy, "docker-25": cmd_docker_25,
     "check": cmd_check}[cmd](*args)
PYEOF

# ---------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------
echo "==> removing old outputs"
mkdir -p "$FIX"
rm -rf "$FIX/oci-single" "$FIX/oci-multi" "$FIX/oci-archive.tar" \
       "$FIX/docker-legacy.tar" "$FIX/docker-25.tar"

LAST_EPOCH=$((BASE_EPOCH + 120)) # created time of the 2-layer images

echo "==> oci-single (1.0, linux/amd64, 2 gzip layers)"
build_image "$WORK/single" 1.0 amd64 oci-single single_l1 single_l2
umoci gc --layout "$WORK/single"
cp -r "$WORK/single" "$FIX/oci-single"

echo "==> oci-multi (latest -> index of linux/amd64 + linux/arm64)"
build_image "$WORK/multi" amd64 amd64 oci-multi multi_base multi_amd64
build_image "$WORK/multi" arm64 arm64 oci-multi multi_base multi_arm64
mkdir -p "$FIX/oci-multi"
python3 "$PY" multi "$WORK/multi" "$FIX/oci-multi" latest

echo "==> oci-archive.tar (oci-single:1.0 via skopeo)"
skopeo copy -q "oci:$FIX/oci-single:1.0" "oci-archive:$WORK/oci-archive.tar:1.0"
python3 "$PY" normalize-tar "$WORK/oci-archive.tar" "$FIX/oci-archive.tar"

echo "==> docker-legacy.tar (legacy/hello:1.0)"
build_image "$WORK/legacy" 1.0 amd64 docker-legacy legacy_l1 legacy_l2
python3 "$PY" docker-legacy "$WORK/legacy" 1.0 "$FIX/docker-legacy.tar" legacy/hello:1.0 "$LAST_EPOCH"

echo "==> docker-25.tar (modern/hello:2.0)"
build_image "$WORK/modern" 2.0 amd64 docker-25 modern_l1 modern_l2
python3 "$PY" docker-25 "$WORK/modern" 2.0 "$FIX/docker-25.tar" modern/hello:2.0 "$LAST_EPOCH"

# umoci writes blobs 0600; make the committed fixtures world-readable.
find "$FIX/oci-single" "$FIX/oci-multi" -type d -exec chmod 0755 {} +
find "$FIX/oci-single" "$FIX/oci-multi" -type f -exec chmod 0644 {} +
chmod 0644 "$FIX"/*.tar

# ---------------------------------------------------------------------------
# Validate
# ---------------------------------------------------------------------------
echo "==> checking digests, sizes, diff_ids"
python3 "$PY" check "$FIX"

echo "==> checking with skopeo"
skopeo inspect --raw "oci:$FIX/oci-single:1.0" >/dev/null
skopeo inspect --raw "oci:$FIX/oci-multi:latest" >/dev/null
skopeo inspect "docker-archive:$FIX/docker-legacy.tar" >/dev/null
skopeo inspect "docker-archive:$FIX/docker-25.tar" >/dev/null
skopeo inspect "oci-archive:$FIX/oci-archive.tar:1.0" >/dev/null
n=0
for src in "oci:$FIX/oci-single:1.0" \
           "oci:$FIX/oci-multi:latest" \
           "oci-archive:$FIX/oci-archive.tar:1.0" \
           "docker-archive:$FIX/docker-legacy.tar" \
           "docker-archive:$FIX/docker-25.tar" \
           "oci:$FIX/docker-25.tar"; do
    case "$src" in
        oci:*docker-25.tar) # the docker 25 tar is also an OCI layout once unpacked
            mkdir -p "$WORK/d25" && tar -xf "$FIX/docker-25.tar" -C "$WORK/d25"
            src="oci:$WORK/d25:2.0" ;;
    esac
    n=$((n + 1))
    skopeo copy -q --all "$src" "dir:$WORK/copy-$n"
done
echo "==> fixtures OK"
