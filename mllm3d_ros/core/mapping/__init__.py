"""RGB-D frames to the TSDF map: frame checks, sync, TF, ingest, keyframes, occupancy grid."""
