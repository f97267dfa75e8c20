"""Refresh the README's pictures (docs/images/) from the renders of `make demo` (the simulator's room).

    make demo && .venv/bin/python scripts/docs_images.py [out/demo]

The renders are `mllm3d_ros.render`'s, as `segment` writes them; here they are only reduced to a 256-colour
palette so that each stays under 250 KB in the repository. Pictures of the real recordings are never
committed (research-only data).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PICTURES = {"the_chair.png": "demo_the_chair.png", "a_cup_I_can_drink_from.png": "demo_a_cup.png"}
MAX_BYTES = 250_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo_dir", nargs="?", default=str(ROOT / "out" / "demo"))
    args = parser.parse_args(argv)
    out_dir = ROOT / "docs" / "images"
    out_dir.mkdir(parents=True, exist_ok=True)
    for source, target in PICTURES.items():
        path = Path(args.demo_dir) / source
        if not path.is_file():
            print(f"error: {path} is missing; run `make demo` first", file=sys.stderr)
            return 1
        image = Image.open(path).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                                                         dither=Image.Dither.NONE)
        image.save(out_dir / target, optimize=True)
        size = (out_dir / target).stat().st_size
        print(f"{out_dir / target}: {image.width}x{image.height}, {size / 1e3:.0f} KB")
        if size > MAX_BYTES:
            print(f"error: {target} is {size} bytes, over {MAX_BYTES}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
