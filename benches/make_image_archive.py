#!/usr/bin/env python3
"""Makes a docker-archive (hybrid layout, as docker >= 25 writes it) holding one image with N layers
of random data, for the save/load benchmark.

usage: make_image_archive.py OUT.tar [--layers 4] [--layer-mib 256] [--tag bench/big:1]
                             [--seed-store STORE]

Each layer is a tar with one file of random bytes, written to a temp file beside OUT while it is
hashed (so memory stays small), then added to the archive under blobs/sha256/<diffID>.

--seed-store also puts the image straight into a kiln store (blobs/sha256 + images.json), for
benchmarking `save` on a checkout where `kiln load` is not available yet.
"""

import argparse
import datetime
import hashlib
import io
import json
import os
import tarfile
import tempfile

CHUNK = 1 << 20


def make_layer(path, index, size):
    """A layer tar with one regular file of `size` random bytes; returns (diffID hex, tar size)."""
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        header = tarfile.TarInfo(f"data/random-{index}.bin")
        header.size = size
        header.mode = 0o644
        header.mtime = 0
        block = header.tobuf(format=tarfile.PAX_FORMAT)
        out.write(block)
        digest.update(block)
        left = size
        while left:
            chunk = os.urandom(min(CHUNK, left))
            out.write(chunk)
            digest.update(chunk)
            left -= len(chunk)
        tail = b"\0" * ((512 - size % 512) % 512) + b"\0" * 1024
        out.write(tail)
        digest.update(tail)
        return digest.hexdigest(), out.tell()


def fixed_header(info):
    """No owner, time or permission detail from this machine in the archive."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    info.mode = 0o444
    return info


def add_bytes(archive, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o444
    info.mtime = 0
    archive.addfile(info, io.BytesIO(data))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--layer-mib", type=int, default=256)
    parser.add_argument("--tag", default="bench/big:1")
    parser.add_argument("--seed-store")
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(args.out)))
    layers = []
    for i in range(args.layers):
        path = os.path.join(workdir, f"layer{i}.tar")
        diff_id, size = make_layer(path, i, args.layer_mib << 20)
        layers.append((path, diff_id, size))

    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "2024-01-01T00:00:00Z",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{d}" for _, d, _ in layers]},
            "history": [{"created": "2024-01-01T00:00:00Z", "created_by": f"layer {i}"} for i in range(len(layers))],
        },
        separators=(",", ":"),
        sort_keys=True,
    ).encode()
    config_hex = hashlib.sha256(config).hexdigest()
    oci_manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": f"sha256:{config_hex}",
                "size": len(config),
            },
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": f"sha256:{d}", "size": s}
                for _, d, s in layers
            ],
        },
        separators=(",", ":"),
    ).encode()
    manifest_hex = hashlib.sha256(oci_manifest).hexdigest()
    repo, tag = args.tag.rsplit(":", 1)
    first = repo.split("/")[0]
    if "/" in repo and ("." in first or ":" in first or first == "localhost"):
        full = args.tag
    elif "/" in repo:
        full = f"docker.io/{args.tag}"
    else:
        full = f"docker.io/library/{args.tag}"

    tmp_out = args.out + ".tmp"
    with tarfile.open(tmp_out, "w", format=tarfile.PAX_FORMAT) as archive:
        for path, diff_id, _ in layers:
            archive.add(path, arcname=f"blobs/sha256/{diff_id}", recursive=False, filter=fixed_header)
        add_bytes(archive, f"blobs/sha256/{config_hex}", config)
        add_bytes(archive, f"blobs/sha256/{manifest_hex}", oci_manifest)
        add_bytes(
            archive,
            "manifest.json",
            json.dumps(
                [
                    {
                        "Config": f"blobs/sha256/{config_hex}",
                        "RepoTags": [args.tag],
                        "Layers": [f"blobs/sha256/{d}" for _, d, _ in layers],
                    }
                ]
            ).encode(),
        )
        add_bytes(
            archive,
            "index.json",
            json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.index.v1+json",
                    "manifests": [
                        {
                            "mediaType": "application/vnd.oci.image.manifest.v1+json",
                            "digest": f"sha256:{manifest_hex}",
                            "size": len(oci_manifest),
                            "annotations": {
                                "io.containerd.image.name": full,
                                "org.opencontainers.image.ref.name": tag,
                            },
                        }
                    ],
                }
            ).encode(),
        )
        add_bytes(archive, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
    os.replace(tmp_out, args.out)

    if args.seed_store:
        blobs = os.path.join(args.seed_store, "blobs", "sha256")
        os.makedirs(blobs, mode=0o700, exist_ok=True)
        for path, diff_id, _ in layers:
            target = os.path.join(blobs, diff_id)
            os.replace(path, target)
            os.chmod(target, 0o444)
        target = os.path.join(blobs, config_hex)
        with open(target, "wb") as f:
            f.write(config)
        os.chmod(target, 0o444)
        now = datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")
        index_path = os.path.join(args.seed_store, "images.json")
        index = {"format": 1, "images": {}, "tags": {}}
        if os.path.exists(index_path):
            with open(index_path) as f:
                index = json.load(f)
        index["images"][f"sha256:{config_hex}"] = {"added": now, "last_tag_time": now}
        index["tags"][full] = f"sha256:{config_hex}"
        with open(index_path, "w") as f:
            json.dump(index, f, indent=2)

    for path, _, _ in layers:
        if os.path.exists(path):
            os.remove(path)
    os.rmdir(workdir)
    print(f"sha256:{config_hex}")


if __name__ == "__main__":
    main()
