#!/usr/bin/env python3
"""Writes an OCI image layout with synthetic images for the benchmarks (offline, no umoci).

    gen_images.py DIR --images N --layers L --layer-size BYTES [--seed S]

Every image gets its own random (incompressible) layers, so every blob digest is distinct. Layers
are gzip tars of one file each (`application/vnd.oci.image.layer.v1.tar+gzip`, what registries
store), the config's `diff_ids` are the uncompressed tars' digests, and image `i` is tagged
`img<i>` (`org.opencontainers.image.ref.name`), so `oci:DIR:img<i>` selects it for skopeo and for
`static-registry publish`.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import random
import tarfile

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def put_blob(root, data):
    digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(root, "blobs", "sha256", digest)
    if not os.path.exists(path):
        with open(path, "wb") as f:
            f.write(data)
    return "sha256:" + digest, len(data)


def layer(rng, name, size):
    """A tar holding one file of `size` random bytes, and its gzip (level 1: random data does not
    compress anyway)."""
    payload = rng.randbytes(size)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = size
        info.mtime = 1704067200
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(payload))
    raw = raw.getvalue()
    gz = gzip.compress(raw, compresslevel=1, mtime=0)
    return raw, gz


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("--images", type=int, default=1)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--layer-size", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=8)
    a = ap.parse_args()

    rng = random.Random(a.seed)
    os.makedirs(os.path.join(a.dir, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(a.dir, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)

    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}
    for i in range(a.images):
        layers, diff_ids = [], []
        for n in range(a.layers):
            raw, gz = layer(rng, f"data/img{i}-layer{n}.bin", a.layer_size)
            diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
            d, size = put_blob(a.dir, gz)
            layers.append({"mediaType": LAYER, "digest": d, "size": size})
        config = {
            "created": "2024-01-01T00:00:00Z",
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"org.opencontainers.image.title": f"bench img{i}"}},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
        cd, csize = put_blob(a.dir, json.dumps(config, sort_keys=True).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {"mediaType": CONFIG, "digest": cd, "size": csize},
            "layers": layers,
        }
        md, msize = put_blob(a.dir, json.dumps(manifest, sort_keys=True).encode())
        index["manifests"].append(
            {
                "mediaType": MANIFEST,
                "digest": md,
                "size": msize,
                "annotations": {"org.opencontainers.image.ref.name": f"img{i}"},
            }
        )
    with open(os.path.join(a.dir, "index.json"), "w") as f:
        json.dump(index, f)


if __name__ == "__main__":
    main()
