"""Voxel-connected components: which points join, the size order and the minimum, the shared voxel graph."""

from __future__ import annotations

import numpy as np

from mllm3d_ros.core.clustering import cluster_points, voxel_edges


def test_clusters_by_26_connectivity_largest_first_small_ones_dropped():
    line = np.array([[0.01 + 0.025 * i, 0.01, 0.01] for i in range(5)])  # 5 points closer than a voxel, in a row
    diagonal = np.array([[1.01, 1.01, 1.01], [1.04, 1.04, 1.04]])  # corner-touching voxels: one component
    lone = np.array([[3.0, 3.0, 3.0]])
    pts = np.concatenate([lone, diagonal, line])
    out = cluster_points(pts, 0.03, min_points=2)
    assert (out.num_clusters, out.num_discarded) == (2, 1)
    assert out.labels.tolist() == [-1, 1, 1, 0, 0, 0, 0, 0]
    # A gap of one empty voxel splits the row.
    gap = cluster_points(np.array([[0.01, 0.0, 0.0], [0.07, 0.0, 0.0]]), 0.03)
    assert gap.num_clusters == 2 and sorted(gap.labels.tolist()) == [0, 1]
    empty = cluster_points(np.zeros((0, 3)), 0.03)
    assert (empty.labels.shape, empty.num_clusters, empty.num_discarded) == ((0,), 0, 0)


def test_voxel_edges_joins_each_pair_of_neighbour_voxels_once():
    cell = np.array([[1, 1, 1], [2, 2, 2], [1, 1, 1], [4, 1, 1]], dtype=np.int64)
    keys, of_cell, a, b = voxel_edges(cell)
    assert keys.shape == (3,) and of_cell[0] == of_cell[2]
    pairs = {tuple(sorted((int(i), int(j)))) for i, j in zip(a, b)}
    assert pairs == {tuple(sorted((int(of_cell[0]), int(of_cell[1]))))}
    assert a.shape == (1,)
