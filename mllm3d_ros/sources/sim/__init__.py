"""The simulator's parts by job (scene, furnished rooms, relational rooms, events, trajectories, textures);
the renderer and the public names are in `mllm3d_ros.sources.simulator`."""
