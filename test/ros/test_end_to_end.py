"""End to end in separate processes on loopback DDS: simulator -> mapping -> query -> result.

One system (simulator, perception_node, segmentation_node) is started for the module; each test
drives it through the action, the instruction topic, cancel, a second goal and a killed backend.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
import rclpy
from std_msgs.msg import String

from mllm3d_ros.core.mapping.mapper import read_saved_keyframes
from mllm3d_ros.demo import render_action_result, score_against_ground_truth, wait_for_map
from mllm3d_ros.ros.client import QueryClient
from mllm3d_ros.ros.conversions import cloud_to_arrays
from mllm3d_ros.ros.qos import RELIABLE_QOS
from rosutil import ros_env, start, stop, wait_for_log

pytestmark = pytest.mark.ros

DOMAIN = 104
SEED = 3
FRAMES = 80
CANCELED, BACKEND_UNAVAILABLE, SUCCESS = 7, 4, 0


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e")
    os.environ.update(ros_env(DOMAIN))  # the test's own client talks to the system too
    procs = {
        "perception": start("mllm3d_ros.ros.perception_node", domain_id=DOMAIN, log_path=out / "perception.log",
                            ros_args=("-r", "__ns:=/mllm3d")),
        "segmentation": start("mllm3d_ros.ros.segmentation_node", domain_id=DOMAIN,
                              log_path=out / "segmentation.log", ros_args=("-r", "__ns:=/mllm3d")),
        "simulator": start("mllm3d_ros.ros.simulator_node", domain_id=DOMAIN, log_path=out / "simulator.log",
                           ros_args=("-r", "__ns:=/mllm3d", "-p", f"seed:={SEED}", "-p", f"num_frames:={FRAMES}",
                                     "-p", "rate_hz:=8.0", "-p", "loop:=false")),
    }
    rclpy.init()
    client = QueryClient(node_name="e2e_client")
    try:
        assert client.wait_for_server(60.0), (out / "perception.log").read_text()
        assert wait_for_log(out / "segmentation.log", "loaded in", 120), (out / "segmentation.log").read_text()
        map_points = wait_for_map(client, min_wait_s=FRAMES / 8.0, timeout_s=240.0)
        yield {"client": client, "map": map_points, "procs": procs, "out": out}
    finally:
        client.close()
        rclpy.shutdown()
        for proc in procs.values():
            stop(proc)


def _assert_best_is_a_chair(system, result) -> None:
    """The best object has support from several views and overlaps a true chair (IoU >= 0.3)."""
    best = result.objects[0]
    assert best.supporting_views >= 2 and best.supporting_views <= best.visible_views
    points = cloud_to_arrays(result.points)[0]
    score = score_against_ground_truth(SEED, system["map"], points, frozenset({"Chair"}))
    assert score.iou >= 0.3, f"IoU {score.iou:.2f} against {score.gt_label} {score.gt_instance}"


def test_plain_query_is_answered_from_the_object_memory(system):
    stages = []
    accepted, result = system["client"].send("the chair", feedback=lambda s, p: stages.append(s))
    assert accepted and result.error_code == SUCCESS, result.error_message
    # The memory (proposals on every keyframe) decides a plain class: no 2D call at query time.
    assert "object memory" in result.error_message and result.views_used == 0
    assert stages[0] == "selecting views" and stages[-1] == "done"
    assert not any(s.startswith("segmenting view") for s in stages)
    _assert_best_is_a_chair(system, result)


def test_query_the_memory_cannot_decide_runs_the_2d_model_on_the_candidates(system):
    stages = []
    # "wooden" is no colour: the memory cannot check it, so the views that see its chairs are segmented.
    accepted, result = system["client"].send("the wooden chair", feedback=lambda s, p: stages.append(s))
    assert accepted and result.error_code == SUCCESS, result.error_message
    assert result.target_phrase and result.views_used >= 2
    assert stages[0] == "selecting views" and any(s.startswith("segmenting view") for s in stages)
    _assert_best_is_a_chair(system, result)


def test_describe_scene_lists_the_memory_objects(system):
    response = system["client"].describe(timeout_s=20.0)
    assert response is not None and response.success, "no DescribeScene service"
    labels = [o.label for o in response.objects]
    assert "Chair" in labels and len(labels) >= 3, labels
    chair = next(o for o in response.objects if o.label == "Chair")
    assert chair.description.startswith(("a ", "an ")) and "chair" in chair.description and " m, at (" in chair.description
    assert chair.box_size.x > 0.1 and chair.supporting_views >= 2
    assert len(system["client"].describe(max_objects=2).objects) == 2


def test_the_demo_draws_a_result_on_the_mapping_nodes_keyframes(system):
    # What `make demo` does for its pictures: save the map (MapFile service), read its keyframes, render.
    saved, message = system["client"].save_map(str(system["out"] / "map"))
    assert saved, message
    keyframes = read_saved_keyframes(system["out"] / "map")
    assert len(keyframes) >= 2
    accepted, result = system["client"].send("the chair")
    assert accepted and result.error_code == SUCCESS, result.error_message
    info = render_action_result(system["out"] / "chair.png", "the chair", result, system["map"], keyframes)
    # Keyframes and result share the map frame: a stored keyframe sees the best object, its label is drawn on it.
    assert info.path.stat().st_size > 10_000 and info.keyframe_id in {kf.keyframe_id for kf in keyframes}
    assert [lab.panel for lab in info.labels if lab.text.startswith("1. ")] == ["view", "top"]


def test_instruction_topic_publishes_result(system):
    node = system["client"].node
    got: list[dict] = []
    sub = node.create_subscription(String, "/mllm3d/query/result", lambda m: got.append(json.loads(m.data)),
                                   RELIABLE_QOS)
    pub = node.create_publisher(String, "/mllm3d/query/instruction", RELIABLE_QOS)
    try:
        deadline = time.monotonic() + 60
        while not got and time.monotonic() < deadline:
            if pub.get_subscription_count() > 0:
                pub.publish(String(data="the table"))
                wait_until = time.monotonic() + 20
                while not got and time.monotonic() < wait_until:
                    time.sleep(0.1)
            else:
                time.sleep(0.1)
        assert got, "no result on /mllm3d/query/result"
        assert got[0]["instruction"] == "the table" and got[0]["status"] in ("SUCCESS", "NOT_FOUND")
    finally:
        node.destroy_subscription(sub)
        node.destroy_publisher(pub)


def test_cancel_mid_query(system):
    accepted, result = system["client"].send("something wooden I can sit on", max_views=16, cancel_after_s=0.3)
    assert accepted
    assert result.error_code == CANCELED and "cancel" in result.error_message


def test_second_goal_is_rejected_while_one_runs(system):
    client = system["client"]
    results = {}
    first = threading.Thread(target=lambda: results.update(first=client.send("the wooden table", max_views=16)))
    first.start()
    time.sleep(0.3)
    accepted, _ = client.send("the chair")
    first.join(120)
    assert results["first"][0] is True
    assert accepted is False  # second_goal_policy: reject (config/perception.yaml)


def test_backend_killed_mid_query_then_recovers(system):
    procs, out = system["procs"], system["out"]
    killed_at: list[float] = []

    def on_feedback(stage: str, _progress: float) -> None:
        if stage.startswith("segmenting view 2") and not killed_at:
            os.killpg(procs["segmentation"].pid, signal.SIGKILL)
            killed_at.append(time.monotonic())

    accepted, result = system["client"].send("the wooden chair", max_views=16, feedback=on_feedback)
    assert accepted and killed_at, "the backend was not killed mid-query"
    assert result.error_code == BACKEND_UNAVAILABLE, result.error_message
    assert time.monotonic() - killed_at[0] <= 5.0 + 1.0  # aborted within the heartbeat timeout (+ slack)
    assert "segmentation" in result.error_message
    procs["segmentation"].wait(5)
    procs["segmentation"] = start("mllm3d_ros.ros.segmentation_node", domain_id=DOMAIN,
                                  log_path=out / "segmentation2.log", ros_args=("-r", "__ns:=/mllm3d"))
    assert wait_for_log(out / "segmentation2.log", "loaded in", 120)
    time.sleep(1.0)
    accepted, result = system["client"].send("the chair")
    assert accepted and result.error_code == SUCCESS, result.error_message
    assert system["procs"]["perception"].poll() is None
