"""Multi-view voting on small hand-built scenes with analytic (ray-cast) depth and known answers."""

from __future__ import annotations

import numpy as np
import pytest

from mllm3d_ros.core.config import ConfigError
from mllm3d_ros.core.visibility import visible_mask
from mllm3d_ros.core.types import (CameraIntrinsics, InputError, Keyframe, MapSnapshot, Prediction2D,
                                   ViewPredictions)
from mllm3d_ros.core.clustering import cluster_points
from mllm3d_ros.core.memory.evidence import grow_mask, lift_masks, point_votes, token_for_query_weights, unified_query_embedding
from mllm3d_ros.core.memory.object_geometry import complete_object, oriented_box, strip_support_surface
from mllm3d_ros.core.visibility import ViewProjection, project_to_view
from mllm3d_ros.core.query.voting import MultiViewVoter, VotingConfig

INTRINSICS = CameraIntrinsics(96, 72, 80.0, 80.0, 47.5, 35.5)
# Two 0.4 m cubes on a floor, 0.4 m apart in y.
BOX_A = (np.array([0.8, -0.6, 0.0]), np.array([1.2, -0.2, 0.4]))
BOX_B = (np.array([0.8, 0.2, 0.0]), np.array([1.2, 0.6, 0.4]))
FLOOR = (np.array([-0.5, -1.5, -0.02]), np.array([2.5, 1.5, 0.0]))


def look_at(eye, target) -> np.ndarray:
    """world_T_camera of an optical-frame camera at `eye` looking at `target` (world z up)."""
    eye, target = np.asarray(eye, float), np.asarray(target, float)
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([x, np.cross(z, x), z], axis=1)
    pose[:3, 3] = eye
    return pose


def render(world_T_camera, boxes) -> tuple[np.ndarray, np.ndarray]:
    """Ray-cast axis-aligned boxes: depth (H, W) float32 metres (0 = nothing hit), box index (H, W) (-1)."""
    rows, cols = np.mgrid[0:INTRINSICS.height, 0:INTRINSICS.width]
    dirs_cam = np.stack([(cols - INTRINSICS.cx) / INTRINSICS.fx, (rows - INTRINSICS.cy) / INTRINSICS.fy,
                         np.ones_like(rows, float)], axis=-1).reshape(-1, 3)
    dirs = dirs_cam @ world_T_camera[:3, :3].T
    origin = world_T_camera[:3, 3]
    best_t = np.full(dirs.shape[0], np.inf)
    best_id = np.full(dirs.shape[0], -1)
    with np.errstate(divide="ignore", invalid="ignore"):
        for i, (lo, hi) in enumerate(boxes):
            t1, t2 = (lo - origin) / dirs, (hi - origin) / dirs
            t_near = np.nanmax(np.minimum(t1, t2), axis=1)
            t_far = np.nanmin(np.maximum(t1, t2), axis=1)
            hit = (t_near <= t_far) & (t_near > 0) & (t_near < best_t)
            best_t[hit], best_id[hit] = t_near[hit], i
    depth = np.where(np.isfinite(best_t), best_t, 0.0)  # dirs_cam has z = 1, so t is the optical depth
    shape = (INTRINSICS.height, INTRINSICS.width)
    return depth.reshape(shape).astype(np.float32), best_id.reshape(shape)


def box_surface(lo, hi, step=0.02) -> np.ndarray:
    """Points on the six faces of an axis-aligned box, `step` metres apart."""
    axes = [np.arange(lo[d], hi[d] + 1e-9, step) for d in range(3)]
    pts = []
    for d in range(3):
        a, b = [axes[e] for e in range(3) if e != d]
        ga, gb = np.meshgrid(a, b, indexing="ij")
        for value in (lo[d], hi[d]):
            face = np.zeros((ga.size, 3))
            face[:, [e for e in range(3) if e != d]] = np.stack([ga.ravel(), gb.ravel()], axis=1)
            face[:, d] = value
            pts.append(face)
    return np.unique(np.round(np.concatenate(pts), 6), axis=0)


def floor_points(step=0.04) -> np.ndarray:
    gx, gy = np.meshgrid(np.arange(-0.5, 2.5, step), np.arange(-1.5, 1.5, step), indexing="ij")
    return np.stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)], axis=1)


def in_box(points, box, margin=1e-6) -> np.ndarray:
    lo, hi = box
    return np.all((points >= lo - margin) & (points <= hi + margin), axis=1)


def make_scene(boxes=(BOX_A, BOX_B)):
    pts = np.concatenate([floor_points()] + [box_surface(*b) for b in boxes]).astype(np.float32)
    return MapSnapshot(pts, np.zeros((pts.shape[0], 3), np.uint8), None, stamp_ns=0)


def make_views(eyes, boxes=(BOX_A, BOX_B), target=(1.0, 0.0, 0.2)):
    """Keyframes at `eyes` looking at `target`, with depth and the per-pixel box index."""
    keyframes, ids = [], []
    for k, eye in enumerate(eyes):
        pose = look_at(eye, target)
        depth, box_id = render(pose, (FLOOR,) + tuple(boxes))
        keyframes.append(Keyframe(k, k, pose, INTRINSICS, np.zeros(depth.shape + (3,), np.uint8), depth))
        ids.append(box_id - 1)  # -1 floor / nothing, 0 = first box ...
    return keyframes, ids


EYES = [(-0.6, 0.0, 1.3), (0.0, -1.6, 1.2), (0.0, 1.6, 1.2), (2.6, -1.2, 1.3)]
Q = np.eye(8, dtype=np.float32)[0]
ORTHO = np.eye(8, dtype=np.float32)[1]


def pred(mask, confidence=0.9, embedding=Q, label=""):
    return Prediction2D(mask=mask, confidence=confidence, embedding=embedding, label=label)


# --------------------------------------------------------------------------------------------- config

@pytest.mark.parametrize("field,value", [("min_mask_confidence", 1.5), ("depth_tolerance_m", 0.0),
                                         ("min_positive_ratio", 0.0), ("cluster_voxel_size_m", -1.0),
                                         ("min_cluster_points", 0), ("max_objects", 2.5),
                                         ("min_support_ratio", 1.2), ("min_supporting_views", 0), ("min_association_similarity", -2.0),
                                         ("mask_boundary_px", -1), ("strip_support", 1), ("discredit_views", "yes"),
                                         ("drop_borrowed_support", 0)])
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        VotingConfig(**{field: value})


# ------------------------------------------------------------------------------------ free functions

def test_projection_agrees_with_keyframes_visible_mask():
    snapshot = make_scene()
    keyframes, _ = make_views(EYES)
    for kf in keyframes:
        proj = project_to_view(snapshot.points_world_m, kf, 0.05, 0.03)
        ours = np.zeros(snapshot.num_points, bool)
        ours[proj.visible_indices] = True
        reference = visible_mask(snapshot.points_world_m, kf, depth_tolerance_m=0.05, depth_tolerance_frac=0.03)
        assert ours.sum() > 500
        assert np.count_nonzero(ours != reference) <= 0.002 * snapshot.num_points  # float32 vs float64 rounding


def test_occluded_points_get_no_evidence_against_them():
    # View 0 looks along +x at box B with box A hidden right behind it; views 1 and 2 see A from the sides.
    box_a = (np.array([1.8, -0.2, 0.0]), np.array([2.2, 0.2, 0.4]))
    box_b = (np.array([0.8, -0.3, 0.0]), np.array([1.2, 0.3, 0.5]))
    snapshot = make_scene((box_a, box_b))
    keyframes, ids = make_views([(-0.5, 0.0, 0.3), (2.0, -1.8, 1.0), (2.0, 1.8, 1.0)], (box_a, box_b),
                                target=(2.0, 0.0, 0.2))
    assert not np.any(ids[0] == 0), "A must be hidden in view 0"
    views = [ViewPredictions(0, (pred(ids[0] == 1, embedding=ORTHO),)),  # view 0 segments B (off-query)
             ViewPredictions(1, (pred(ids[1] == 0),)), ViewPredictions(2, (pred(ids[2] == 0),))]
    result = MultiViewVoter().vote(snapshot, keyframes, views, Q)
    a_points = in_box(snapshot.points_world_m, box_a)
    proj0 = project_to_view(snapshot.points_world_m, keyframes[0], 0.05, 0.03)
    assert not np.any(a_points[proj0.visible_indices])  # no A point is visible in view 0
    assert len(result.objects) == 1
    found = np.zeros(snapshot.num_points, bool)
    found[result.objects[0].point_indices] = True
    seen_from_sides = np.zeros(snapshot.num_points, bool)
    for kf in keyframes[1:]:
        seen_from_sides[project_to_view(snapshot.points_world_m, kf, 0.05, 0.03).visible_indices] = True
    assert found[a_points & seen_from_sides].mean() > 0.9
    assert np.all(a_points[found])
    assert result.objects[0].visible_views == 2 and result.objects[0].supporting_views == 2


def test_point_votes_weights_and_occlusion_by_hand():
    # 4 points; view 0 sees 0,1,2 (mask on 0, 1); view 1 sees 1,2 (mask on 2); point 3 is never seen.
    p0 = ViewProjection(0, np.array([0, 1, 2]), np.array([0, 1, 2]), (1, 3))
    p1 = ViewProjection(1, np.array([1, 2]), np.array([0, 1]), (1, 2))
    hits = [lift_masks(p0, [np.array([[True, True, False]]), np.array([[True, False, False]])]),
            lift_masks(p1, [np.array([[False, True]])])]
    votes = point_votes(4, [p0, p1], hits, [np.array([0.5, 0.8]), np.array([0.6])], [0.8, 0.6])
    np.testing.assert_allclose(votes.positive, [0.8, 0.5, 0.6, 0.0])  # max over overlapping masks of a view
    np.testing.assert_allclose(votes.negative, [0.0, 0.6, 0.8, 0.0])
    np.testing.assert_allclose(votes.ratio, [1.0, 0.5 / 1.1, 0.6 / 1.4, 0.0], rtol=1e-6)


def test_point_votes_boundary_band_counts_neither_way():
    # One view sees points 0..3 at pixels 0..3 of a 1x4 image; the mask is pixel 0, the band (the mask
    # grown by 1 px) covers pixels 0 and 1: point 1 gets no evidence, points 2 and 3 negative evidence.
    proj = ViewProjection(0, np.arange(4), np.arange(4), (1, 4))
    mask = np.array([[True, False, False, False]])
    hits = [lift_masks(proj, [mask])]
    near = [grow_mask(mask, 1).ravel()[proj.pixel_index]]
    votes = point_votes(4, [proj], hits, [np.array([0.8])], [0.5], near)
    np.testing.assert_allclose(votes.positive, [0.8, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(votes.negative, [0.0, 0.0, 0.5, 0.5])
    exact = point_votes(4, [proj], hits, [np.array([0.8])], [0.5])
    np.testing.assert_allclose(exact.negative, [0.0, 0.5, 0.5, 0.5])


def test_grow_mask_by_hand():
    mask = np.zeros((7, 7), bool)
    mask[3, 3] = True
    np.testing.assert_array_equal(np.argwhere(grow_mask(mask, 1)).min(0), [2, 2])
    assert grow_mask(mask, 1).sum() == 9 and grow_mask(mask, 2).sum() == 25  # square neighbourhoods
    corner = np.zeros((4, 4), bool)
    corner[0, 0] = True
    assert grow_mask(corner, 2).sum() == 9  # clipped at the image border
    np.testing.assert_array_equal(grow_mask(mask, 0), mask)


def test_token_for_query_downweights_orthogonal_embedding():
    half = np.array([np.sqrt(0.5), np.sqrt(0.5)] + [0.0] * 6, np.float32)
    w = token_for_query_weights(np.array([0.9, 0.9, 0.5]), np.stack([Q, ORTHO, half]), Q)
    np.testing.assert_allclose(w, [0.9, 0.0, 0.5 * np.sqrt(0.5)], rtol=1e-6)
    # An anti-aligned embedding is clipped at zero, never negative.
    assert token_for_query_weights(np.array([1.0]), -Q[None], Q)[0] == 0.0


def test_unified_query_is_confidence_weighted_mean_when_not_given():
    q = unified_query_embedding(np.stack([Q, ORTHO]), np.array([0.75, 0.25]))
    np.testing.assert_allclose(q, np.array([3, 1, 0, 0, 0, 0, 0, 0]) / np.sqrt(10), rtol=1e-6)
    np.testing.assert_allclose(unified_query_embedding(np.zeros((0, 8)), np.zeros(0), 2 * ORTHO), ORTHO)
    assert unified_query_embedding(np.zeros((0, 8)), np.zeros(0)) is None


def test_cluster_points_separates_groups_and_drops_specks():
    a = box_surface(np.zeros(3), np.full(3, 0.2))
    b = a + [1.0, 0.0, 0.0]
    speck = np.array([[3.0, 3.0, 3.0], [3.01, 3.0, 3.0]])
    clusters = cluster_points(np.concatenate([a, b[:100], speck]), voxel_size_m=0.05, min_points=5)
    assert clusters.num_clusters == 2 and clusters.num_discarded == 1
    labels = clusters.labels
    assert set(labels[: len(a)]) == {0} and set(labels[len(a): len(a) + 100]) == {1}  # larger group first
    assert np.all(labels[-2:] == -1)


def test_oriented_box_of_axis_aligned_and_yawed_cuboids():
    pts = box_surface(np.array([1.0, 2.0, 0.0]), np.array([1.6, 2.2, 0.3]))
    box = oriented_box(pts)
    np.testing.assert_allclose(box.center_world_m, [1.3, 2.1, 0.15], atol=1e-6)
    np.testing.assert_allclose(box.size_m, [0.6, 0.2, 0.3], atol=1e-6)
    np.testing.assert_allclose(np.abs(box.world_R_box[:, 0]), [1, 0, 0], atol=1e-6)
    yaw = np.deg2rad(30.0)
    rot = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
    yawed = oriented_box((pts - [1.3, 2.1, 0.15]) @ rot.T + [5.0, 0.0, 1.0])
    np.testing.assert_allclose(yawed.size_m, [0.6, 0.2, 0.3], atol=1e-6)
    np.testing.assert_allclose(yawed.center_world_m, [5.0, 0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(yawed.world_R_box[:, 0], rot[:, 0], atol=1e-6)
    np.testing.assert_allclose(yawed.world_R_box[:, 2], [0, 0, 1])


# -------------------------------------------------------------------------------------------- voter

def _found(snapshot, obj):
    found = np.zeros(snapshot.num_points, bool)
    found[obj.point_indices] = True
    return found


def test_consistent_target_is_found_with_its_box_and_support():
    snapshot = make_scene()
    keyframes, ids = make_views(EYES)
    views = [ViewPredictions(k, (pred(ids[k] == 0, label="cube"),)) for k in range(4)]
    result = MultiViewVoter().vote(snapshot, keyframes, views, Q)
    assert len(result.objects) == 1
    obj = result.objects[0]
    a_points = in_box(snapshot.points_world_m, BOX_A)
    found = _found(snapshot, obj)
    iou = (found & a_points).sum() / (found | a_points).sum()
    assert iou > 0.6  # the hidden bottom face and a few grazing points are never seen
    assert obj.supporting_views == obj.visible_views == 4
    assert obj.label == "cube"
    completed = obj.point_confidence == VotingConfig().completion_point_confidence  # never seen: lower confidence
    assert 0.0 < obj.confidence <= 1.0 and np.all((obj.point_confidence[~completed] >= 0.5)
                                                  & (obj.point_confidence[~completed] <= 1.0))
    np.testing.assert_allclose(obj.box.center_world_m[:2], [1.0, -0.4], atol=0.03)
    assert result.diagnostics.masks_used == 4 and result.timings.total_ms > 0


def test_hallucinated_mask_in_one_of_four_views_is_rejected():
    snapshot = make_scene()
    keyframes, ids = make_views(EYES)
    views = [ViewPredictions(k, (pred(ids[k] == 0),)) for k in range(3)]
    # View 3 also "sees" the target on box B, confidently and with the query's own embedding.
    views.append(ViewPredictions(3, (pred(ids[3] == 0), pred(ids[3] == 1, confidence=0.95))))
    result = MultiViewVoter().vote(snapshot, keyframes, views, Q)
    assert len(result.objects) == 1
    found = _found(snapshot, result.objects[0])
    assert not np.any(found & in_box(snapshot.points_world_m, BOX_B))
    assert found[in_box(snapshot.points_world_m, BOX_A)].mean() > 0.6


def test_point_seen_outside_the_mask_loses():
    # Only view 0 masks A; views 1-3 see A but mask B instead, so A is outvoted and B wins.
    snapshot = make_scene()
    keyframes, ids = make_views(EYES)
    views = [ViewPredictions(0, (pred(ids[0] == 0),))] + [ViewPredictions(k, (pred(ids[k] == 1),)) for k in (1, 2, 3)]
    result = MultiViewVoter().vote(snapshot, keyframes, views, Q)
    a_points = in_box(snapshot.points_world_m, BOX_A)
    assert all(not np.any(_found(snapshot, o) & a_points) for o in result.objects)
    assert _found(snapshot, result.objects[0])[in_box(snapshot.points_world_m, BOX_B)].mean() > 0.5


def test_token_for_query_removes_confident_off_query_object():
    # Every view masks both cubes with high confidence, but B's masks mean something else.
    snapshot = make_scene()
    keyframes, ids = make_views(EYES)
    views = [ViewPredictions(k, (pred(ids[k] == 0, 0.6), pred(ids[k] == 1, 0.99, ORTHO))) for k in range(4)]
    result = MultiViewVoter().vote(snapshot, keyframes, views, Q)
    assert result.diagnostics.masks_dropped_off_query == 4
    assert len(result.objects) == 1
    assert not np.any(_found(snapshot, result.objects[0]) & in_box(snapshot.points_world_m, BOX_B))
    # Without a given query, q is the confidence-weighted mean, and A still outweighs B per view only if
    # its embedding dominates: here B's confidence dominates, so B wins (the voter follows the evidence).
    no_query = MultiViewVoter().vote(snapshot, keyframes, views, None)
    assert _found(snapshot, no_query.objects[0])[in_box(snapshot.points_world_m, BOX_B)].mean() > 0.5


def test_two_masks_per_view_are_associated_to_two_objects():
    snapshot = make_scene()
    keyframes, ids = make_views(EYES)
    views = [ViewPredictions(k, (pred(ids[k] == 0, 0.9, label="left"), pred(ids[k] == 1, 0.8, label="right")))
             for k in range(4)]
    result = MultiViewVoter().vote(snapshot, keyframes, views, Q)
    assert len(result.objects) == 2
    first, second = result.objects
    assert (first.label, second.label) == ("left", "right")  # ranked by confidence: 0.9 beats 0.8
    assert first.confidence > second.confidence
    assert _found(snapshot, first)[in_box(snapshot.points_world_m, BOX_A)].mean() > 0.6
    assert _found(snapshot, second)[in_box(snapshot.points_world_m, BOX_B)].mean() > 0.6
    assert not np.any(_found(snapshot, first) & _found(snapshot, second))
    assert all(o.supporting_views == 4 and o.visible_views == 4 for o in result.objects)


def test_low_confidence_and_tiny_masks_are_dropped_first():
    snapshot = make_scene()
    keyframes, ids = make_views(EYES)
    tiny = np.zeros_like(ids[0], bool)
    tiny[10, 10:13] = True
    views = [ViewPredictions(0, (pred(ids[0] == 0, 0.1), pred(tiny))), ViewPredictions(1, ())]
    result = MultiViewVoter().vote(snapshot, keyframes, views, Q)
    d = result.diagnostics
    assert (d.masks_in, d.masks_dropped_low_confidence, d.masks_dropped_small, d.masks_used) == (2, 1, 1, 0)
    assert result.objects == ()


def test_bad_inputs_raise_input_error():
    snapshot = make_scene()
    keyframes, ids = make_views(EYES[:1])
    with pytest.raises(InputError, match="keyframe 7"):
        MultiViewVoter().vote(snapshot, keyframes, [ViewPredictions(7, ())], Q)
    with pytest.raises(InputError, match="mask is"):
        MultiViewVoter().vote(snapshot, keyframes, [ViewPredictions(0, (pred(np.ones((5, 5), bool)),))], Q)
    with pytest.raises(InputError, match="dimensions"):
        MultiViewVoter().vote(snapshot, keyframes, [ViewPredictions(0, (pred(ids[0] == 0),))], np.ones(3))


# ------------------------------------------------------------------------------------- completion

def test_completion_adds_unseen_back_faces_but_not_the_floor():
    # Two views from the -x / -y side: A's far faces (+x, +y) are never seen, neither is the floor
    # right behind A. Completion adds the former (connected, inside A's box) and not the latter.
    snapshot = make_scene()
    keyframes, ids = make_views([EYES[0], EYES[1]])
    views = [ViewPredictions(k, (pred(ids[k] == 0),)) for k in range(2)]
    pts = snapshot.points_world_m
    seen = np.zeros(snapshot.num_points, bool)
    for kf in keyframes:
        seen[project_to_view(pts, kf, 0.05, 0.03).visible_indices] = True
    a_points = in_box(pts, BOX_A)
    assert (a_points & ~seen).sum() > 200  # a real coverage gap to fill
    without = MultiViewVoter(VotingConfig(completion_margin_m=0.0)).vote(snapshot, keyframes, views, Q)
    result = MultiViewVoter().vote(snapshot, keyframes, views, Q)
    found_without, found = _found(snapshot, without.objects[0]), _found(snapshot, result.objects[0])
    assert not np.any(found_without & ~seen)  # voting alone only keeps what it saw
    iou = lambda f: (f & a_points).sum() / (f | a_points).sum()
    assert iou(found) > iou(found_without) + 0.15
    above_floor = pts[:, 2] > 0.06  # A's bottom face lies on the floor: left out with the support surface
    assert (found & a_points & ~seen & above_floor).sum() > 0.7 * (a_points & ~seen & above_floor).sum()
    floor_only = ~a_points & ~in_box(pts, BOX_B)
    assert not np.any(found & floor_only & ~seen)  # the unseen floor behind A is not part of A
    obj = result.objects[0]
    conf = dict(zip(obj.point_indices.tolist(), obj.point_confidence.tolist()))
    added = np.flatnonzero(found & ~found_without)
    assert all(conf[i] == VotingConfig().completion_point_confidence for i in added)


def test_complete_object_stays_inside_the_grown_box_and_connected():
    obj = box_surface(np.zeros(3), np.full(3, 0.2))
    near = obj + [0.0, 0.0, 0.22]  # unseen, stacked right on top: connected, but above the margin? no: 0.22 > 0.06
    far = obj + [2.0, 0.0, 0.0]  # unseen, far away
    touching = np.array([[0.1, 0.1, 0.24], [0.1, 0.1, 0.3]])  # 4 cm and 10 cm above the top face
    pts = np.concatenate([obj, near, far, touching]).astype(np.float32)
    n = obj.shape[0]
    unseen = np.arange(n, pts.shape[0])
    added = complete_object(pts, np.arange(n), unseen, voxel_size_m=0.06, margin_m=0.06)
    assert set(added.tolist()) <= set(range(n, pts.shape[0]))
    assert pts.shape[0] - 2 in added and pts.shape[0] - 1 not in added  # 4 cm in, 10 cm out of the margin
    assert not np.any(np.isin(added, np.arange(n + near.shape[0], n + near.shape[0] + far.shape[0])))
    assert complete_object(pts, np.arange(n), unseen, 0.06, 0.0).shape[0] == 0  # margin 0 disables


def test_target_seen_by_two_views_survives_one_miss():
    # Only views 0 and 1 take part; view 1's model misses A (no mask). One supporter of two seeing
    # views, unopposed except by an empty view: kept (lone_support_min_weighted_ratio), but ranked with
    # a lower confidence than a doubly confirmed object.
    snapshot = make_scene()
    keyframes, ids = make_views(EYES[:2])
    views = [ViewPredictions(0, (pred(ids[0] == 0),)), ViewPredictions(1, ())]
    result = MultiViewVoter().vote(snapshot, keyframes, views, Q)
    assert len(result.objects) == 1
    obj = result.objects[0]
    assert (obj.supporting_views, obj.visible_views) == (1, 2)
    assert _found(snapshot, obj)[in_box(snapshot.points_world_m, BOX_A)].mean() > 0.4
    both = MultiViewVoter().vote(snapshot, keyframes, [ViewPredictions(k, (pred(ids[k] == 0),)) for k in range(2)], Q)
    assert both.objects[0].confidence > obj.confidence
    strict = MultiViewVoter(VotingConfig(lone_support_min_weighted_ratio=1.0)).vote(snapshot, keyframes, views, Q)
    assert strict.objects == ()


def test_one_mask_over_two_hypotheses_supports_both():
    # The model segments "the two cubes" as one mask in every view: in 3D they are two clusters 0.4 m
    # apart, and each mask counts as support for both (not only for the one it covers most).
    snapshot = make_scene()
    keyframes, ids = make_views(EYES)
    views = [ViewPredictions(k, (pred((ids[k] == 0) | (ids[k] == 1)),)) for k in range(4)]
    result = MultiViewVoter().vote(snapshot, keyframes, views, Q)
    assert len(result.objects) == 2
    for obj in result.objects:
        assert obj.supporting_views == 4 and obj.visible_views == 4
    found = [_found(snapshot, o) for o in result.objects]
    for box in (BOX_A, BOX_B):
        inside = in_box(snapshot.points_world_m, box)
        assert max(f[inside].mean() for f in found) > 0.6


def test_objects_that_views_segment_apart_stay_apart():
    # Views 0 and 1 segment both cubes as one mask, views 2 and 3 (which see both) only cube A:
    # the best object is cube A alone.
    snapshot = make_scene()
    keyframes, ids = make_views(EYES)
    views = [ViewPredictions(k, (pred((ids[k] == 0) | (ids[k] == 1)),)) for k in (0, 1)]
    views += [ViewPredictions(k, (pred(ids[k] == 0),)) for k in (2, 3)]
    result = MultiViewVoter().vote(snapshot, keyframes, views, Q)
    first = _found(snapshot, result.objects[0])
    assert first[in_box(snapshot.points_world_m, BOX_A)].mean() > 0.6
    assert not np.any(first & in_box(snapshot.points_world_m, BOX_B))


SIX_EYES = EYES + [(2.6, 1.2, 1.3), (-0.6, 0.8, 1.3)]


def test_support_is_weighed_not_only_counted():
    snapshot = make_scene()
    keyframes, ids = make_views(SIX_EYES)
    for k in range(6):  # precondition: every view sees both cubes
        assert np.count_nonzero(ids[k] == 0) > 100 and np.count_nonzero(ids[k] == 1) > 100
    # Two confident views find cube A; four find nothing ("not found here" is weak evidence). Only 2 of
    # the 6 seeing views confirm it, but they carry most of the weight: accepted.
    views = [ViewPredictions(k, (pred(ids[k] == 0, 0.9),)) for k in (0, 1)] + \
        [ViewPredictions(k) for k in range(2, 6)]
    result = MultiViewVoter().vote(snapshot, keyframes, views, Q)
    assert result.objects and result.objects[0].supporting_views == 2 and result.objects[0].visible_views >= 5
    assert _found(snapshot, result.objects[0])[in_box(snapshot.points_world_m, BOX_A)].mean() > 0.5
    assert not any(np.any(_found(snapshot, o) & in_box(snapshot.points_world_m, BOX_B)) for o in result.objects)
    # Two weak views put the query on cube B while four confident views find cube A: B is rejected.
    views = [ViewPredictions(k, (pred(ids[k] == 1, 0.35),)) for k in (0, 1)] + \
        [ViewPredictions(k, (pred(ids[k] == 0, 0.9),)) for k in range(2, 6)]
    result = MultiViewVoter().vote(snapshot, keyframes, views, Q)
    assert len(result.objects) == 1
    assert not np.any(_found(snapshot, result.objects[0]) & in_box(snapshot.points_world_m, BOX_B))


def _erode(mask: np.ndarray) -> np.ndarray:
    """The mask without its 1-pixel boundary (3x3 erosion): a segmenter that cuts objects a bit small."""
    return ~grow_mask(~mask, 1)


def test_boundary_band_keeps_the_rim_of_slightly_small_masks():
    # Every view's mask of A is eroded by one pixel: with an exact boundary, each view that sees A's rim
    # votes against it; with the band, the rim is decided by the views that see it inside their masks.
    snapshot = make_scene()
    keyframes, ids = make_views(EYES)
    views = [ViewPredictions(k, (pred(_erode(ids[k] == 0)),)) for k in range(4)]
    a_points = in_box(snapshot.points_world_m, BOX_A)
    exact = MultiViewVoter(VotingConfig(mask_boundary_px=0)).vote(snapshot, keyframes, views, Q)
    banded = MultiViewVoter().vote(snapshot, keyframes, views, Q)
    assert len(exact.objects) == len(banded.objects) == 1
    found_exact, found = _found(snapshot, exact.objects[0]), _found(snapshot, banded.objects[0])
    assert found[a_points].mean() > found_exact[a_points].mean() + 0.08
    assert not np.any(found & ~a_points)


def _floor_patch(ids: np.ndarray) -> np.ndarray:
    """A floor-only patch along the bottom of the image, away from the cubes."""
    patch = np.zeros_like(ids, bool)
    patch[60:70, 5:30] = True
    return patch & (ids == -1)


def test_views_that_hallucinate_are_discredited_and_lose_their_negative_evidence():
    # Views 0-3 find cube A; views 4 and 5 see A too but confidently put the target on two different
    # floor patches. The patches are refuted in 3D (no other view confirms them), so views 4 and 5 are
    # discredited: A's points they see are no longer voted down by them, and A is found far more fully.
    snapshot = make_scene()
    keyframes, ids = make_views(SIX_EYES)
    assert all(_floor_patch(ids[k]).sum() > 100 for k in (4, 5))
    views = [ViewPredictions(k, (pred(ids[k] == 0, 0.6),)) for k in range(4)]
    views += [ViewPredictions(k, (pred(_floor_patch(ids[k]), 0.95),)) for k in (4, 5)]
    a_points = in_box(snapshot.points_world_m, BOX_A)
    once = MultiViewVoter(VotingConfig(discredit_views=False)).vote(snapshot, keyframes, views, Q)
    result = MultiViewVoter().vote(snapshot, keyframes, views, Q)
    assert once.diagnostics.views_discredited == 0 and result.diagnostics.views_discredited == 2
    assert len(result.objects) == 1
    obj = result.objects[0]
    # Support counting is unchanged: both hallucinating views still count as seeing A without confirming it.
    assert (obj.supporting_views, obj.visible_views) == (4, 6)
    assert obj.confidence == pytest.approx(once.objects[0].confidence)
    found, found_once = _found(snapshot, obj), _found(snapshot, once.objects[0])
    assert found[a_points].mean() > found_once[a_points].mean() + 0.25
    assert np.count_nonzero(found & ~a_points) <= 0.01 * np.count_nonzero(found)


def test_mask_spill_onto_the_floor_is_stripped_from_the_object():
    # Every view's mask of A spills 4 px onto the floor around it: without stripping, the object carries
    # a ring of floor; with it, the floor at A's base is gone and A itself is kept.
    snapshot = make_scene()
    keyframes, ids = make_views(EYES)
    views = [ViewPredictions(k, (pred(grow_mask(ids[k] == 0, 4) & (ids[k] != 1)),)) for k in range(4)]
    pts = snapshot.points_world_m
    a_points = in_box(pts, BOX_A)
    floor = (pts[:, 2] <= 0.0) & ~a_points & ~in_box(pts, BOX_B)
    kept = MultiViewVoter(VotingConfig(strip_support=False)).vote(snapshot, keyframes, views, Q)
    result = MultiViewVoter().vote(snapshot, keyframes, views, Q)
    assert np.count_nonzero(_found(snapshot, kept.objects[0]) & floor) > 30  # the spill reached 3D
    found = _found(snapshot, result.objects[0])
    assert not np.any(found & floor)
    assert found[a_points & (pts[:, 2] > 0.02)].mean() > 0.6


def test_strip_support_surface_by_hand():
    # A cube on a floor patch that also reaches a smaller cube: the floor goes, the small cube (joined to
    # the first only through the floor) goes with it, the cube stays whole above a quarter voxel.
    cube = box_surface(np.array([0.0, 0.0, 0.0]), np.array([0.4, 0.4, 0.4]))
    small = box_surface(np.array([0.7, 0.0, 0.0]), np.array([0.8, 0.1, 0.1]))
    gx, gy = np.meshgrid(np.arange(-0.6, 1.2, 0.03), np.arange(-0.6, 1.0, 0.03), indexing="ij")
    floor = np.stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)], axis=1)
    pts = np.concatenate([cube, small, floor]).astype(np.float32)
    n_cube, n_small = cube.shape[0], small.shape[0]
    spill = n_cube + n_small + np.flatnonzero((np.abs(floor[:, 0] - 0.3) < 0.6) & (np.abs(floor[:, 1] - 0.2) < 0.4))
    obj = np.concatenate([np.arange(n_cube + n_small), spill])
    kept = strip_support_surface(pts, obj, 0.06, 0.3, 0.25, 20)
    assert set(kept.tolist()) == set(np.flatnonzero(cube[:, 2] > 0.015).tolist())
    # An object flat on its support cannot be told apart from it: returned unchanged.
    plate = np.flatnonzero(np.all(np.abs(floor[:, :2] - [0.9, 0.8]) < 0.15, axis=1)) + n_cube + n_small
    np.testing.assert_array_equal(strip_support_surface(pts, plate, 0.06, 0.3, 0.25, 20), plate)
    # ... unless the caller asks for what is left above the support (the object memory): nothing.
    assert strip_support_surface(pts, plate, 0.06, 0.3, 0.25, 1, keep_flat=False).shape == (0,)
    assert set(strip_support_surface(pts, obj, 0.06, 0.3, 0.25, 20, keep_flat=False).tolist()) == set(kept.tolist())
    # Without a surface reaching beyond it (a cube in the air), nothing is stripped.
    lone = cube.astype(np.float32)
    np.testing.assert_array_equal(strip_support_surface(lone, np.arange(n_cube), 0.06, 0.3, 0.25, 20),
                                  np.arange(n_cube))


# A 15 cm cube 20 cm from cube A: separate in 3D (more than a clustering voxel apart), small beside it.
SPECK = (np.array([0.75, 0.0, 0.0]), np.array([0.9, 0.15, 0.15]))


def test_a_fragment_that_only_borrows_a_better_objects_masks_is_dropped():
    # Every view's mask of cube A spills onto the small cube beside it: in 3D two hypotheses, both
    # covered by the same masks. The small one has no mask of its own (each holds ≥ 2x more of cube A).
    boxes = (BOX_A, SPECK)
    snapshot = make_scene(boxes)
    keyframes, ids = make_views(EYES, boxes)
    assert all(np.count_nonzero(i == 1) > 20 for i in ids)  # precondition: every view sees the small cube
    views = [ViewPredictions(k, (pred((ids[k] == 0) | (ids[k] == 1)),)) for k in range(4)]
    loose = MultiViewVoter(VotingConfig(drop_borrowed_support=False)).vote(snapshot, keyframes, views, Q)
    assert len(loose.objects) == 2  # precondition: without the rule the fragment is an object
    result = MultiViewVoter().vote(snapshot, keyframes, views, Q)
    assert len(result.objects) == 1
    assert _found(snapshot, result.objects[0])[in_box(snapshot.points_world_m, BOX_A)].mean() > 0.6
    # With masks of its own in two views (a second answer there), the small cube is an object again.
    views = [ViewPredictions(k, (pred(ids[k] == 0), pred(ids[k] == 1, 0.8))) if k in (0, 2) else
             ViewPredictions(k, (pred((ids[k] == 0) | (ids[k] == 1)),)) for k in range(4)]
    result = MultiViewVoter().vote(snapshot, keyframes, views, Q)
    assert len(result.objects) == 2
    speck = in_box(snapshot.points_world_m, SPECK)
    assert max(_found(snapshot, o)[speck].mean() for o in result.objects) > 0.5
