"""The object memory on hand-built two-cube scenes with ray-cast depth: association, evidence, merging,
splitting, removal and bounds; class-agnostic proposals tracked as unlabelled instances that take a
detector's label (known answers)."""

from __future__ import annotations

import numpy as np
import pytest

from mllm3d_ros.core.config import ConfigError
from mllm3d_ros.core.memory.evidence import grow_mask
from mllm3d_ros.core.memory.object_memory import ObjectMemory, ObjectMemoryConfig, VoxelIndex, voxel_centers, voxel_keys
from mllm3d_ros.core.types import UNLABELLED, InputError, Keyframe, Prediction2D, SupportKind
from test_voting import BOX_A, BOX_B, FLOOR, INTRINSICS, ORTHO, Q, look_at, render

EYES = [(-0.6, 0.0, 1.3), (0.0, -1.6, 1.2), (0.0, 1.6, 1.2), (2.6, -1.2, 1.3), (2.6, 1.2, 1.3), (1.0, -2.0, 1.5)]


def view(k, eye, boxes=(BOX_A, BOX_B), target=(1.0, 0.0, 0.2)):
    pose = look_at(eye, target)
    depth, box_id = render(pose, (FLOOR,) + tuple(boxes))
    color = np.full(depth.shape + (3,), 200, np.uint8)
    return Keyframe(k, k * 1000, pose, INTRINSICS, color, depth), box_id - 1


def proposal(mask, label="cube", embedding=Q, confidence=0.8):
    return Prediction2D(mask=mask, confidence=confidence, embedding=embedding, label=label)


def in_box(points, box, margin):
    lo, hi = box
    return np.all((points >= lo - margin) & (points <= hi + margin), axis=1)


def test_voxel_keys_round_trip_and_index():
    pts = np.array([[0.01, -0.01, 2.0], [-5.0, 3.3, -0.2], [0.011, -0.012, 2.001]])
    keys = voxel_keys(pts, 0.03)
    assert keys[0] == keys[2] and keys[0] != keys[1]
    np.testing.assert_allclose(voxel_centers(keys, 0.03), np.floor(pts / 0.03) * 0.03 + 0.015, atol=1e-6)
    index = VoxelIndex(pts, 0.03)
    np.testing.assert_array_equal(index.indices(pts[:1]), [0, 2])
    assert index.indices(np.array([[9.0, 9.0, 9.0]])).shape == (0,)
    # Grown by one voxel, a point two cells away is still out, one cell away is in.
    near = np.array([[0.01 + 0.03, -0.01, 2.0]])
    np.testing.assert_array_equal(VoxelIndex(np.concatenate([pts, near + [0.03, 0, 0]]), 0.03).indices(pts[:1], 1),
                                  [0, 2])
    np.testing.assert_array_equal(VoxelIndex(np.concatenate([pts, near]), 0.03).indices(pts[:1], 1), [0, 2, 3])


def test_two_objects_seen_from_several_views_become_two_confirmed_instances():
    memory = ObjectMemory()
    for k, eye in enumerate(EYES[:4]):
        kf, box_id = view(k, eye)
        memory.integrate(kf, [proposal(box_id == 0, "cube", Q), proposal(box_id == 1, "crate", ORTHO)])
    objects = memory.objects()
    assert sorted(o.label for o in objects) == ["crate", "cube"]
    for obj, box in ((next(o for o in objects if o.label == "cube"), BOX_A),
                     (next(o for o in objects if o.label == "crate"), BOX_B)):
        assert obj.detections == 4 and obj.views_seen == 4
        assert in_box(obj.points_world_m, box, 0.05).all()  # voxel centres hug the cube's surface
        np.testing.assert_allclose(obj.box.center_world_m[:2], (box[0][:2] + box[1][:2]) / 2, atol=0.05)
        assert len(obj.best_keyframe_ids) == 4
        assert obj.confidence == pytest.approx(np.sqrt(0.8 * 4 / 5))
    assert memory.stats.created == 2 and memory.stats.instances == 2


def test_a_view_that_sees_an_object_but_does_not_detect_it_lowers_its_support():
    memory = ObjectMemory(ObjectMemoryConfig(min_detections=2, min_support_ratio=0.5))
    # Detected in two views, then seen without a detection in four more: 2 of 6 < 0.5.
    for k, eye in enumerate(EYES):
        kf, box_id = view(k, eye)
        memory.integrate(kf, [proposal(box_id == 0)] if k < 2 else [])
    assert memory.stats.instances == 1 and memory.objects() == ()


def test_a_single_hallucination_is_never_confirmed():
    memory = ObjectMemory()
    kf, box_id = view(0, EYES[0])
    memory.integrate(kf, [proposal(box_id == 1, "ghost", ORTHO)])  # a label no other view confirms
    for k, eye in enumerate(EYES[1:3], start=1):
        memory.integrate(view(k, eye)[0], [])
    assert memory.stats.instances == 1 and memory.objects() == ()  # one detection < min_detections
    assert next(iter(memory._instances.values())).views_seen == 3


def test_a_mask_that_lifts_only_the_floor_is_ignored():
    # A detector's box whose refined mask holds only the support around an object (the real kitchen: close-ups
    # of a white mug whose walls the Kinect missed lifted only the table top around it): no view of an object.
    memory = ObjectMemory()
    kf, box_id = view(0, EYES[0])
    floor_patch = np.zeros(box_id.shape, bool)
    floor_patch[50:62, 4:30] = True
    memory.integrate(kf, [proposal(floor_patch & (box_id == -1), "ghost")])
    assert memory.stats.instances == 0 and memory.stats.proposals_ignored == 1
    # The same mask spilling from the cube onto the floor keeps the cube, without the floor.
    memory.integrate(kf, [proposal((floor_patch & (box_id == -1)) | (box_id == 0), "cube")])
    (inst,) = memory._instances.values()
    assert in_box(voxel_centers(inst.keys, 0.03), BOX_A, 0.03).all()


def test_halves_seen_apart_are_merged_when_a_view_joins_them():
    memory = ObjectMemory(ObjectMemoryConfig(min_detections=1, split_every=0))
    kf, box_id = view(0, EYES[0])
    cols = np.arange(box_id.shape[1])[None, :]
    cube = box_id == 0
    centre = int(np.median(np.nonzero(cube)[1]))
    memory.integrate(kf, [proposal(cube & (cols < centre - 3)), proposal(cube & (cols > centre + 3))])
    assert memory.stats.instances == 2
    kf1, box_id1 = view(1, EYES[0])
    memory.integrate(kf1, [proposal(box_id1 == 0)])
    assert memory.stats.instances == 1 and memory.stats.merged == 1
    assert memory.objects()[0].detections == 3


def test_an_instance_whose_kept_voxels_fall_apart_is_split():
    # A bar joins the cubes and one mask covers all three: one instance. When the evidence turns against
    # the bar (its voxels seen outside the masks: misses, set here by hand), the rest falls apart in two.
    bar = (np.array([0.9, -0.25, 0.15]), np.array([1.1, 0.25, 0.25]))
    memory = ObjectMemory(ObjectMemoryConfig(min_detections=1, split_every=1, mask_erosion_px=0))
    kf, box_id = view(0, EYES[0], (BOX_A, BOX_B, bar))
    memory.integrate(kf, [proposal(box_id >= 0, "cubes")])
    assert memory.stats.instances == 1 and memory.stats.split == 0
    (inst,) = memory._instances.values()
    on_bar = in_box(voxel_centers(inst.keys, 0.03), bar, 0.03) & ~in_box(voxel_centers(inst.keys, 0.03), BOX_A, 0.0) \
        & ~in_box(voxel_centers(inst.keys, 0.03), BOX_B, 0.0)
    assert on_bar.any()
    inst.misses[on_bar] = 5
    memory.integrate(view(1, EYES[0], (BOX_A, BOX_B, bar))[0], [])
    assert memory.stats.split == 1
    centres = sorted(float(o.box.center_world_m[1]) for o in memory.objects())
    assert len(centres) == 2
    assert centres[0] == pytest.approx(-0.4, abs=0.08) and centres[1] == pytest.approx(0.4, abs=0.08)


def test_an_object_that_is_gone_is_removed_after_the_views_see_through_it():
    memory = ObjectMemory(ObjectMemoryConfig(gone_views=2))
    for k, eye in enumerate(EYES[:3]):
        kf, box_id = view(k, eye)
        memory.integrate(kf, [proposal(box_id == 0, "cube", Q), proposal(box_id == 1, "crate", ORTHO)])
    assert memory.stats.instances == 2
    # Cube A is taken away: the views now see the floor where it was, and B as before.
    for k, eye in enumerate(EYES[:2], start=3):
        kf, box_id = view(k, eye, boxes=(BOX_B,))
        memory.integrate(kf, [proposal(box_id == 0, "crate", ORTHO)])
    assert [o.label for o in memory.objects()] == ["crate"]
    assert memory.stats.removed_gone == 1


def test_a_detection_without_depth_on_the_object_keeps_it():
    # Close-ups in which the sensor returns no depth on the object (a glossy white mug) but on the floor
    # around it: its rim voxels are seen through; the detector still boxes it there, and its mask lifts
    # nothing usable. Without that detection the same views remove the object (it looks gone).
    def close_up(k):
        kf, box_id = view(k, EYES[0])
        depth = np.where(box_id == 0, 0.0, kf.depth_m).astype(np.float32)
        return Keyframe(k, k * 1000, kf.world_T_camera, INTRINSICS, kf.color_rgb, depth), box_id

    for detected in (True, False):
        memory = ObjectMemory(ObjectMemoryConfig(gone_views=2))
        for k, eye in enumerate(EYES[:3]):
            kf, box_id = view(k, eye)
            memory.integrate(kf, [proposal(box_id == 0, "cube", Q)])
        (inst,) = memory._instances.values()
        for k in (3, 4):
            kf, box_id = close_up(k)
            seen, through, _ = memory._project_instances([inst], kf)
            assert through[inst.instance_id].shape[0] > seen[inst.instance_id].shape[0]
            memory.integrate(kf, [proposal(box_id == 0, "cube", Q)] if detected else [])
        if detected:
            assert memory.stats.removed_gone == 0 and [o.label for o in memory.objects()] == ["cube"]
            assert memory.stats.proposals_ignored == 2
        else:
            assert memory.stats.removed_gone == 1 and memory.objects() == ()
    # A detection of another kind there does not keep it.
    memory = ObjectMemory(ObjectMemoryConfig(gone_views=2))
    for k, eye in enumerate(EYES[:3]):
        memory.integrate(view(k, eye)[0], [proposal(view(k, eye)[1] == 0, "cube", Q)])
    for k in (3, 4):
        kf, box_id = close_up(k)
        memory.integrate(kf, [proposal(box_id == 0, "crate", ORTHO)])
    assert memory.stats.removed_gone == 1


def test_voxels_inside_another_objects_mask_are_misses():
    # Two touching objects (a table top and the chair pushed against it): in two views the detector's
    # "table" box covers both, in four more the table and the chair have masks of their own. The chair's
    # voxels in the table instance are seen outside the table's masks there (inside the chair's): misses,
    # so the table keeps only its own voxels. (No boundary band: the chair's face is a few pixels wide here.)
    memory = ObjectMemory(ObjectMemoryConfig(mask_boundary_px=0))
    for k, eye in enumerate(FRONT):
        kf, box_id = view(k, eye, (BOOK_L, BOOK_R))
        table = (box_id >= 0) if k < 2 else (box_id == 0)
        memory.integrate(kf, [proposal(table, "table", Q), proposal(box_id == 1, "chair", ORTHO)])
    table_obj = next(o for o in memory.objects() if o.label == "table")
    assert table_obj.detections == len(FRONT)
    (inst,) = [i for i in memory._instances.values() if i.instance_id == table_obj.instance_id]
    on_chair = voxel_centers(inst.keys, 0.03)[:, 1] > 0.03  # voxels wholly on the chair's side
    assert on_chair.any() and (inst.misses[on_chair] > inst.hits[on_chair]).all()
    assert in_box(table_obj.points_world_m, BOOK_L, 0.03).all() and (table_obj.points_world_m[:, 1] < 0.03).all()


def test_bounds_on_instances_and_voxels():
    # Floor patches as three objects: the support is not stripped here (it would leave nothing of them).
    memory = ObjectMemory(ObjectMemoryConfig(max_instances=2, max_voxels_per_instance=50, min_detections=1,
                                             strip_support=False))
    kf, box_id = view(0, EYES[0])
    rows = np.arange(box_id.shape[0])[:, None]
    floor = box_id == -1
    patches = [proposal(floor & (rows >= r) & (rows < r + 8), f"p{i}", np.eye(8, dtype=np.float32)[i + 2])
               for i, r in enumerate((40, 50, 60))]
    memory.integrate(kf, patches)
    stats = memory.stats
    assert stats.instances == 2 and stats.evicted == 1
    assert all(o.points_world_m.shape[0] <= 50 for o in memory.objects())
    assert stats.nbytes > 0


def test_bad_proposals_raise_and_leave_the_memory_unchanged():
    memory = ObjectMemory()
    kf, box_id = view(0, EYES[0])
    memory.integrate(kf, [proposal(box_id == 0)])
    before = memory.version
    with pytest.raises(InputError, match="proposal mask is"):
        memory.integrate(kf, [proposal(np.zeros((5, 5), bool))])
    assert memory.version == before and memory.stats.instances == 1
    memory.integrate(kf, [proposal(box_id == 0, confidence=0.1)])  # below min_proposal_confidence
    assert memory.stats.proposals_ignored == 1


def test_reset_forgets_everything():
    memory = ObjectMemory()
    kf, box_id = view(0, EYES[0])
    memory.integrate(kf, [proposal(box_id == 0)])
    memory.reset()
    assert len(memory) == 0 and memory.objects() == ()


@pytest.mark.parametrize("field,value", [("voxel_size_m", 0.0), ("associate_min_overlap", 1.5),
                                         ("min_detections", 0), ("max_instances", 0), ("mask_erosion_px", 11),
                                         ("keep_apart", 1)])
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        ObjectMemoryConfig(**{field: value})


def test_voxels_kept_need_agreement_across_detections():
    from mllm3d_ros.core.memory.object_memory import _Instance
    inst = _Instance(0, np.arange(4, dtype=np.int64), np.array([5, 1, 0, 3], np.int32), np.array([0, 0, 0, 4], np.int32),
                     {"x": 1.0}, np.ones(2), np.zeros(3), 1, 1.0, 10, 10)
    # 10 detections: a voxel needs >= 1 hit in 10 % of them (1 of 10 -> 1 hit is enough) ...
    np.testing.assert_array_equal(inst.kept(0.5, 0.1), [True, True, False, False])  # 3 of 7 < 0.5
    # ... and at 20 % two hits: what one view's mask spilled onto is dropped.
    np.testing.assert_array_equal(inst.kept(0.5, 0.2), [True, False, False, False])


def test_erosion_keeps_the_core_of_a_thin_mask():
    from mllm3d_ros.core.memory.evidence import grow_mask
    from mllm3d_ros.core.memory.object_memory import erode_keeping_core
    widths = {}
    for width in (3, 5, 6, 7, 8, 20):
        mask = np.zeros((60, 80), bool)
        mask[10:50, 30:30 + width] = True
        widths[width] = int(erode_keeping_core(mask, 2)[30].sum())
    # Never below a 3 px core: 3 px untouched, 5 -> 3, 6 -> 4; from 7 px on, the full 2 px a side, exactly
    # as a plain erosion (also where it touches the image edge).
    assert widths == {3: 3, 5: 3, 6: 4, 7: 3, 8: 4, 20: 16}
    wide = np.zeros((60, 80), bool)
    wide[0:40, 0:40] = True
    wide[45:60, 50:80] = True
    np.testing.assert_array_equal(erode_keeping_core(wide, 2), ~grow_mask(~wide, 2))
    assert not erode_keeping_core(np.zeros((5, 5), bool), 2).any()


def test_a_thin_object_survives_the_erosion():
    # A 6 cm post about 3 px wide in these views: a plain 2 px erosion leaves nothing to lift.
    post = (np.array([0.97, -0.03, 0.0]), np.array([1.03, 0.03, 0.6]))
    memory = ObjectMemory(ObjectMemoryConfig(min_mask_pixels=20))
    for k, eye in enumerate(EYES[:3]):
        kf, box_id = view(k, eye, (post,))
        memory.integrate(kf, [proposal(box_id == 0, "post")])
    (obj,) = memory.objects()
    assert obj.label == "post" and obj.detections == 3
    np.testing.assert_allclose(obj.box.center_world_m[:2], (1.0, 0.0), atol=0.05)


# Two 8 cm boxes side by side, touching (books on a shelf), seen from the front; each mask spills a pixel
# onto the neighbour, so that the two lift into shared voxels (3 cm) and would merge.
BOOK_L = (np.array([0.8, -0.08, 0.0]), np.array([1.2, 0.0, 0.3]))
BOOK_R = (np.array([0.8, 0.0, 0.0]), np.array([1.2, 0.08, 0.3]))
FRONT = [(-0.6, 0.0, 1.3), (-0.8, -0.3, 1.0), (-0.8, 0.3, 1.0), (-1.0, 0.0, 1.6), (-0.4, -0.2, 1.8), (-0.4, 0.2, 0.9)]


def _books_memory(keep_apart: bool) -> ObjectMemory:
    memory = ObjectMemory(ObjectMemoryConfig(keep_apart=keep_apart))
    for k, eye in enumerate(FRONT):
        kf, box_id = view(k, eye, (BOOK_L, BOOK_R))
        memory.integrate(kf, [proposal(grow_mask(box_id == 0, 1) & (box_id >= 0), "book"),
                              proposal(grow_mask(box_id == 1, 1) & (box_id >= 0), "book", confidence=0.7)])
    return memory


def test_two_touching_objects_of_one_kind_detected_by_separate_masks_stay_two():
    merged = _books_memory(keep_apart=False).objects()
    assert len(merged) == 1  # what keep_apart prevents: one 16 cm "book"
    objects = _books_memory(keep_apart=True).objects()
    assert len(objects) == 2
    left, right = sorted(objects, key=lambda o: float(o.box.center_world_m[1]))
    assert float(left.box.center_world_m[1]) < -0.01 and float(right.box.center_world_m[1]) > 0.01
    assert left.detections == right.detections == len(FRONT)


def test_kept_apart_records_forget_instances_that_are_gone():
    memory = ObjectMemory(ObjectMemoryConfig(split_every=1))
    for k, eye in enumerate(FRONT[:2]):
        kf, box_id = view(k, eye, (BOOK_L, BOOK_R))
        memory.integrate(kf, [proposal(box_id == 0, "book"), proposal(box_id == 1, "book", confidence=0.7)])
    a, b = memory._instances.values()
    assert a.apart == {b.instance_id: 2} and b.apart == {a.instance_id: 2}
    del memory._instances[b.instance_id]  # as removal, eviction or a merge does
    memory.integrate(view(2, FRONT[2], (BOOK_L, BOOK_R))[0], [])
    assert a.apart == {}


def test_a_second_label_on_the_same_object_is_no_miss():
    # The detector boxes one object twice (a "table" that is also a "desk"): in three views the "cube" mask
    # covers only its left half and a "desk" mask all of it. The right half, inside the desk's mask that
    # shares most of the cube's, is no evidence against the cube: its voxels gain no misses there.
    memory = ObjectMemory(ObjectMemoryConfig(mask_boundary_px=0))
    for k, eye in enumerate(EYES[:3]):
        kf, box_id = view(k, eye)
        memory.integrate(kf, [proposal(box_id == 0, "cube", Q)])
    cube = next(i for i in memory._instances.values() if "cube" in i.label_weight)
    for k in (3, 4, 5):
        kf, box_id = view(k, EYES[0])
        cols = np.arange(box_id.shape[1])[None, :]
        centre = int(np.median(np.nonzero(box_id == 0)[1]))
        memory.integrate(kf, [proposal((box_id == 0) & (cols <= centre), "cube", Q),
                              proposal(box_id == 0, "desk", ORTHO, confidence=0.7)])
    assert cube.detections == 6 and int(cube.misses.sum()) == 0
    assert cube.kept(0.5, 0.1).all()


def test_a_voxel_is_seen_through_only_over_its_whole_footprint():
    from mllm3d_ros.core.memory.object_memory import _seen_through_whole
    from mllm3d_ros.core.visibility import project_visible
    small = (np.array([0.96, -0.04, 0.0]), np.array([1.04, 0.04, 0.08]))  # an 8 cm cube: a mug, say
    kf, box_id = view(0, EYES[0], (small,))
    cfg = ObjectMemoryConfig()
    # Just beside its silhouette (a voxel centre half a voxel outside it), and 30 cm beside it over the floor.
    centres = np.array([[1.0, 0.055, 0.065], [1.0, 0.35, 0.065]], np.float32)
    through = project_visible(centres, kf.world_T_camera, kf.intrinsics, kf.depth_m, cfg.depth_tolerance_m,
                              cfg.depth_tolerance_frac).through_indices
    np.testing.assert_array_equal(through, [0, 1])  # both, judged at the centre's pixel
    np.testing.assert_array_equal(_seen_through_whole(centres, through, kf, cfg), [1])


# --- class-agnostic proposals ---------------------------------------------------------------------------


def agnostic(mask, geometric=True):
    return Prediction2D(mask=mask, confidence=0.5, embedding=np.zeros(0, np.float32), label=UNLABELLED,
                        geometric=geometric)


def _floor_surface():
    from mllm3d_ros.core.memory.supports import find_supports

    gx, gy = np.meshgrid(np.arange(-0.5, 2.5, 0.02), np.arange(-1.5, 1.5, 0.02), indexing="ij")
    pts = np.stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)], axis=1)
    return find_supports(pts, np.tile([0.0, 0.0, 1.0], (pts.shape[0], 1)), floor_height_m=0.0).surfaces


def test_class_agnostic_objects_become_unlabelled_instances_on_their_support():
    memory = ObjectMemory()
    floor = _floor_surface()
    for k, eye in enumerate(EYES[:3]):
        kf, box_id = view(k, eye)
        memory.integrate(kf, [agnostic(box_id == 0), agnostic(box_id == 1)], floor)
    objects = memory.objects()
    assert len(objects) == 2 and memory.stats.unlabelled == 2 and memory.stats.supports == 1
    for obj, box in zip(sorted(objects, key=lambda o: float(o.box.center_world_m[1])), (BOX_A, BOX_B)):
        assert obj.unlabelled and obj.label == UNLABELLED and obj.label_scores == ((UNLABELLED, 1.0),)
        assert obj.detections == 3 and obj.label_hints == ()
        assert obj.embedding.shape == (0,)  # no detector has spoken yet: nothing to compare text with
        assert in_box(obj.points_world_m, box, 0.05).all()
        assert obj.support is not None and obj.support.kind is SupportKind.FLOOR
        assert obj.support.height_m == pytest.approx(0.0, abs=0.01)
        assert obj.confidence == pytest.approx(np.sqrt(0.5 * 3 / 4))
    assert [s.kind for s in memory.supports()] == [SupportKind.FLOOR]


def test_a_detector_proposal_on_an_unlabelled_instance_gives_it_its_label():
    memory = ObjectMemory()
    for k, eye in enumerate(EYES[:3]):
        kf, box_id = view(k, eye)
        memory.integrate(kf, [agnostic(box_id == 0), agnostic(box_id == 1)])
    # The detector names the first cube (a box mask a pixel larger) and sees nothing on the second.
    for k, eye in enumerate(EYES[3:5], start=3):
        kf, box_id = view(k, eye)
        memory.integrate(kf, [proposal(grow_mask(box_id == 0, 1), "cube"), agnostic(box_id == 0),
                              agnostic(box_id == 1)])
        if k == 3:  # one detection: a hint, not yet a label
            cube = min(memory.objects(), key=lambda o: float(o.box.center_world_m[1]))
            assert cube.unlabelled and cube.label_hints == (("cube", 1.0),)
    assert memory.stats.instances == 2  # the detector's masks joined the instance, none was created
    cube, other = sorted(memory.objects(), key=lambda o: float(o.box.center_world_m[1]))
    # The label's evidence is the detector's, from its first detection on: 2 of the 2 views since.
    assert not cube.unlabelled and cube.label == "cube" and cube.detections == 2 and cube.views_seen == 2
    assert cube.confidence == pytest.approx(np.sqrt(0.8 * 2 / 3))
    np.testing.assert_allclose(cube.embedding, Q)
    assert other.unlabelled and other.label == UNLABELLED and other.detections == 5
    assert other.embedding.shape == Q.shape and not other.embedding.any()


def test_a_class_agnostic_mask_over_two_objects_held_apart_is_not_used():
    memory = ObjectMemory()
    for k, eye in enumerate(EYES[:3]):
        kf, box_id = view(k, eye)
        memory.integrate(kf, [agnostic(box_id == 0), agnostic(box_id == 1)])
    ignored, before = memory.stats.proposals_ignored, [o.points_world_m.shape for o in memory.objects()]
    kf, box_id = view(3, EYES[3])
    memory.integrate(kf, [agnostic(box_id >= 0)])  # one cluster over both cubes: an under-segmentation
    assert memory.stats.proposals_ignored == ignored + 1 and memory.stats.instances == 2
    assert [o.points_world_m.shape for o in memory.objects()] == before


def test_class_agnostic_masks_from_any_source_are_taken():
    # SAM-like masks (not rendered from the map): eroded and stripped like a detector's, then tracked.
    memory = ObjectMemory()
    for k, eye in enumerate(EYES[:3]):
        kf, box_id = view(k, eye)
        memory.integrate(kf, [agnostic(grow_mask(box_id == 0, 1), geometric=False)])
    obj, = memory.objects()
    assert obj.unlabelled and obj.detections == 3 and in_box(obj.points_world_m, BOX_A, 0.05).all()


def test_an_object_moved_a_little_is_shown_at_its_new_place_only():
    # Cube A is pushed 0.25 m along x, still overlapping its old place: the new place's masks join the old
    # instance (they hold some of its voxels), and the views see through the rest of the old voxels.
    moved = (BOX_A[0] + [0.25, 0.0, 0.0], BOX_A[1] + [0.25, 0.0, 0.0])
    memory = ObjectMemory()
    for k, eye in enumerate(EYES[:4]):
        kf, box_id = view(k, eye)
        memory.integrate(kf, [proposal(box_id == 0, "cube", Q), proposal(box_id == 1, "crate", ORTHO)])
    for k, eye in enumerate(EYES[:2], start=4):
        kf, box_id = view(k, eye, boxes=(moved, BOX_B))
        memory.integrate(kf, [proposal(box_id == 0, "cube", Q), proposal(box_id == 1, "crate", ORTHO)])
    cube = [o for o in memory.objects() if o.label == "cube"]
    assert len(cube) == 1
    pts = cube[0].points_world_m
    assert in_box(pts, moved, 0.05).mean() >= 0.95  # at the new place ...
    old_only = in_box(pts, BOX_A, 0.0) & ~in_box(pts, moved, 0.05)
    assert old_only.mean() < 0.03  # ... and not at the old one (without the drop: 27 % of its points)
    crate = next(o for o in memory.objects() if o.label == "crate")
    assert in_box(crate.points_world_m, BOX_B, 0.05).all()  # the still object is untouched


def test_an_object_moved_far_is_a_new_instance_and_the_old_one_goes():
    far = (np.array([1.8, -0.6, 0.0]), np.array([2.2, -0.2, 0.4]))
    memory = ObjectMemory()
    for k, eye in enumerate(EYES[:4]):
        kf, box_id = view(k, eye)
        memory.integrate(kf, [proposal(box_id == 0, "cube", Q), proposal(box_id == 1, "crate", ORTHO)])
    for k, eye in enumerate(EYES[:3], start=4):
        kf, box_id = view(k, eye, boxes=(far, BOX_B))
        memory.integrate(kf, [proposal(box_id == 0, "cube", Q), proposal(box_id == 1, "crate", ORTHO)])
    cube = [o for o in memory.objects() if o.label == "cube"]
    assert len(cube) == 1 and in_box(cube[0].points_world_m, far, 0.05).mean() >= 0.95
    assert memory.stats.removed_gone == 1




# A laptop-like object: a post and a flat base 3 cm thick (its voxels' centres within the depth tolerance of
# the floor: a view sees the floor there, it does not see through them).
POST = (np.array([0.8, -0.6, 0.0]), np.array([0.95, -0.45, 0.4]))
BASE = (np.array([0.95, -0.7, 0.0]), np.array([1.35, -0.2, 0.03]))


def _shifted(box, dx, dy=0.0):
    return box[0] + [dx, dy, 0.0], box[1] + [dx, dy, 0.0]


def _post_and_base_memory(moved_by, parts_after=(0, 1)):
    """Four views of the still post-and-base object and cube B, then three views with the object moved by
    `moved_by` (x, y) and its masks covering `parts_after` (0 the post, 1 the base): the object's points."""
    memory = ObjectMemory()
    for k, eye in enumerate(EYES[:4]):
        kf, box_id = view(k, eye, boxes=(POST, BASE, BOX_B))
        memory.integrate(kf, [proposal(np.isin(box_id, (0, 1)), "laptop", Q), proposal(box_id == 2, "crate", ORTHO)])
    post, base = _shifted(POST, *moved_by), _shifted(BASE, *moved_by)
    for k, eye in enumerate(EYES[:3], start=4):
        kf, box_id = view(k, eye, boxes=(post, base, BOX_B))
        memory.integrate(kf, [proposal(np.isin(box_id, parts_after), "laptop", Q),
                              proposal(box_id == 2, "crate", ORTHO)])
    laptop = [o.points_world_m for o in memory.objects() if o.label == "laptop"]
    crate = [o.points_world_m for o in memory.objects() if o.label == "crate"]
    assert len(laptop) == 1 and len(crate) == 1 and in_box(crate[0], BOX_B, 0.05).all()
    return laptop[0], (post, base)


def test_a_still_objects_part_outside_its_mask_stays():
    # Not moved, and the last views' masks hold only the post: the base is seen outside them, away from
    # what they lifted, but nothing of the object is seen through, so it is no moved object (a
    # rule that drops a detected instance's voxels away from its detection must keep this).
    pts, _ = _post_and_base_memory((0.0, 0.0), parts_after=(0,))
    assert in_box(pts, BASE, 0.0).sum() >= 30


def test_detections_the_detector_calls_by_one_name_join_one_instance_whatever_their_embeddings():
    # Image embeddings of one class scatter (cosine 0.6 here, under associate_min_similarity): two views of
    # one laptop called "laptop" by the detector are one object, confirmed by its two detections.
    scattered = (0.6 * Q + 0.8 * ORTHO).astype(np.float32)
    memory = ObjectMemory()
    for k, (eye, embedding) in enumerate(zip(EYES[:2], (Q, scattered))):
        kf, box_id = view(k, eye)
        memory.integrate(kf, [proposal(box_id == 0, "laptop", embedding)])
    (obj,) = memory.objects()
    assert obj.label == "laptop" and obj.detections == 2 and memory.stats.created == 1
    # Another name with the same scatter stays another object.
    memory = ObjectMemory()
    for k, (eye, label, embedding) in enumerate(zip(EYES[:2], ("laptop", "book"), (Q, scattered))):
        kf, box_id = view(k, eye)
        memory.integrate(kf, [proposal(box_id == 0, label, embedding)])
    assert memory.stats.created == 2 and memory.objects() == ()


def test_an_instance_goes_to_the_mask_that_fits_it_not_to_a_more_confident_one_that_touches_it():
    # A cube known from two views; then a view whose most confident "cube" mask lies on the other box and
    # spills over a third of the cube, beside the cube's own, less confident mask. The cube's instance takes
    # its own mask (best match first); the spilling mask is another object, and the cube gains none of it.
    memory = ObjectMemory()
    for k, eye in enumerate(EYES[:2]):
        kf, box_id = view(k, eye)
        memory.integrate(kf, [proposal(box_id == 0, "cube")])
    kf, box_id = view(2, EYES[3])
    cube = box_id == 0
    cols = np.flatnonzero(cube.any(axis=0))
    spill = cube.copy()
    spill[:, cols[0] + int(0.4 * cols.shape[0]):] = False
    memory.integrate(kf, [proposal((box_id == 1) | spill, "cube", confidence=0.95),
                          proposal(cube, "cube", confidence=0.6)])
    (known,) = [o for o in memory.objects() if o.detections == 3]
    assert in_box(known.points_world_m, BOX_A, 0.05).all()
    assert not in_box(known.points_world_m, BOX_B, 0.05).any()


def test_the_grown_voxels_leave_out_another_objects_own_but_never_ones_own():
    pts = np.array([[0.01, 0.01, 0.01], [0.04, 0.01, 0.01], [0.07, 0.01, 0.01]])  # three voxels in a row (3 cm)
    index = VoxelIndex(pts, 0.03)
    np.testing.assert_array_equal(index.indices(pts[:1], 1), [0, 1])
    np.testing.assert_array_equal(index.indices(pts[:1], 1, not_into=pts[1:2]), [0])
    np.testing.assert_array_equal(index.indices(pts[:2], 1, not_into=pts[1:]), [0, 1])  # its own voxel stays
    np.testing.assert_array_equal(index.indices(pts[:1], 0, not_into=pts[1:2]), [0])


def test_separate_class_agnostic_masks_of_a_view_hold_their_instances_apart():
    # Two cubes, each its own class-agnostic mask in every view: two objects, each knowing the other is apart (the
    # answers' grown points stop there; a later mask over both is an under-segmentation).
    memory = ObjectMemory()
    for k, eye in enumerate(EYES[:3]):
        kf, box_id = view(k, eye)
        memory.integrate(kf, [agnostic(box_id == 0), agnostic(box_id == 1)])
    a, b = memory.objects()
    assert a.apart_ids == frozenset({b.instance_id}) and b.apart_ids == frozenset({a.instance_id})
    # Seen only side by side with a gap between them in the image (from the -x side): not neighbours, no vote.
    memory = ObjectMemory()
    for k in range(3):
        kf, box_id = view(k, EYES[0])
        memory.integrate(kf, [agnostic(box_id == 0), agnostic(box_id == 1)])
    a, b = memory.objects()
    assert a.apart_ids == frozenset() and b.apart_ids == frozenset()
    # A detector's masks of one kind vote apart as before; a class-agnostic and a named mask do not vote.
    memory = ObjectMemory()
    for k, eye in enumerate(EYES[:3]):
        kf, box_id = view(k, eye)
        memory.integrate(kf, [proposal(box_id == 0), agnostic(box_id == 1)])
    a, b = memory.objects()
    assert a.apart_ids == frozenset() and b.apart_ids == frozenset()
