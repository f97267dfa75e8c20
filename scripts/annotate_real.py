"""Make and check the hand-made 3D ground truth of a real recording (benchmarks/annotations/*.json).

    .venv/bin/python -m scripts.annotate_real fuse      # fuse the recording once at 2 cm (cached in out/annotate/)
    .venv/bin/python -m scripts.annotate_real views [--zmin Z --zmax Z]   # top-down and side PNGs with the boxes
    .venv/bin/python -m scripts.annotate_real overlay --frames 0 300 600 900   # boxes and GT points on colour frames
    .venv/bin/python -m scripts.annotate_real check     # points per instance, the table of what each box holds

The map is fused in the frame the product uses (`open_dataset` rotates every pose into a z-up world with
gravity-direction.txt); the boxes are drawn in it by looking at the views and overlays, and moved until
the overlays are right on frames from every part of the sequence. Everything written goes to out/annotate/
(git-ignored): frames and maps of the recording are never committed (research-only terms).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.real_annotations import REDKITCHEN_JSON, gt_masks, load_annotations  # noqa: E402
from mllm3d_ros.core.geometry import invert_transform, transform_points  # noqa: E402
from mllm3d_ros.core.mapping.tsdf_map import TsdfMap, TsdfMapConfig  # noqa: E402
from mllm3d_ros.render import box_corners  # noqa: E402
from mllm3d_ros.sources.dataset import open_dataset  # noqa: E402

DEFAULT_DATASET = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "7scenes-redkitchen"
OUT = Path("out/annotate")
VOXEL_M = 0.02
_EDGES = [(0, 1), (0, 2), (1, 3), (2, 3), (4, 5), (4, 6), (5, 7), (6, 7), (0, 4), (1, 5), (2, 6), (3, 7)]
_PALETTE = plt.get_cmap("tab10")


def fuse(dataset: Path) -> Path:
    """All frames into a 2 cm TSDF (the annotation map); points, colours and map_T_world to an npz."""
    ds = open_dataset(dataset)
    tsdf = TsdfMap(TsdfMapConfig(voxel_size_m=VOXEL_M, block_budget=200_000, depth_max_m=4.0))
    for k in range(len(ds)):
        tsdf.integrate(ds[k])
    snap = tsdf.snapshot()
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "map_2cm.npz"
    np.savez_compressed(path, points=snap.points_world_m, colors=snap.colors_rgb, map_T_world=ds.map_T_world)
    lo, hi = snap.points_world_m.min(0), snap.points_world_m.max(0)
    print(f"{snap.num_points} points, bounds {np.round(lo, 2)} .. {np.round(hi, 2)} -> {path}")
    return path


def _load_map() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    data = np.load(OUT / "map_2cm.npz")
    return data["points"], data["colors"], data["map_T_world"]


def views(annotations: Path, zmin: float | None, zmax: float | None, region: list[float] | None, tag: str) -> None:
    """Top-down (x-y) and two side views of the map (optionally a z slice and an x-y region) with the boxes."""
    points, colors, map_T_world = _load_map()
    instances = load_annotations(annotations, map_T_world).instances if annotations.exists() else ()
    keep = np.ones(len(points), bool)
    if zmin is not None:
        keep &= points[:, 2] >= zmin
    if zmax is not None:
        keep &= points[:, 2] <= zmax
    if region:
        x0, x1, y0, y1 = region
        keep &= (points[:, 0] >= x0) & (points[:, 0] <= x1) & (points[:, 1] >= y0) & (points[:, 1] <= y1)
    pts, cols = points[keep], colors[keep] / 255.0
    for (a, b), name in zip(((0, 1), (0, 2), (1, 2)), ("top", "side_xz", "side_yz")):
        depth = pts[:, 2] if name == "top" else -pts[:, 3 - a - b]
        o = np.argsort(depth)  # the point nearest the viewer drawn last
        span = np.ptp(pts[:, [a, b]], axis=0) if len(pts) else np.ones(2)
        fig, ax = plt.subplots(figsize=(min(20, 2 + 5 * span[0]), min(14, 1.5 + 5 * span[1])))
        ax.scatter(pts[o, a], pts[o, b], s=4, c=cols[o], linewidths=0)
        for k, inst in enumerate(instances):
            for part in inst.boxes:
                corners = box_corners(part.box)
                for i, j in _EDGES:
                    ax.plot(corners[[i, j], a], corners[[i, j], b], c=_PALETTE(k % 10), lw=1)
            ax.text(inst.center_m[a], inst.center_m[b], inst.instance_id, color=_PALETTE(k % 10), fontsize=8)
        ax.set_aspect("equal")
        ax.minorticks_on()
        ax.grid(True, which="both", lw=0.3)
        ax.set_title(f"{name} z in [{zmin}, {zmax}] region {region}")
        fig.tight_layout()
        path = OUT / f"views{tag}_{name}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        print(path)


def overlay(dataset: Path, annotations: Path, frames: list[int]) -> None:
    """Per frame: the box edges (occluded ones too) and the GT points visible in the depth image."""
    ds = open_dataset(dataset)
    points, _, _ = _load_map()
    gt = load_annotations(annotations, ds.map_T_world)
    masks = gt_masks(points, gt.instances)
    for index in frames:
        frame = ds[index]
        img = frame.color_rgb.copy()
        camera_T_world = invert_transform(frame.world_T_camera)
        K = frame.intrinsics
        for k, inst in enumerate(gt.instances):
            color = tuple(int(255 * c) for c in _PALETTE(k % 10)[:3])
            p_cam = transform_points(camera_T_world, points[masks[inst.instance_id]])
            front = p_cam[:, 2] > 0.1
            p_cam = p_cam[front]
            u = np.round(K.fx * p_cam[:, 0] / p_cam[:, 2] + K.cx).astype(int)
            v = np.round(K.fy * p_cam[:, 1] / p_cam[:, 2] + K.cy).astype(int)
            inside = (u >= 0) & (u < K.width) & (v >= 0) & (v < K.height)
            u, v, z = u[inside], v[inside], p_cam[inside, 2]
            seen = np.abs(frame.depth_m[v, u] - z) < 0.05  # not hidden behind something nearer
            for x, y in zip(u[seen], v[seen]):
                cv2.circle(img, (int(x), int(y)), 2, color, -1)
            for part in inst.boxes:
                c_cam = transform_points(camera_T_world, box_corners(part.box))
                if np.all(c_cam[:, 2] > 0.1):
                    uv = np.stack([K.fx * c_cam[:, 0] / c_cam[:, 2] + K.cx,
                                   K.fy * c_cam[:, 1] / c_cam[:, 2] + K.cy], 1).astype(int)
                    for i, j in _EDGES:
                        cv2.line(img, tuple(uv[i]), tuple(uv[j]), color, 1, cv2.LINE_AA)
                    cv2.putText(img, inst.instance_id, tuple(uv[7]), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1,
                                cv2.LINE_AA)
        path = OUT / f"overlay_{index:04d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        print(path)


def fit(annotations: Path, region: list[float], zmin: float, zmax: float, exclude: list[str]) -> None:
    """A starting box for an instance: the smallest gravity-aligned box around the map points of an x-y
    region and z range (minus the points of the named annotated instances), to be corrected by eye."""
    points, _, map_T_world = _load_map()
    x0, x1, y0, y1 = region
    keep = ((points[:, 0] >= x0) & (points[:, 0] <= x1) & (points[:, 1] >= y0) & (points[:, 1] <= y1)
            & (points[:, 2] >= zmin) & (points[:, 2] <= zmax))
    if exclude:
        gt = load_annotations(annotations, map_T_world)
        masks = gt_masks(points, gt.instances)
        for name in exclude:
            keep &= ~masks[name]
    pts = points[keep]
    (cx, cy), (w, h), angle = cv2.minAreaRect(pts[:, :2].astype(np.float32))
    z0, z1 = np.percentile(pts[:, 2], [0.5, 99.5])
    if angle > 45.0 or angle < -45.0:  # the same rectangle with its axes swapped: yaw in [-45, 45]
        w, h, angle = h, w, angle - 90.0 * np.sign(angle)
    yaw = angle
    box = {"center_m": [round(cx, 3), round(cy, 3), round((z0 + z1) / 2, 3)],
           "size_m": [round(w, 3), round(h, 3), round(z1 - z0, 3)], "yaw_deg": round(yaw, 1)}
    print(f"{len(pts)} points -> {json.dumps(box)}")


def check(annotations: Path) -> None:
    points, colors, map_T_world = _load_map()
    gt = load_annotations(annotations, map_T_world)
    masks = gt_masks(points, gt.instances)
    print(f"{'id':14s} {'class':10s} {'points':>7s}  z range of its points   mean colour")
    for inst in gt.instances:
        m = masks[inst.instance_id]
        z = points[m, 2]
        rng = f"{z.min():6.2f} .. {z.max():5.2f}" if m.any() else "   -"
        col = np.round(colors[m].mean(0)).astype(int).tolist() if m.any() else "-"
        print(f"{inst.instance_id:14s} {inst.label:10s} {int(m.sum()):7d}  {rng:20s} {col}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("fuse", "views", "fit", "overlay", "check"))
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--annotations", type=Path, default=REDKITCHEN_JSON)
    parser.add_argument("--frames", type=int, nargs="*", default=[0, 125, 249], help="frame indices (overlay)")
    parser.add_argument("--zmin", type=float)
    parser.add_argument("--zmax", type=float)
    parser.add_argument("--region", type=float, nargs=4, metavar=("X0", "X1", "Y0", "Y1"), help="x-y crop (views)")
    parser.add_argument("--exclude", nargs="*", default=[], help="instance ids whose points fit ignores")
    parser.add_argument("--tag", default="", help="suffix of the views PNG")
    args = parser.parse_args()
    if args.step == "fuse":
        fuse(args.dataset)
    elif args.step == "views":
        views(args.annotations, args.zmin, args.zmax, args.region, args.tag)
    elif args.step == "fit":
        fit(args.annotations, args.region, args.zmin, args.zmax, args.exclude)
    elif args.step == "overlay":
        overlay(args.dataset, args.annotations, args.frames)
    else:
        check(args.annotations)


if __name__ == "__main__":
    main()
