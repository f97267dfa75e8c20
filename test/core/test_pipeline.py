"""QueryPipeline on the hand-built two-cube scene of test_voting: statuses and the snapshot contract."""

from __future__ import annotations

import numpy as np

from mllm3d_ros.backends.base import BackendError, BackendUnavailable
from mllm3d_ros.core.pipeline import QueryConfig, QueryPipeline
from mllm3d_ros.core.types import MapSnapshot, QueryStatus, SegmentationResult, ViewPredictions
from mllm3d_ros.core.view_selection import ViewSelectionConfig
from test_voting import BOX_A, EYES, Q, in_box, make_scene, make_views, pred


class GrowingMap:
    """A map source whose map gains points after every snapshot, as a live mapper's would."""

    def __init__(self, snapshot: MapSnapshot, keyframes) -> None:
        self._snapshot, self._keyframes, self.calls = snapshot, tuple(keyframes), 0

    def snapshot(self) -> MapSnapshot:
        current = self._snapshot
        self.calls += 1
        extra = np.full((50, 3), 9.0, np.float32)  # far away: what fusion added meanwhile
        self._snapshot = MapSnapshot(np.concatenate([current.points_world_m, extra]),
                                     np.zeros((current.num_points + 50, 3), np.uint8), None, current.stamp_ns + 1)
        return current

    def keyframes(self):
        return self._keyframes


def _pipeline(segment_fn, snapshot=None, **config):
    keyframes, ids = make_views(EYES)
    source = GrowingMap(snapshot if snapshot is not None else make_scene(), keyframes)
    return QueryPipeline(source, lambda views, text: segment_fn(views, text, ids), QueryConfig(**config),
                         view_selection=ViewSelectionConfig(min_gain_frac=0.0)), source


def _cube_a(views, text, ids):
    return SegmentationResult("cube", Q, tuple(ViewPredictions(v.keyframe_id, (pred(ids[v.keyframe_id] == 0),))
                                                for v in views))


def test_success_carries_the_snapshot_the_indices_refer_to():
    pipeline, source = _pipeline(_cube_a)
    stages = []
    result = pipeline.run("the cube on the left", progress=lambda s, p: stages.append(s))
    assert result.status is QueryStatus.SUCCESS and result.target_phrase == "cube"
    assert source.calls == 1 and result.snapshot is not None
    # The map grew after the query's snapshot: indices must be read against the snapshot returned.
    assert result.snapshot.num_points < source.snapshot().num_points
    obj = result.objects[0]
    assert np.all(in_box(result.snapshot.points_world_m[obj.point_indices], BOX_A, margin=0.05))
    assert stages[0] == "selecting views" and stages[-1] == "done" and "voting" in stages
    assert result.views_used >= 2 and set(result.timings_ms) >= {"select_views_ms", "segment_ms", "vote_ms"}


def test_statuses_for_bad_input_empty_map_cancel_and_backend_failures():
    empty = MapSnapshot(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), None, 0)
    assert _pipeline(_cube_a, snapshot=empty)[0].run("the cube").status is QueryStatus.MAP_EMPTY
    pipeline, _ = _pipeline(_cube_a)
    assert pipeline.run("   ").status is QueryStatus.INVALID_INSTRUCTION
    assert pipeline.run(b"\xff\xfe").status is QueryStatus.INVALID_INSTRUCTION
    assert pipeline.run("the cube", max_views=99).status is QueryStatus.INVALID_GOAL
    assert pipeline.run("the cube", min_confidence=2.0).status is QueryStatus.INVALID_GOAL
    canceled = pipeline.run("the cube", is_canceled=lambda: True)
    assert canceled.status is QueryStatus.CANCELED and canceled.snapshot is None

    def gone(views, text, ids):
        raise BackendUnavailable("segmentation node is gone")

    def broken(views, text, ids):
        raise BackendError("CUDA out of memory")

    result = _pipeline(gone)[0].run("the cube")
    assert result.status is QueryStatus.BACKEND_UNAVAILABLE and "gone" in result.message
    assert _pipeline(broken)[0].run("the cube").status is QueryStatus.BACKEND_ERROR


def test_masks_on_nothing_give_not_found():
    def nothing(views, text, ids):
        return SegmentationResult("unicorn", Q, tuple(ViewPredictions(v.keyframe_id) for v in views))

    result = _pipeline(nothing)[0].run("the unicorn")
    assert result.status is QueryStatus.NOT_FOUND and "unicorn" in result.message and not result.objects
