#!/usr/bin/env python3
"""Spreads the images of a layout written by gen_images.py over repositories, and lists the
request paths the load benchmark cycles through.

    plan.py LAYOUT OUTDIR --repos R [--prefix bench/app]

Image k goes to repository `<prefix><k % R + 1>` with tag `v<k // R + 1>`. Writes, in OUTDIR:
  plan.txt            `img<k> <repo>:<tag>` per image (what to publish where)
  blob-paths.txt      `/v2/<repo>/blobs/<digest>` for every config and layer of every image
  manifest-paths.txt  `/v2/<repo>/manifests/<tag>` per image (for HEAD)
  blob-check.txt      `<path> <digest>` of one layer per repository (for the sanity check)
"""

import argparse
import json
import os


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("layout")
    ap.add_argument("outdir")
    ap.add_argument("--repos", type=int, required=True)
    ap.add_argument("--prefix", default="bench/app")
    a = ap.parse_args()

    with open(os.path.join(a.layout, "index.json")) as f:
        index = json.load(f)
    plan, blobs, manifests, check = [], [], [], {}
    for k, desc in enumerate(index["manifests"]):
        name = desc["annotations"]["org.opencontainers.image.ref.name"]
        repo = f"{a.prefix}{k % a.repos + 1}"
        tag = f"v{k // a.repos + 1}"
        plan.append(f"{name} {repo}:{tag}")
        manifests.append(f"/v2/{repo}/manifests/{tag}")
        hexd = desc["digest"].split(":", 1)[1]
        with open(os.path.join(a.layout, "blobs", "sha256", hexd)) as f:
            m = json.load(f)
        for b in [m["config"]] + m["layers"]:
            blobs.append(f"/v2/{repo}/blobs/{b['digest']}")
        layer = m["layers"][0]["digest"]
        check.setdefault(repo, f"/v2/{repo}/blobs/{layer} {layer}")

    # Interleave repositories so consecutive requests hit different ones.
    blobs.sort(key=lambda p: (p.split("/blobs/")[1], p))
    os.makedirs(a.outdir, exist_ok=True)
    for name, lines in [
        ("plan.txt", plan),
        ("blob-paths.txt", blobs),
        ("manifest-paths.txt", manifests),
        ("blob-check.txt", list(check.values())),
    ]:
        with open(os.path.join(a.outdir, name), "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
