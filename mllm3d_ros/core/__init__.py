"""ROS-free core, by pipeline stage. Never imports rclpy or messages (test/test_core_is_ros_free.py).

mapping/  RGB-D frames to the map: frame checks, sync, TF buffer, ingest worker, TSDF map, keyframes, mapper,
          occupancy grid.
memory/   the object memory: 2D proposals lifted onto the map (evidence, object geometry), supports and the
          map's class-agnostic objects, the proposal worker.
query/    instructions to answers: parser, open-set gate, memory resolver, relations, colours and shapes, view
          selection, multi-view voting, marks, captions, approach poses, and the QueryPipeline that runs them.
Shared, here: types, geometry (transforms, projection, voxel keys), config checks, visibility (the one
visibility test), clustering, segmentation (the 2D backend interface) and backend liveness.
"""
