#!/usr/bin/env python3
"""Package the filter as an OCI image that Istio's WasmPlugin can pull (`make oci`).

No Docker daemon: this writes the image as an OCI image layout, Python 3 stdlib only.
The image is the Wasm image spec's "compat" variant, the one Istio reads when you
`docker build` a `FROM scratch` image with `ADD plugin.wasm ./` (istio/Dockerfile):
one layer, a gzip'd tar (application/vnd.oci.image.layer.v1.tar+gzip) holding the
single file `plugin.wasm`, a plain OCI image config, an OCI image manifest.
The output is deterministic (fixed tar metadata, gzip mtime 0, sorted compact JSON),
so the same .wasm always gives the same manifest digest.

    python3 istio/oci.py target/canary-router.wasm target/oci/canary-router \
        --archive target/oci/canary-router.tar --digests target/oci/digests.txt --tag 0.1.0

writes the layout directory, an OCI archive (the layout as one tar) and digests.txt:
  wasm_sha256      sha256 of the .wasm itself (what a WasmPlugin with an http(s):// url pins)
  manifest_digest  the image digest (what a WasmPlugin with an oci:// url pins, either as
                   `url: oci://REGISTRY/canary-router@sha256:<hex>` or as `sha256: <hex>`:
                   for OCI images Istio compares `sha256` with the MANIFEST digest, not
                   with the .wasm's hash)

Push it (pick one; none needs a Docker daemon; all keep the manifest bytes, so the
registry's digest is manifest_digest):
  skopeo copy oci-archive:target/oci/canary-router.tar docker://REGISTRY/canary-router:0.1.0
  skopeo copy oci:target/oci/canary-router:0.1.0 docker://REGISTRY/canary-router:0.1.0
  oras cp --from-oci-layout target/oci/canary-router:0.1.0 REGISTRY/canary-router:0.1.0
  crane push target/oci/canary-router REGISTRY/canary-router:0.1.0
Check it: `crane digest REGISTRY/canary-router:0.1.0` (or `skopeo inspect`) prints
manifest_digest. With a Docker daemon instead: istio/Dockerfile (its digest differs:
docker adds timestamps and its own config fields).
"""

import argparse
import hashlib
import io
import json
import os
import shutil
import struct
import sys
import tarfile
import zlib

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
PLUGIN_NAME = "plugin.wasm"  # the file name the compat variant requires
FIXED_MTIME = 0  # every timestamp in the image


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8")


def single_file_tar(name: str, data: bytes, mode: int = 0o644) -> bytes:
    """A ustar archive holding one regular file, owned by 0:0, with a fixed mtime."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(_tarinfo(name, tarfile.REGTYPE, mode, len(data)), io.BytesIO(data))
    return buf.getvalue()


def _tarinfo(name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.mtime = FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def deterministic_gzip(data: bytes) -> bytes:
    """One gzip member with a fixed header (mtime 0, no name, OS 255), level 9.

    Built by hand rather than with gzip.compress, whose header bytes differ between
    Python versions; the deflate stream itself depends only on zlib.
    """
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    body = deflate.compress(data) + deflate.flush()
    # magic, CM=deflate, FLG=0, MTIME=0, XFL=2 (max compression), OS=255 (unknown)
    header = b"\x1f\x8b\x08\x00" + struct.pack("<I", FIXED_MTIME) + b"\x02\xff"
    trailer = struct.pack("<II", zlib.crc32(data) & 0xFFFFFFFF, len(data) & 0xFFFFFFFF)
    return header + body + trailer


def descriptor(media_type: str, data: bytes) -> dict:
    return {"mediaType": media_type, "digest": "sha256:" + sha256_hex(data), "size": len(data)}


def build_image(wasm: bytes, arch: str, os_name: str):
    """Return (blobs by hex digest, manifest descriptor, details) of the compat image."""
    layer_tar = single_file_tar(PLUGIN_NAME, wasm)
    layer = deterministic_gzip(layer_tar)
    # What `docker build` of FROM scratch + ADD yields, minus the timestamps and the
    # builder's bookkeeping: platform fields, the layer's diff_id, an empty run config.
    config = canonical_json(
        {
            "architecture": arch,
            "os": os_name,
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + sha256_hex(layer_tar)]},
        }
    )
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": descriptor(MT_CONFIG, config),
            "layers": [descriptor(MT_LAYER, layer)],
        }
    )
    blobs = {sha256_hex(b): b for b in (layer, config, manifest)}
    details = {
        "wasm_sha256": sha256_hex(wasm),
        "wasm_size": len(wasm),
        "manifest_digest": "sha256:" + sha256_hex(manifest),
        "manifest_size": len(manifest),
        "config_digest": "sha256:" + sha256_hex(config),
        "layer_digest": "sha256:" + sha256_hex(layer),
        "layer_diff_id": "sha256:" + sha256_hex(layer_tar),
    }
    return blobs, descriptor(MT_MANIFEST, manifest), details


def layout_files(blobs: dict, manifest_desc: dict, tag: str) -> dict:
    """Relative path -> bytes of the whole OCI image layout."""
    entry = dict(manifest_desc)
    if tag:
        entry["annotations"] = {"org.opencontainers.image.ref.name": tag}
    index = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [entry]}
    files = {
        "oci-layout": canonical_json({"imageLayoutVersion": "1.0.0"}),
        "index.json": canonical_json(index),
    }
    for hexdigest, data in blobs.items():
        files["blobs/sha256/" + hexdigest] = data
    return files


def write_layout(out_dir: str, files: dict) -> None:
    """Replace out_dir with the layout (only ever removes a previous OCI layout)."""
    if os.path.exists(out_dir):
        is_layout = os.path.isfile(os.path.join(out_dir, "oci-layout"))
        if not is_layout and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
            sys.exit(f"oci.py: {out_dir} exists and is not an OCI layout; not overwriting it")
    tmp = out_dir.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for rel, data in files.items():
        path = os.path.join(tmp, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)


def archive_bytes(files: dict) -> bytes:
    """The layout as one tar (an OCI archive: `skopeo copy oci-archive:...`), deterministic."""
    dirs = sorted({os.path.dirname(rel) for rel in files if os.path.dirname(rel)} | {"blobs"})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for d in dirs:
            tar.addfile(_tarinfo(d + "/", tarfile.DIRTYPE, 0o755))
        for rel in sorted(files):
            data = files[rel]
            tar.addfile(_tarinfo(rel, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
    return buf.getvalue()


def write_atomic(path: str, data: bytes) -> None:
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.replace(path + ".tmp", path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("wasm", help="the filter, e.g. target/canary-router.wasm")
    p.add_argument("out", help="OCI image layout directory to (re)write")
    p.add_argument("--archive", help="also write the layout as this tar (OCI archive)")
    p.add_argument("--digests", help="also write key=value digests to this file")
    p.add_argument("--tag", default="latest", help="org.opencontainers.image.ref.name (default latest)")
    p.add_argument("--arch", default="amd64", help="config architecture (default amd64, as docker would)")
    p.add_argument("--os", dest="os_name", default="linux", help="config os (default linux)")
    args = p.parse_args(argv)

    with open(args.wasm, "rb") as f:
        wasm = f.read()
    if wasm[:4] != b"\0asm":
        sys.exit(f"oci.py: {args.wasm} is not a Wasm module (no \\0asm magic)")

    blobs, manifest_desc, d = build_image(wasm, args.arch, args.os_name)
    files = layout_files(blobs, manifest_desc, args.tag)
    write_layout(args.out, files)
    if args.archive:
        write_atomic(args.archive, archive_bytes(files))

    lines = [
        f"wasm_sha256={d['wasm_sha256']}",
        f"wasm_size={d['wasm_size']}",
        f"manifest_digest={d['manifest_digest']}",
        f"manifest_size={d['manifest_size']}",
        f"config_digest={d['config_digest']}",
        f"layer_digest={d['layer_digest']}",
        f"layer_diff_id={d['layer_diff_id']}",
        f"tag={args.tag}",
    ]
    if args.digests:
        write_atomic(args.digests, ("\n".join(lines) + "\n").encode())

    print(f"OCI image layout {args.out}" + (f", archive {args.archive}" if args.archive else ""))
    print(f"  wasm sha256:     {d['wasm_sha256']}  ({args.wasm}, {d['wasm_size']} bytes)")
    print(f"  manifest digest: {d['manifest_digest']}  (tag {args.tag})")
    print("  WasmPlugin: url: oci://REGISTRY/canary-router@" + d["manifest_digest"]
          + "  (or a tag plus sha256: " + d["manifest_digest"][len("sha256:"):] + ")")
    if args.digests:
        print(f"  written to {args.digests}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
