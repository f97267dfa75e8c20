"""Memory node: keeps the object memory of the shared map, fed by proposals on every new keyframe.

Runs in the perception process (it needs the keyframes at memory speed). A timer notices new
keyframes in the mapper and hands their ids to the core's ProposalWorker, whose thread asks the
segmentation node for proposals (SegmentViews mode PROPOSE), adds the map's class-agnostic objects
(`map_objects`: what stands on the support surfaces, core/map_objects.py) and folds both into the
ObjectMemory through one path; fusion never waits for it. Queries reach the memory through `resolver` (phrases are embedded by the
segmentation node, mode ENCODE_TEXT).

Service:         ~/describe_scene (mllm3d_ros/srv/DescribeScene): the memory's objects, each with a caption
                 (the model's, on the object's best keyframe, when the backend has a caption mode)
Service client:  segmentation/segment_views (mllm3d_ros/srv/SegmentViews), through segment_views_client
Subscribed:      segmentation/heartbeat (std_msgs/String) -- liveness and state of the segmentation node
Published:       ~/objects (visualization_msgs/MarkerArray, latched): the confirmed instances' boxes
                 and labels, every publish_period_s when the memory changed
Parameters:      see MEMORY_PARAMS and config/perception.yaml (block `memory`).

Saved with the map: the mapping node's ~/save_map writes the memory into the map folder (`memory.json`,
`memory.npz`: core/memory_file.py) and ~/load_map restores it, so only keyframes the memory had not
folded in are proposed again. A memory file that does not fit (another map's, another config's or
version's, corrupt, missing) is logged as a warning and every keyframe of the loaded map is proposed again.
"""

from __future__ import annotations

import threading

import numpy as np
from geometry_msgs.msg import Point
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from ..core.colours import colour_profile
from ..core.describe import describe_objects
from ..core.map_objects import MapObjectProposer, chain_proposers
from ..core.memory_file import MemoryFileError, has_memory, read_memory, save_memory
from ..core.memory_query import MemoryResolver
from ..core.object_memory import ObjectMemory, ObjectMemoryConfig, VoxelIndex
from ..core.proposal_worker import ProposalWorker, ProposalWorkerConfig
from ..msg import SegmentedObject
from ..srv import DescribeScene
from .conversions import box_to_msg, make_header
from .params import ParamSpec, declare_and_read
from .qos import LATCHED_QOS
from .segment_views_client import SegmentViewsClient

MEMORY_PARAMS = (
    ParamSpec("enabled", True, "Build the object memory from proposals on every keyframe (queries use it)."),
    ParamSpec("map_frame", "map", "Frame of the map and of the published boxes."),
    ParamSpec("segment_service", "segmentation/segment_views", "SegmentViews service of the segmentation node."),
    ParamSpec("voxel_size_m", 0.03, "Instance voxel edge.", 0.005, 0.5),
    ParamSpec("min_detections", 2, "Views that must detect an instance before queries see it.", 1, 1000),
    ParamSpec("max_instances", 300, "Instances kept (the least supported is dropped beyond).", 1, 100000),
    ParamSpec("map_objects", True, "Class-agnostic objects from the map (what stands on the floor, table tops, counters, "
              "shelves) are proposed with the model's on every keyframe; unlabelled until a model's proposal names "
              "them."),
    ParamSpec("keep_apart", True, "Instances of one kind detected by separate masks of a keyframe stay two "
              "objects (books side by side); off for a proposer that often splits one object into disjoint boxes."),
    ParamSpec("queue_size", 64, "Keyframes waiting for proposals; when full the oldest is dropped.", 1, 10000),
    ParamSpec("max_retries", 3, "Retries of a keyframe whose proposals failed.", 0, 100),
    ParamSpec("retry_delay_s", 5.0, "Wait before retrying a failed keyframe.", 0.0, 3600.0),
    ParamSpec("call_timeout_s", 30.0, "A proposal or text call to the segmentation node fails after this.", 0.5, 600.0),
    ParamSpec("heartbeat_topic", "segmentation/heartbeat", "Liveness topic of the segmentation node."),
    ParamSpec("backend_timeout_s", 3.0, "The segmentation node counts as gone after this long without a heartbeat.",
              0.5, 60.0),
    ParamSpec("poll_period_s", 0.5, "How often new keyframes are looked for.", 0.05, 60.0),
    ParamSpec("publish_period_s", 2.0, "Period of the ~/objects markers (0 = never).", 0.0, 3600.0),
    ParamSpec("model_captions", True, "DescribeScene asks the segmentation node's backend for each object's "
              "caption on its best keyframe (one model call per object, cached); geometric captions when it has "
              "no caption mode or a call fails."),
    ParamSpec("stats_period_s", 10.0, "Period of the memory statistics log line (0 = never).", 0.0, 3600.0),
)


class MemoryNode(Node):
    """Thin adapter: new keyframes of the mapper -> ProposalWorker -> ObjectMemory; markers out."""

    def __init__(self, mapper, **kwargs) -> None:
        super().__init__("memory", **kwargs)
        p = declare_and_read(self, MEMORY_PARAMS)
        self._p = p
        self._mapper = mapper
        self.memory = ObjectMemory(ObjectMemoryConfig(voxel_size_m=p["voxel_size_m"], min_detections=p["min_detections"],
                                                      max_instances=p["max_instances"],
                                                      keep_apart=p["keep_apart"]))
        # A call waits up to backend_timeout_s for a backend not heard yet (start-up); the proposal worker
        # waits for readiness itself, so a loading backend costs no retries.
        self._backend = SegmentViewsClient(self, p["segment_service"], p["heartbeat_topic"],
                                           backend_timeout_s=p["backend_timeout_s"],
                                           service_wait_s=p["backend_timeout_s"], call_timeout_s=p["call_timeout_s"],
                                           callback_group=MutuallyExclusiveCallbackGroup())
        # The map's proposer runs on the worker's thread too: the snapshot it takes is the mapper's cached one.
        self.map_objects = MapObjectProposer(mapper.snapshot) if p["map_objects"] else None
        propose = (chain_proposers(self._backend.propose, self.map_objects.propose) if self.map_objects is not None
                   else self._backend.propose)
        self.worker = ProposalWorker(self.memory, propose, mapper.keyframe_store.get,
                                     ProposalWorkerConfig(p["queue_size"], p["max_retries"], p["retry_delay_s"]),
                                     backend_ready=self._backend.ready)
        self.resolver = MemoryResolver(self.memory, self._backend.encode_text) if p["enabled"] else None
        self._submitted_up_to = -1
        # The memory's keyframe counter runs over resets; the keyframes of the current memory are counted
        # from the last reset (what describe_scene and the statistics line report).
        self._keyframes_before_reset = 0
        self._captions: dict[tuple, str] = {}  # model captions per (instance, keyframe, label)
        # Keyframes restored with a loaded memory: not proposed again.
        self._restored: frozenset[int] = frozenset()
        self._poll_lock = threading.Lock()
        # A map reset drops the memory; a load restores the memory saved beside it, or drops it and its
        # keyframes are proposed again.
        mapper.add_reset_listener(self._on_map_reset, save=self._save_with_map, load=self._load_with_map)
        self._published_version = -1
        self._markers = self.create_publisher(MarkerArray, "~/objects", LATCHED_QOS)
        self.create_service(DescribeScene, "~/describe_scene", self._on_describe,
                            callback_group=MutuallyExclusiveCallbackGroup())
        timers = MutuallyExclusiveCallbackGroup()
        if p["enabled"]:
            self.worker.start()
            self.create_timer(p["poll_period_s"], self._poll, callback_group=timers)
            if p["publish_period_s"] > 0:
                self.create_timer(p["publish_period_s"], self._publish, callback_group=timers)
            if p["stats_period_s"] > 0:
                self.create_timer(p["stats_period_s"], lambda: self.get_logger().info(self.log_stats()),
                                  callback_group=timers)
        self.get_logger().info(f"object memory {'on' if p['enabled'] else 'off'} at {p['voxel_size_m'] * 100:.1f} cm")

    def _on_map_reset(self, saved=None) -> None:
        """Drop the memory (a map reset), or replace it by `saved` (a SavedMemory, with a map load)."""
        def counted() -> None:
            if saved is not None:
                self.memory.restore_state(saved.meta, saved.arrays)
                self._keyframes_before_reset = self.memory.stats.keyframes_integrated - len(saved.keyframe_ids)
            else:
                self._keyframes_before_reset = self.memory.stats.keyframes_integrated
        # One step for the poll timer (its lock): it never submits a keyframe of the new map before the
        # memory and the restored keyframes are in place.
        with self._poll_lock:
            # The queue and the memory; a proposal in flight for the old map is dropped, not integrated.
            self.worker.reset(then=counted)
            if self.map_objects is not None:
                self.map_objects.reset()
            self._captions.clear()
            self._restored = frozenset(saved.keyframe_ids) if saved is not None else frozenset()
            self._submitted_up_to = -1

    def _save_with_map(self, folder, map_uid: str) -> None:
        save_memory(self.memory, folder, map_uid)

    def _load_with_map(self, folder, map_uid: str | None) -> None:
        """The map was loaded from `folder`: restore the memory saved with it, else drop it (re-propose)."""
        try:
            saved = read_memory(folder, self.memory.config, map_uid)
        except MemoryFileError as exc:
            why = str(exc) if has_memory(folder) else f"no object memory was saved with the map in {folder}"
            self.get_logger().warning(f"{why}; proposing every keyframe of the loaded map again")
            self._on_map_reset()
            return
        self._on_map_reset(saved)
        self.get_logger().info(f"object memory restored with the map: {saved.instances} instances, "
                               f"{len(saved.keyframe_ids)} keyframes (not proposed again)")

    def _poll(self) -> None:
        with self._poll_lock:
            for kf in self._mapper.keyframes():
                if kf.keyframe_id > self._submitted_up_to:
                    if kf.keyframe_id not in self._restored:
                        self.worker.submit(kf.keyframe_id)
                    self._submitted_up_to = kf.keyframe_id

    def _publish(self) -> None:
        version = self.memory.version
        if version == self._published_version:
            return
        self._published_version = version
        header = make_header(self._p["map_frame"], self.get_clock().now().nanoseconds)
        out = MarkerArray(markers=[Marker(action=Marker.DELETEALL, ns="mllm3d/memory")])
        for i, obj in enumerate(self.memory.objects()):
            pose, size = box_to_msg(obj.box)
            out.markers.append(Marker(header=header, ns="mllm3d/memory", id=2 * i, type=Marker.CUBE,
                                      action=Marker.ADD, pose=pose, scale=size,
                                      color=ColorRGBA(r=0.3, g=0.6, b=1.0, a=0.25)))
            text = Marker(header=header, ns="mllm3d/memory", id=2 * i + 1, type=Marker.TEXT_VIEW_FACING,
                          action=Marker.ADD, text=f"#{obj.instance_id} {obj.label} {obj.confidence:.2f}",
                          color=ColorRGBA(r=1.0, g=1.0, b=1.0, a=0.9))
            c = obj.box.center_world_m
            text.pose.position = Point(x=float(c[0]), y=float(c[1]), z=float(c[2] + size.z / 2 + 0.08))
            text.pose.orientation.w = 1.0
            text.scale.z = 0.08
            out.markers.append(text)
        self._markers.publish(out)

    def _on_describe(self, request, response):
        objects = self.memory.objects()
        if request.max_objects:
            objects = objects[: request.max_objects]
        header = make_header(self._p["map_frame"], self.get_clock().now().nanoseconds)
        if len(self._captions) > 4096:  # instances come and go: bound what old ones leave behind
            self._captions.clear()
        model = ({"caption_fn": self._backend.caption, "keyframe_fn": self._mapper.keyframe_store.get,
                  "cache": self._captions} if self._p["model_captions"] else {})
        captions = describe_objects(objects, colour_fn=self._colour_fn(), voxel_size_m=self.memory.config.voxel_size_m,
                                    **model)
        for obj, caption in zip(objects, captions):
            pose, size = box_to_msg(obj.box)
            response.objects.append(SegmentedObject(
                header=header, label=obj.label, description=caption.text, confidence=float(obj.confidence),
                box_center=pose, box_size=size, supporting_views=int(obj.detections), visible_views=int(obj.views_seen)))
        response.success = True
        stats = self.memory.stats
        response.message = (f"{len(response.objects)} of {stats.confirmed} confirmed objects "
                            f"({self.keyframes_in_memory(stats)} keyframes in the memory)")
        if model and captions:
            n_model = sum(1 for c in captions if c.model_text)
            notes = list(dict.fromkeys(c.note for c in captions if c.note))
            response.message += f"; {n_model} model caption(s)" + "".join(f"; {n}" for n in notes[:3])
        return response

    def keyframes_in_memory(self, stats=None) -> int:
        """Keyframes integrated since the last map reset or load."""
        stats = stats or self.memory.stats
        return stats.keyframes_integrated - self._keyframes_before_reset

    def _colour_fn(self):
        """An object's colours from the map's fused colours in its voxels (`core/colours.py`), or None before
        the map has points."""
        snapshot = self._mapper.snapshot()
        if snapshot.num_points == 0:
            return None
        index = VoxelIndex(snapshot.points_world_m, self.memory.config.voxel_size_m)

        def colours(obj):
            idx = index.indices(obj.points_world_m)
            return colour_profile(snapshot.colors_rgb[idx] if idx.size else np.asarray([obj.mean_color_rgb]))

        return colours

    def log_stats(self) -> str:
        m, w = self.memory.stats, self.worker.stats
        line = (f"memory instances={m.instances} confirmed={m.confirmed} unlabelled={m.unlabelled} supports={m.supports} "
                f"keyframes={self.keyframes_in_memory(m)} proposal_lag_p50={w.lag_ms_p50:.0f} ms "
                f"dropped={w.dropped_queue_full} failures={w.failures} backend_unavailable={w.backend_unavailable} "
                f"backend={self._backend.status().state.value}")
        if self.map_objects is not None:
            line += f" map_objects_ms_p50={self.map_objects.stats.ms_p50:.0f}"
        return line

    def shutdown_core(self) -> None:
        self.worker.stop()

