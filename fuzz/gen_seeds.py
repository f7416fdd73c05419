#!/usr/bin/env python3
"""Writes the seed corpora (fuzz/corpus/<target>/seed-*) from the repository's fixtures and a few
hand-written samples. Seeds are generated, never committed; rerunning is harmless."""
import gzip
import hashlib
import io
import json
import os
import struct
import sys
import tarfile

FUZZ = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(FUZZ)
FIX = os.path.join(ROOT, "fixtures")
D = "sha256:" + hashlib.sha256(b"").hexdigest()
ID = hashlib.sha256(b"v1").hexdigest()


def put(target, name, data):
    d = os.path.join(FUZZ, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def fixture_files():
    """{fixture name: [(path, kind, data)]} for every fixture archive and layout directory."""
    out = {}
    for name in sorted(os.listdir(FIX)):
        full = os.path.join(FIX, name)
        files = []
        if name.endswith(".tar"):
            with tarfile.open(full) as t:
                for m in t.getmembers():
                    if m.isfile():
                        files.append((m.name, 0, t.extractfile(m).read()))
                    elif m.issym():
                        files.append((m.name, 1, m.linkname.encode()))
                    elif m.islnk():
                        files.append((m.name, 2, m.linkname.encode()))
        elif os.path.isdir(full):
            for dirpath, _, names in os.walk(full):
                for n in sorted(names):
                    p = os.path.join(dirpath, n)
                    with open(p, "rb") as f:
                        files.append((os.path.relpath(p, full), 0, f.read()))
        else:
            continue
        out[name] = files
    return out


SLOTS = "0123456789abcdefghijklmnopqrstuvwxyz"


def framed(files):
    """The archive harnesses' framed form (fuzz/src/lib.rs): digests become `$N` placeholders,
    ordered so every entry names only later ones."""
    hexes = {hashlib.sha256(d).hexdigest(): i for i, (_, k, d) in enumerate(files) if k == 0}
    refs = {i: {hexes[h] for h in hexes if hexes[h] != i and h.encode() in d}
            for i, (_, _, d) in enumerate(files)}
    order, seen = [], set()

    def visit(i):  # referencing entries first
        if i in seen:
            return
        seen.add(i)
        for r in refs[i]:
            visit(r)
        order.append(i)
    for i in range(len(files)):
        visit(i)
    order.reverse()
    order = order[: len(SLOTS)]
    pos = {old: new for new, old in enumerate(order)}
    out = bytearray([0])
    for new, old in enumerate(order):
        name, kind, data = files[old]
        name = name.encode()
        for h, i in hexes.items():
            if i in pos:
                slot = ("$" + SLOTS[pos[i]]).encode()
                name = name.replace(h.encode(), slot)
                if pos[i] > new:
                    data = data.replace(h.encode(), slot)
        if len(name) > 255 or len(data) > 65535:
            continue
        out += bytes([kind, len(name)]) + name + struct.pack("<H", len(data)) + data
    return bytes(out)


def archives():
    for name, files in fixture_files().items():
        base = name.replace(".tar", "")
        for target in ("docker_archive", "oci_archive"):
            put(target, base + "-framed", framed(files))
            if name.endswith(".tar"):
                with open(os.path.join(FIX, name), "rb") as f:
                    raw = f.read()
                put(target, base + "-raw", b"\x01" + raw)
                put(target, base + "-gzip", b"\x01" + gzip.compress(raw, mtime=0))
        for path, kind, data in files:
            if kind == 0 and data[:1] in (b"{", b"["):
                put("manifest", base + "-" + os.path.basename(path)[:16], data)


def small():
    for p in ["/v2/", "/v2/_catalog", "/v2/library/alpine/tags/list",
              "/v2/a/b/manifests/latest", f"/v2/a/manifests/{D}", f"/v2/a/blobs/{D}",
              f"/v2/a/referrers/{D}", "/v2/a%2f..%2fb/manifests/latest",
              "/v1/_ping", f"/v1/images/{ID}/json", f"/v1/images/{ID}/ancestry",
              "/v1/repositories/library/alpine/tags", "/v1/repositories/a/b/tags/1.0",
              "/v1/repositories/a/images"]:
        put("route", hashlib.sha1(p.encode()).hexdigest()[:12], p)
    for r in ["library/alpine", "a.b_c__d---e/f9", "latest", D, "sha512:" + "a" * 128, ID,
              "a/b:1.0", "ghcr.io/a/b:1@" + D, "localhost:5000/x", "docker://alpine",
              "oci:dir:1.0", "oci-archive:f.tar:@1", "docker-archive:f.tar:a/b:c",
              "docker.io/library/alpine:3.20"]:
        put("reference", hashlib.sha1(r.encode()).hexdigest()[:12], r)
    v1 = {"tags": {"1.0": ID}, "images": {ID: {"parent": ID, "layer": D, "size": 3}}}
    idx = {"layout_version": 1, "name": "a/b",
           "tags": {"1.0": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                            "digest": D, "size": 10,
                            "platform": {"os": "linux", "architecture": "amd64"}}},
           "manifests": {D: {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                             "size": 10}},
           "blobs": {D: 3},
           "referrers": {D: [{"mediaType": "x", "digest": D, "size": 1, "artifactType": "t"}]},
           "v1": v1}
    put("index", "index", json.dumps(idx))
    put("index", "index-old", '{"layout_version":1,"name":"a/b","tags":{},"manifests":{},"blobs":{}}')
    put("index", "shard", json.dumps({"images": {ID: {"layer": D, "size": 3,
                                                      "repositories": ["a/b"]}}}))
    put("index", "catalog", '{"repositories":["a","b/c"]}')
    for i, h in enumerate([
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
            'scope="repository:library/alpine:pull"',
            'Basic realm="a, b", Bearer realm="https://x/t", service=x,error="invalid_token"',
            'Bearer realm="a\\"b", Scope = "x"', "Basic"]):
        put("auth", f"challenge{i}", b"\x00" + h.encode())
    for i, t in enumerate(['{"token":"abc","expires_in":300}',
                           '{"access_token":"abc","expires_in":60,"issued_at":"2024-01-01T00:00:00Z"}',
                           '{"token":"","access_token":"x"}']):
        put("auth", f"token{i}", b"\x01" + t.encode())


if __name__ == "__main__":
    archives()
    small()
    sys.exit(0)
