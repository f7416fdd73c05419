#!/usr/bin/env python3
"""Rewrites a docker-archive written by skopeo into the exact shape `docker save` wrote before
Docker 25, for bench/publish.sh.

    docker_save.py IN.tar OUT.tar MTIME

skopeo stores each layer once, as `<digest>.tar`, lists those names in `manifest.json`, and adds
the legacy `<id>/layer.tar` as symlinks to them. `docker save` (20.10–24) stores the layer itself
as `<id>/layer.tar`, next to `<id>/VERSION` and `<id>/json`, and lists `<id>/layer.tar` in
`manifest.json`. This writes that: per layer (in image order) the directory, `VERSION`, `json` and
`layer.tar`; then the config, `manifest.json` and `repositories`. Every entry is owned by root with
mode 0644 (0755 for directories) and the given mtime, so the output depends only on the input.
"""

import io
import json
import posixpath
import sys
import tarfile


def resolve(t, member):
    while member.issym():
        target = posixpath.normpath(posixpath.join(posixpath.dirname(member.name), member.linkname))
        member = t.getmember(target)
    return member


def unqualify(name):
    return name.removeprefix("docker.io/")


def main():
    src, dst, mtime = sys.argv[1], sys.argv[2], int(sys.argv[3])

    def info(name, size=0, directory=False):
        ti = tarfile.TarInfo(name)
        ti.size, ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = size, mtime, 0, 0, "", ""
        ti.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
        ti.mode = 0o755 if directory else 0o644
        return ti

    with tarfile.open(src) as t, tarfile.open(dst, "w", format=tarfile.USTAR_FORMAT) as out:
        manifest = json.load(t.extractfile("manifest.json"))
        if len(manifest) != 1:
            sys.exit(f"{src}: expected one image, found {len(manifest)}")
        image = manifest[0]
        # skopeo's legacy ids: the directories whose layer.tar points at each physical layer.
        ids = {}
        for m in t.getmembers():
            if posixpath.basename(m.name) == "layer.tar":
                ids[resolve(t, m).name] = posixpath.dirname(m.name)
        layers = []
        for physical in image["Layers"]:
            layer_id = ids[resolve(t, t.getmember(physical)).name]
            data = resolve(t, t.getmember(physical))
            out.addfile(info(layer_id + "/", directory=True))
            for extra in ("VERSION", "json"):
                body = t.extractfile(layer_id + "/" + extra).read()
                out.addfile(info(f"{layer_id}/{extra}", len(body)), io.BytesIO(body))
            out.addfile(info(f"{layer_id}/layer.tar", data.size), t.extractfile(data))
            layers.append(f"{layer_id}/layer.tar")
        image["Layers"] = layers
        # docker save names Docker Hub images without the registry (`bench/app:1`).
        image["RepoTags"] = [unqualify(tag) for tag in image.get("RepoTags") or []]
        config = t.extractfile(image["Config"]).read()
        out.addfile(info(image["Config"], len(config)), io.BytesIO(config))
        body = json.dumps(manifest, separators=(",", ":")).encode()
        out.addfile(info("manifest.json", len(body)), io.BytesIO(body))
        repositories = json.loads(t.extractfile("repositories").read())
        repositories = {unqualify(name): tags for name, tags in repositories.items()}
        repositories = json.dumps(repositories, separators=(",", ":")).encode()
        out.addfile(info("repositories", len(repositories)), io.BytesIO(repositories))


if __name__ == "__main__":
    main()
