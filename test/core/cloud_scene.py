"""Hand-built coloured clouds with normals, as a TSDF's surface extraction gives them (2 cm spacing), for the
support and class-agnostic object tests: axis-aligned boxes sampled on their faces, planes, tilted planes."""

from __future__ import annotations

import numpy as np

from mllm3d_ros.core.types import MapSnapshot

SPACING_M = 0.02


def box_cloud(lo, hi, color=(200, 200, 200), spacing=SPACING_M, faces="xXyYzZ"):
    """Points, colours and outward normals on the faces of the box [lo, hi] ("x" the -x face, "X" the +x
    face, ...): (N, 3) float32, (N, 3) uint8, (N, 3) float32."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    pts, nrm = [], []
    for face in faces:
        axis = "xyz".index(face.lower())
        sign = 1.0 if face.isupper() else -1.0
        others = [a for a in range(3) if a != axis]
        grids = [np.arange(lo[a] + spacing / 2, hi[a], spacing) for a in others]
        if any(g.shape[0] == 0 for g in grids):
            continue
        u, v = np.meshgrid(*grids, indexing="ij")
        p = np.zeros((u.size, 3))
        p[:, others[0]], p[:, others[1]] = u.ravel(), v.ravel()
        p[:, axis] = hi[axis] if sign > 0 else lo[axis]
        n = np.zeros((u.size, 3))
        n[:, axis] = sign
        pts.append(p)
        nrm.append(n)
    pts, nrm = np.concatenate(pts).astype(np.float32), np.concatenate(nrm).astype(np.float32)
    return pts, np.tile(np.asarray(color, np.uint8), (pts.shape[0], 1)), nrm


def plane_cloud(lo_xy, hi_xy, z, color=(120, 120, 120), tilt_deg=0.0, spacing=SPACING_M):
    """A horizontal rectangle at height z (normals up), optionally tilted about the x axis by tilt_deg."""
    xs = np.arange(lo_xy[0] + spacing / 2, hi_xy[0], spacing)
    ys = np.arange(lo_xy[1] + spacing / 2, hi_xy[1], spacing)
    x, y = np.meshgrid(xs, ys, indexing="ij")
    t = np.radians(tilt_deg)
    y0 = (lo_xy[1] + hi_xy[1]) / 2
    pts = np.stack([x.ravel(), y.ravel(), z + (y.ravel() - y0) * np.tan(t)], axis=1).astype(np.float32)
    nrm = np.tile(np.array([0.0, -np.sin(t), np.cos(t)], np.float32), (pts.shape[0], 1))
    return pts, np.tile(np.asarray(color, np.uint8), (pts.shape[0], 1)), nrm


def wall_cloud(x, lo_y, hi_y, height, color=(230, 230, 220), spacing=SPACING_M):
    """A wall in the plane x = const from the floor up to `height`, facing -x."""
    ys = np.arange(lo_y + spacing / 2, hi_y, spacing)
    zs = np.arange(spacing / 2, height, spacing)
    y, z = np.meshgrid(ys, zs, indexing="ij")
    pts = np.stack([np.full(y.size, x), y.ravel(), z.ravel()], axis=1).astype(np.float32)
    nrm = np.tile(np.array([-1.0, 0.0, 0.0], np.float32), (pts.shape[0], 1))
    return pts, np.tile(np.asarray(color, np.uint8), (pts.shape[0], 1)), nrm


def table(x0, y0, x1, y1, height, color=(150, 110, 70), leg=0.05):
    """A table: a 3 cm top (all faces but the underside seen from above) and four legs."""
    parts = [box_cloud((x0, y0, height - 0.03), (x1, y1, height), color, faces="xXyYZ")]
    for lx, ly in ((x0, y0), (x1 - leg, y0), (x0, y1 - leg), (x1 - leg, y1 - leg)):
        parts.append(box_cloud((lx, ly, 0.0), (lx + leg, ly + leg, height - 0.03), color, faces="xXyY"))
    return parts


def merge(*parts):
    """One cloud from (points, colours, normals) parts, in order."""
    parts = [p for part in parts for p in (part if isinstance(part, list) else [part])]
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]))


def snapshot(cloud) -> MapSnapshot:
    return MapSnapshot(cloud[0], cloud[1], cloud[2], 0)
