#!/usr/bin/env python3
"""Independent v1 client for tests/v1.rs: pulls one tag through the registry v1 API with the PyPI
package docker-registry-client (DockerRegistryClient(url, api_version=1)), which this project did
not write.

usage: v1_pull.py URL REPO TAG OUTDIR
Writes each layer to OUTDIR/<id>.layer and prints, as JSON: the ping answer, the repository's tags,
the tag's image id, its ancestry, and per image its json and layer file. Needs
`pip install docker-registry-client`.
"""
import json
import os
import sys

try:
    from docker_registry_client import DockerRegistryClient
    from requests import get
except ImportError as e:  # the Rust test turns this into a failure naming the fix
    sys.exit(f"missing python module ({e}): pip install docker-registry-client")


def main():
    url, repo, tag, out = sys.argv[1:5]
    client = DockerRegistryClient(url, api_version=1)
    if client.api_version != 1:
        sys.exit(f"the client speaks v{client.api_version}, not v1")
    base = client._base_client
    ping = base.check_status()  # GET /v1/_ping
    repository = client.repository(repo)
    tags = repository.tags()  # GET /v1/repositories/<ns>/<repo>/tags
    image = repository.image(tag)
    ancestry = image.ancestry()  # GET /v1/images/<id>/ancestry
    images = []
    for image_id in ancestry:
        meta = base.get_image_layer(image_id)  # the library's name for GET /v1/images/<id>/json
        # The library's get_images_layer() decodes the body as JSON, which a layer tar is not, so
        # the layer goes through the same request helper without that last step.
        layer = base._http_response(base.IMAGE_LAYER, get, image_id=image_id)
        path = os.path.join(out, image_id + ".layer")
        with open(path, "wb") as f:
            f.write(layer.content)
        images.append(
            {
                "id": image_id,
                "json": meta,
                "layer": path,
                "redirects": [r.status_code for r in layer.history],
            }
        )
    print(
        json.dumps(
            {
                "ping": ping,
                "tags": tags,
                "image": image.image_id,
                "ancestry": ancestry,
                "images": images,
            }
        )
    )


main()
