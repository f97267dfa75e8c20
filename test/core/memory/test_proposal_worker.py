"""The proposal worker: bounded queue with counted drops, failures retried and counted, evicted keyframes."""

from __future__ import annotations

import threading

from mllm3d_ros.core.memory.object_memory import ObjectMemory
from mllm3d_ros.core.memory.proposal_worker import ProposalWorker, ProposalWorkerConfig
from mllm3d_ros.core.types import UNLABELLED, ViewPredictions
from test_object_memory import EYES, proposal, view


def keyframes_by_id(n=3):
    out = {}
    for k in range(n):
        kf, box_id = view(k, EYES[k])
        out[k] = (kf, box_id)
    return out


def test_keyframes_flow_into_the_memory_on_the_worker_thread():
    kfs = keyframes_by_id()
    memory = ObjectMemory()
    worker = ProposalWorker(memory, lambda views: [ViewPredictions(v.keyframe_id, (proposal(kfs[v.keyframe_id][1] == 0),))
                                                   for v in views], lambda i: kfs.get(i, (None,))[0])
    worker.start()
    for k in kfs:
        worker.submit(k)
    assert worker.wait_idle(30.0)
    worker.stop()
    stats = worker.stats
    assert (stats.submitted, stats.integrated, stats.failures) == (3, 3, 0)
    assert memory.objects()[0].detections == 3 and stats.lag_ms_max >= stats.lag_ms_p50 > 0


def test_a_full_queue_drops_the_oldest_and_counts_it():
    started, release = threading.Event(), threading.Event()
    seen = []
    kfs = keyframes_by_id()

    def slow(views):
        started.set()
        release.wait(60.0)
        seen.append(views[0].keyframe_id)
        return [ViewPredictions(views[0].keyframe_id, ())]

    worker = ProposalWorker(ObjectMemory(), slow, lambda i: kfs[i][0],
                            ProposalWorkerConfig(queue_size=2))
    worker.start()
    worker.submit(0)  # taken by the worker, which blocks in the model
    assert started.wait(60.0) and worker.stats.queued == 0
    assert worker.submit(1) and worker.submit(2)
    assert not worker.submit(0)  # full: keyframe 1, the oldest queued, is dropped
    release.set()
    assert worker.wait_idle(30.0)
    worker.stop()
    assert seen == [0, 2, 0] and worker.stats.dropped_queue_full == 1


def test_model_failures_are_retried_then_given_up_and_never_stop_the_worker():
    kfs = keyframes_by_id()
    calls = []

    def flaky(views):
        calls.append(views[0].keyframe_id)
        if views[0].keyframe_id == 0 or len(calls) == 2:
            raise MemoryError("out of memory")
        return [ViewPredictions(views[0].keyframe_id, ())]

    worker = ProposalWorker(ObjectMemory(), flaky, lambda i: kfs[i][0],
                            ProposalWorkerConfig(max_retries=2, retry_delay_s=0.0))
    worker.start()
    worker.submit(0)
    worker.submit(1)
    assert worker.wait_idle(30.0)
    worker.stop()
    stats = worker.stats
    assert calls.count(0) == 3 and calls.count(1) == 2  # 0 fails 3 times, 1 fails once then succeeds
    assert (stats.failures, stats.gave_up, stats.integrated) == (4, 1, 1)


def test_a_keyframe_evicted_before_its_turn_is_counted_not_failed():
    worker = ProposalWorker(ObjectMemory(), lambda views: [], lambda i: None)
    assert worker.process_one(7)
    assert worker.stats.evicted_before_proposal == 1 and worker.stats.failures == 0


def test_the_maps_class_agnostic_proposals_run_on_the_worker_and_never_block_the_caller():
    # The map's proposer (slow: it waits for the snapshot) chained with a detector, as the memory node wires
    # them: submit and the memory's readers go on while it works; its objects and surfaces arrive after.
    from test_map_objects import _box_views

    from cloud_scene import snapshot
    from mllm3d_ros.core.memory.map_objects import MapObjectProposer, chain_proposers

    cloud, views = _box_views([(-0.6, 0.0, 1.3), (0.0, -1.6, 1.2), (2.6, -1.2, 1.3)])
    kfs = {kf.keyframe_id: (kf, box_id) for kf, box_id in views}
    entered, release = threading.Event(), threading.Event()

    def slow_snapshot():
        entered.set()
        release.wait(60.0)
        return snapshot(cloud)

    detector = lambda vs: [ViewPredictions(v.keyframe_id, (proposal(kfs[v.keyframe_id][1] == 0, "cube"),)) for v in vs]
    memory = ObjectMemory()
    worker = ProposalWorker(memory, chain_proposers(detector, MapObjectProposer(slow_snapshot).propose),
                            lambda i: kfs[i][0])
    worker.start()
    assert worker.submit(0)
    assert entered.wait(60.0)  # the worker is inside the map's proposer now
    assert worker.submit(1) and worker.submit(2)  # the caller (the ingest thread) is not held
    assert memory.objects() == () and memory.stats.keyframes_integrated == 0  # readers are not held either
    release.set()
    assert worker.wait_idle(30.0)
    worker.stop()
    objects = sorted(memory.objects(), key=lambda o: float(o.box.center_world_m[1]))
    assert [(o.label, o.unlabelled) for o in objects] == [("cube", False), (UNLABELLED, True)]
    assert memory.stats.instances == 2 and all(o.support is not None for o in objects)
    assert worker.stats.integrated == 3 and worker.stats.failures == 0


def test_a_backend_that_is_not_ready_is_waited_for_not_counted_as_failures():
    # A former bug: while the segmentation node loads, proposals used to fail ~9 times at every start, each
    # counted and logged as a failure, and spent retries.
    kfs = keyframes_by_id()
    ready = threading.Event()
    calls = []

    def propose(views):
        calls.append(views[0].keyframe_id)
        if len(calls) == 1:  # ready by the heartbeat, but gone by the time the call is made
            from mllm3d_ros.core.segmentation import BackendUnavailable
            raise BackendUnavailable("segmentation node restarted during the call")
        return [ViewPredictions(views[0].keyframe_id, ())]

    worker = ProposalWorker(ObjectMemory(), propose, lambda i: kfs[i][0],
                            ProposalWorkerConfig(max_retries=0, retry_delay_s=0.0), backend_ready=ready.is_set)
    worker.start()
    for k in kfs:
        worker.submit(k)
    assert not worker.wait_idle(0.3) and calls == []  # nothing is asked while the backend is not ready
    ready.set()
    assert worker.wait_idle(30.0)
    worker.stop()
    stats = worker.stats
    # The refused call is not a failure (with max_retries=0 it would have been given up): its keyframe is
    # proposed again first, and every keyframe reaches the memory.
    assert (stats.failures, stats.gave_up, stats.backend_unavailable, stats.integrated) == (0, 0, 1, 3)
    assert calls == [0, 0, 1, 2]


def test_a_proposal_in_flight_at_a_map_reset_is_not_integrated_into_the_new_memory():
    kfs = keyframes_by_id()
    started, release = threading.Event(), threading.Event()

    def slow(views):
        started.set()
        release.wait(60.0)
        return [ViewPredictions(views[0].keyframe_id, (proposal(kfs[views[0].keyframe_id][1] == 0),))]

    memory = ObjectMemory()
    worker = ProposalWorker(memory, slow, lambda i: kfs[i][0])
    worker.start()
    worker.submit(0)
    worker.submit(1)
    assert started.wait(60.0)
    seen = []
    worker.reset(then=lambda: seen.append(memory.stats.keyframes_integrated))  # a ~/reset while it works
    release.set()
    assert worker.wait_idle(30.0)
    worker.stop()
    # The queued keyframe was dropped with the old map, the one in flight was not integrated.
    assert memory.stats.keyframes_integrated == seen[0] == 0 and len(memory) == 0
