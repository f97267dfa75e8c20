"""The segmentation node survives bad SegmentViews requests (INVALID_INPUT, never a crash) and a
backend that cannot load (one error line, FAILURE)."""

from __future__ import annotations

import numpy as np
import pytest
import rclpy
from geometry_msgs.msg import Pose, Quaternion
from rclpy.context import Context
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from std_msgs.msg import Header

from mllm3d_ros.core.types import CameraIntrinsics, SegmentationResult, ViewPredictions
from mllm3d_ros.ros import segmentation_node
from mllm3d_ros.ros.conversions import depth_to_image, intrinsics_to_camera_info, matrix_to_pose, rgb_to_image
from mllm3d_ros.ros.segmentation_node import SegmentationNode
from mllm3d_ros.srv import SegmentViews

pytestmark = pytest.mark.ros
K = CameraIntrinsics(64, 48, 50.0, 50.0, 31.5, 23.5)


class ShapeCheckingBackend:
    """Stands in for a model: it indexes depth with the colour image's shape, as a real one would."""

    def segment(self, views, instruction):
        for view in views:
            if view.depth_m is not None:
                view.depth_m[view.color_rgb.shape[0] - 1, view.color_rgb.shape[1] - 1]
        return SegmentationResult("thing", np.ones(4, np.float32), tuple(ViewPredictions(v.keyframe_id, ())
                                                                         for v in views))

    def close(self):
        pass


@pytest.fixture
def node():
    context = Context()
    rclpy.init(context=context)
    n = SegmentationNode(context=context, namespace="/seg_faults",
                         parameter_overrides=[Parameter("autostart", value=False)])
    yield n
    n.destroy_node()
    rclpy.try_shutdown(context=context)


def _request(n=1, width=64, height=48, depth_size=(48, 64), pose=np.eye(4)):
    header = Header(frame_id="camera")
    req = SegmentViews.Request(instruction="the thing")
    for i in range(n):
        req.keyframe_ids.append(i)
        req.images.append(rgb_to_image(np.zeros((height, width, 3), np.uint8), header))
        req.depths.append(depth_to_image(np.ones(depth_size, np.float32), header))
        req.camera_infos.append(intrinsics_to_camera_info(K, header))
        req.world_t_camera.append(matrix_to_pose(pose))
    return req


def _answer(node, request):
    node._backend, node._active = ShapeCheckingBackend(), True
    return node._on_request(request, SegmentViews.Response())


def test_good_request_is_answered(node):
    response = _answer(node, _request(2))
    assert response.status == SegmentViews.Response.OK and response.target_phrase == "thing"


@pytest.mark.parametrize("mutate, expected", [
    (lambda r: r.camera_infos.pop(), "same length"),
    (lambda r: r.depths.pop(), "depths must be empty or one per image"),
    (lambda r: setattr(r, "images", []) or setattr(r, "depths", []) or setattr(r, "camera_infos", [])
     or setattr(r, "world_t_camera", []) or setattr(r, "keyframe_ids", []), "no images"),
    (lambda r: r.images.__setitem__(0, rgb_to_image(np.zeros((24, 32, 3), np.uint8), Header())),
     "do not match camera_info 64x48"),
    (lambda r: r.depths.__setitem__(0, depth_to_image(np.ones((24, 32), np.float32), Header())),
     "do not match camera_info 64x48"),
    (lambda r: r.world_t_camera.__setitem__(0, Pose(orientation=Quaternion(w=0.0))), "invalid quaternion"),
    (lambda r: setattr(r.world_t_camera[0].position, "x", float("nan")), "NaN"),
    (lambda r: setattr(r.images[0], "encoding", "yuv422"), "encoding"),
])
def test_bad_request_is_invalid_input_and_the_node_keeps_serving(node, mutate, expected):
    request = _request(2)
    mutate(request)
    response = _answer(node, request)
    assert response.status == SegmentViews.Response.INVALID_INPUT and expected in response.message, response.message
    assert _answer(node, _request(1)).status == SegmentViews.Response.OK


@pytest.mark.parametrize("error", [ImportError("No module named 'ai_edge_litert'"), OSError("libcudart.so: not found"),
                                   RuntimeError("CUDA error: no kernel image is available")])
def test_configure_failure_is_logged_once_and_returns_failure(node, monkeypatch, capfd, error):
    def broken(name, **kwargs):
        raise error

    monkeypatch.setattr(segmentation_node, "build_backend", broken)
    assert node.on_configure(None) == TransitionCallbackReturn.FAILURE
    err = capfd.readouterr().err
    assert f"cannot load backend 'offline': {type(error).__name__}: {error}" in err, err
