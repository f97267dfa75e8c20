"""benchmarks.gpu: skips cleanly without a GPU or weights (exit 3, the reason in the JSON); with the tiny
random models on CPU it runs the kitchen set and a relational room end to end through the transformers
backend and writes the offline benchmarks' JSON plus seconds per query and peak memory."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # the repository root: the benchmarks package

from benchmarks import gpu  # noqa: E402
from benchmarks.real import DEFAULT_DATASET  # noqa: E402

torch = pytest.importorskip("torch")


def _tiny() -> Path:
    spec = importlib.util.spec_from_file_location("make_tiny_models", REPO / "test" / "fixtures" / "make_tiny_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.tiny_models_dir()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the skip on machines without CUDA")
def test_without_a_gpu_it_skips_with_exit_3_and_says_why(tmp_path, capsys):
    out = tmp_path / "gpu.json"
    assert gpu.main(["--json", str(out)]) == gpu.EXIT_SKIPPED == 3
    assert json.loads(out.read_text())["skipped"].startswith("no CUDA device")
    assert "benchmarks.gpu: skipped: no CUDA device" in capsys.readouterr().err


def test_without_the_weights_it_skips_with_exit_3_and_names_them(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    out = tmp_path / "gpu.json"
    tiny = _tiny()
    code = gpu.main(["--json", str(out), "--device", "cpu", "--vlm", "Qwen/Qwen2.5-VL-7B-Instruct",
                     "--sam", str(tiny / "sam"), "--detector", str(tmp_path / "no-such-dir")])
    assert code == 3
    reason = json.loads(out.read_text())["skipped"]
    assert "vlm Qwen/Qwen2.5-VL-7B-Instruct: not in the local Hugging Face cache" in reason
    assert "huggingface-cli download Qwen/Qwen2.5-VL-7B-Instruct" in reason
    assert f"detector {tmp_path / 'no-such-dir'}: no such directory" in reason and "sam " not in reason


def test_the_memory_estimate_follows_its_formula():
    spec = next(s for s in gpu.VLMS if s.name == "Qwen/Qwen2.5-VL-7B-Instruct")
    m = gpu.memory_estimate(spec, 224, 155)
    assert m["image_tokens"] == 391  # 640x480 -> 644x476 (smart_resize, factor 28) -> 23 x 17 tokens
    assert m["weights_gb"] == pytest.approx((8.29e9 + 379e6) * 2 / 1e9)
    assert m["kv_gb"] == pytest.approx(2 * 28 * 4 * 128 * 2 * (391 + 400 + 384) * 4 / 1e9)
    assert m["logits_gb"] == pytest.approx(384 * 4 * 152064 * 4 / 1e9)
    assert 18.0 < m["total_gb"] < 24.0  # the GPU preset fits a 24 GB card
    assert "Qwen2.5-VL-7B-Instruct | 391 | sam2.1-hiera-large" in gpu.estimate_table()


@pytest.mark.skipif(not DEFAULT_DATASET.is_dir(), reason="needs ../shared/data/7scenes-redkitchen (CI has it)")
def test_tiny_models_run_both_sets_end_to_end_on_cpu(tmp_path, capsys):
    tiny = _tiny()
    out = tmp_path / "gpu.json"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = gpu.main(["--json", str(out), "--device", "cpu", "--dtype", "float32", "--vlm", str(tiny / "qwen2_5_vl"),
                         "--sam", str(tiny / "sam2_video"), "--detector", str(tiny / "owlv2"), "--max-new-tokens", "8",
                         "--stride", "10", "--kitchen-queries", "2", "--rooms", "1", "--frames", "12",
                         "--relational-queries", "2"])
    finally:
        torch.set_num_threads(threads)
    assert code == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["backend"]["sam_model"].endswith("sam2_video")
    kitchen = report["kitchen"]
    # benchmarks.real's JSON, on the two queries asked for
    assert [q["instruction"] for q in kitchen["queries"]] == ["the table", "a chair"]
    assert {"main", "per_class", "per_kind", "relational", "query_s_median", "frames_fused"} <= set(kitchen)
    assert 0 < kitchen["frames_fused"] <= 30
    assert report["kitchen_seconds_per_query"]["queries"] == 2 and report["kitchen_seconds_per_query"]["median"] > 0
    relational = report["relational"]
    # benchmarks.spatial's JSON, the transformers backend in the offline backend's place
    assert relational["rooms"] == 1 and relational["offline"] is None
    assert relational["transformers"]["queries"] == 2 and relational["sim_p03"]["queries"] == 2
    assert {r["backend"] for r in relational["queries"]} == {"sim", "transformers"}
    assert report["relational_seconds_per_query"]["queries"] == 2
    for part in ("after_load", "kitchen_memory", "relational_memory"):
        assert report[part]["peak_gpu_allocated_mb"] is None and report[part]["peak_rss_mb"] > 0
