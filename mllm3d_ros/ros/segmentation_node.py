"""Segmentation node: the 2D reasoning-segmentation backend behind the SegmentViews service.

A lifecycle node: weights load in on_configure and are freed in on_cleanup (they are the heavy
state); with `autostart` it configures and activates itself, like nav2's lifecycle manager would, once
its executor spins, so that the heartbeat says `loading` meanwhile.
Run it on a GPU host to keep the robot's computer free; the query node finds it over DDS.

Service:    ~/segment_views (mllm3d_ros/srv/SegmentViews), answered only while active: segmentation of an
            instruction (with the map's candidates as numbered marks), instruction-free proposals (the object
            memory's input), a phrase's embedding, a caption of a marked object (dense captions), or the
            model's parse of an instruction (JSON in `parsed_json`), or whether the backend recognises a phrase
            (the open-set gate, JSON in `recognition_json`)
Published:  ~/heartbeat (std_msgs/String, 2 Hz, reliable): "<backend> <state> <instance>" -- liveness for
            its clients (core/backend_liveness.py): state loading | active | inactive | unconfigured, instance
            a token new at every start (a client re-sends what it sent to a previous instance)
Parameters: see SEGMENTATION_PARAMS and config/perception.yaml (block `segmentation`).
"""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from std_msgs.msg import Header, String

from ..backends.base import build_backend
from ..core.geometry import check_pose
from ..core.query.instruction import parsed_to_json
from ..core.segmentation import ModeUnsupported, normalise_instruction
from ..core.types import BackendView, InputError, SegmentationResult
from ..srv import SegmentViews
from .conversions import (camera_info_to_intrinsics, image_to_depth_m, image_to_rgb, marks_from_request,
                          pose_to_matrix, prediction_to_msg)
from .params import ParamSpec, declare_and_read
from .qos import RELIABLE_QOS

SEGMENTATION_PARAMS = (
    ParamSpec("backend", "offline", "Backend name from the registry.", choices=("offline", "transformers")),
    # auto and bfloat16: a 7B VLM takes ~16 GB in bfloat16 on the GPU when there is one, and never the
    # ~33 GB of float32 in host memory when there is not (bfloat16 runs on CPUs too, slowly).
    ParamSpec("device", "auto", "transformers backend: where the models run; auto = cuda when available.",
              choices=("auto", "cpu", "cuda", "cuda:N"), pattern=r"auto|cpu|cuda(:[0-9]+)?"),
    ParamSpec("dtype", "bfloat16", "transformers backend: model dtype (float16 on CPU falls back to float32).",
              choices=("float32", "float16", "bfloat16")),
    ParamSpec("vlm_model", "", "transformers backend: HF id or local path of the VLM (e.g. Qwen/Qwen2.5-VL-7B-Instruct)."),
    ParamSpec("sam_model", "", "transformers backend: HF id or local path of the SAM-family model."),
    ParamSpec("sam_kind", "auto", "transformers backend: SAM generation; auto = from the checkpoint's model_type "
              "(sam, sam2, sam2_video).", choices=("auto", "sam", "sam2")),
    ParamSpec("coord_format", "auto", "transformers backend: how the VLM writes coordinates; auto = from its "
              "model_type (README, Backends); pixels = of the resized image, norm1000 = 0-1000.",
              choices=("auto", "pixels", "norm1000")),
    ParamSpec("max_pixels", 307200, "transformers backend: VLM image size bound in pixels (640x480 = 307200, "
              "~300-400 image tokens); the checkpoint's own bound if lower.", 3136, 67108864),
    ParamSpec("max_new_tokens", 384, "transformers backend: bound on the VLM's answer length (Qwen writes each "
              "digit as a token: 3 targets with marks ~130-175).", 8, 4096),
    ParamSpec("batch_size", 4, "transformers backend: views per generate call (halved on out-of-memory).", 1, 64),
    ParamSpec("load_in_4bit", False, "transformers backend: 4-bit weights (bitsandbytes + accelerate, CUDA)."),
    ParamSpec("load_in_8bit", False, "transformers backend: 8-bit weights (bitsandbytes + accelerate, CUDA)."),
    ParamSpec("local_files_only", False, "transformers backend: never contact the model hub."),
    ParamSpec("score_threshold", 0.3, "offline backend: detector score threshold.", 0.0, 1.0),
    ParamSpec("num_threads", 2, "offline backend: CPU threads of the detector.", 1, 64),
    ParamSpec("detector_model", "", "transformers backend: HF id or local path of the OWLv2 open-vocabulary detector "
              "of proposal mode (the object memory's input), e.g. google/owlv2-base-patch16-ensemble; '' = none."),
    ParamSpec("proposal_score_threshold", 0.1, "transformers backend: detector score a proposal needs.", 0.0, 1.0),
    ParamSpec("max_proposals_per_view", 20, "transformers backend: proposals kept per keyframe.", 1, 256),
    ParamSpec("autostart", True, "Configure and activate on start-up."),
)


def backend_kwargs(p: dict) -> dict:
    """The backend's constructor arguments from node parameters (only those the backend takes)."""
    if p["backend"] == "offline":
        return {"score_threshold": p["score_threshold"], "num_threads": p["num_threads"]}
    kwargs = {name: p[name] for name in ("device", "dtype", "sam_kind", "coord_format", "max_pixels", "max_new_tokens",
                                         "batch_size", "load_in_4bit", "load_in_8bit", "local_files_only")}
    if p["vlm_model"]:
        kwargs["vlm_model"] = p["vlm_model"]
    if p["sam_model"]:
        kwargs["sam_model"] = p["sam_model"]
    if p["detector_model"]:
        kwargs.update(detector_model=p["detector_model"], proposal_score_threshold=p["proposal_score_threshold"],
                      max_proposals_per_view=p["max_proposals_per_view"])
    return kwargs


class SegmentationNode(LifecycleNode):
    def __init__(self, **kwargs) -> None:
        super().__init__("segmentation", **kwargs)
        self._params = declare_and_read(self, SEGMENTATION_PARAMS)
        self._backend = None
        self._active = False
        self._loading = False
        self.instance = uuid.uuid4().hex[:12]
        # One inference at a time: the model is not re-entrant, and batching happens inside a call.
        self._infer_lock = threading.Lock()
        self._service_group = MutuallyExclusiveCallbackGroup()
        self._heartbeat_group = MutuallyExclusiveCallbackGroup()
        self._service = None
        self._heartbeat_pub = self.create_publisher(String, "~/heartbeat", RELIABLE_QOS)
        # The heartbeat has its own group so it keeps beating while a long inference runs.
        self.create_timer(0.5, self._beat, callback_group=self._heartbeat_group)
        if self._params["autostart"]:
            # Loaded from the executor (a one-shot timer in its own group), not here: the heartbeat then
            # says `loading` while the weights load, and a signal during the load stops a spinning node.
            self._loading = True
            self._autostart_timer = self.create_timer(0.0, self._autostart,
                                                      callback_group=MutuallyExclusiveCallbackGroup())
        self._beat()

    def _autostart(self) -> None:
        self._autostart_timer.cancel()
        try:
            self.trigger_configure()
            if self._backend is not None:
                self.trigger_activate()
        finally:
            self._loading = False

    def _beat(self) -> None:
        state = ("active" if self._active else "loading" if self._loading else
                 "inactive" if self._backend else "unconfigured")
        self._heartbeat_pub.publish(String(data=f"{self._params['backend']} {state} {self.instance}"))

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        t0 = time.monotonic()
        try:
            self._backend = build_backend(self._params["backend"], **backend_kwargs(self._params))
        except Exception as exc:  # noqa: BLE001 -- ImportError, OSError, CUDA RuntimeError, ...: rclpy's
            # lifecycle would turn an escaping exception into an ERROR transition without a log line.
            self.get_logger().error(f"cannot load backend '{self._params['backend']}': {type(exc).__name__}: {exc}")
            return TransitionCallbackReturn.FAILURE
        self._service = self.create_service(SegmentViews, "~/segment_views", self._on_request,
                                            callback_group=self._service_group)
        self.get_logger().info(f"backend '{self._params['backend']}' loaded in {time.monotonic() - t0:.1f} s")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = True
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        if self._service is not None:
            self.destroy_service(self._service)
            self._service = None
        with self._infer_lock:
            if self._backend is not None:
                self._backend.close()
                self._backend = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self.on_cleanup(state)

    def _on_request(self, request, response):
        if not self._active or self._backend is None:
            response.status = SegmentViews.Response.BACKEND_ERROR
            response.message = "segmentation node is not active (lifecycle state)"
            return response
        try:
            if request.mode == SegmentViews.Request.ENCODE_TEXT:
                with self._infer_lock:
                    embedding = self._backend.encode_text([request.instruction])[0]
                response.status = SegmentViews.Response.OK
                response.query_embedding = np.asarray(embedding, dtype=np.float32).ravel().tolist()
                return response
            if request.mode == SegmentViews.Request.RECOGNISE:
                with self._infer_lock:
                    recognition = self._backend.recognise(normalise_instruction(request.instruction))
                response.status = SegmentViews.Response.OK
                response.recognition_json = recognition.to_json()
                return response
            if request.mode == SegmentViews.Request.PARSE:
                with self._infer_lock:
                    parsed = self._backend.parse(normalise_instruction(request.instruction))
                response.status = SegmentViews.Response.OK
                response.parsed_json = parsed_to_json(parsed)
                return response
            views = self._views_from(request)
            if request.mode == SegmentViews.Request.CAPTION:
                if len(views) != 1 or not views[0].marks:
                    raise InputError(f"CAPTION needs exactly one view with a mark, got {len(views)} view(s) and "
                                     f"{len(request.marks)} mark(s)")
                with self._infer_lock:
                    response.caption = self._backend.caption(views[0], views[0].marks[0])
                response.status = SegmentViews.Response.OK
                return response
            with self._infer_lock:
                if request.mode == SegmentViews.Request.PROPOSE:
                    result = SegmentationResult("", np.zeros(0, np.float32), tuple(self._backend.propose(views)))
                elif request.mode == SegmentViews.Request.SEGMENT:
                    result = self._backend.segment(views, request.instruction)
                else:
                    raise InputError(f"unknown mode {request.mode} (SEGMENT 0, PROPOSE 1, ENCODE_TEXT 2, CAPTION 3, "
                                     "PARSE 4, RECOGNISE 5)")
        except InputError as exc:
            response.status, response.message = SegmentViews.Response.INVALID_INPUT, str(exc)
            return response
        except ModeUnsupported as exc:  # not a failure: the caller falls back (e.g. to geometric captions)
            response.status, response.message = SegmentViews.Response.UNSUPPORTED, str(exc)
            return response
        except Exception as exc:  # noqa: BLE001 -- a backend bug must not take the node down
            self.get_logger().error(f"backend failed: {type(exc).__name__}: {exc}")
            response.status, response.message = SegmentViews.Response.BACKEND_ERROR, f"{type(exc).__name__}: {exc}"
            return response
        response.status = SegmentViews.Response.OK
        response.target_phrase = result.target_phrase
        response.query_embedding = np.asarray(result.query_embedding, dtype=np.float32).ravel().tolist()
        response.forward_ms = float(result.forward_ms)
        header = Header(frame_id="camera")
        for view in result.views:
            response.predictions.extend(prediction_to_msg(view.keyframe_id, pred, header) for pred in view.predictions)
        return response

    @staticmethod
    def _views_from(request) -> list[BackendView]:
        n = len(request.images)
        if not (len(request.keyframe_ids) == len(request.camera_infos) == len(request.world_t_camera) == n):
            raise InputError("keyframe_ids, images, camera_infos and world_t_camera must have the same length")
        if request.depths and len(request.depths) != n:
            raise InputError("depths must be empty or one per image")
        if n == 0:
            raise InputError("no images in the request")
        marks = marks_from_request(request)
        views = []
        for i in range(n):
            color = image_to_rgb(request.images[i])
            depth = image_to_depth_m(request.depths[i]) if request.depths else None
            intrinsics = camera_info_to_intrinsics(request.camera_infos[i])
            size = (intrinsics.height, intrinsics.width)
            if color.shape[:2] != size or (depth is not None and depth.shape != size):
                raise InputError(f"view {i}: image {color.shape[1]}x{color.shape[0]}"
                                 + (f", depth {depth.shape[1]}x{depth.shape[0]}" if depth is not None else "")
                                 + f" do not match camera_info {intrinsics.width}x{intrinsics.height}")
            pose = check_pose(pose_to_matrix(request.world_t_camera[i]), name=f"world_t_camera[{i}]")
            views.append(BackendView(keyframe_id=int(request.keyframe_ids[i]), color_rgb=color, depth_m=depth,
                                     intrinsics=intrinsics, world_T_camera=pose,
                                     marks=marks.get(int(request.keyframe_ids[i]), ())))
        return views


def main(args: list[str] | None = None) -> int:
    from .runner import run_nodes
    return run_nodes([SegmentationNode], args)


if __name__ == "__main__":
    import sys
    sys.exit(main())
