"""package.xml declares what the Python package imports, and colcon test runs the whole test folder."""

from __future__ import annotations

import ast
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

# Import name -> rosdep key where they differ.
ROSDEP_KEYS = {"tf2_ros": "tf2_ros_py", "numpy": "python3-numpy", "cv2": "python3-opencv", "scipy": "python3-scipy",
               "matplotlib": "python3-matplotlib", "tqdm": "python3-tqdm", "yaml": "python3-yaml"}
# Not in rosdep: installed with `pip install -r requirements/perception.txt` (package.xml says so).
PIP_ONLY = frozenset({"open3d", "torch", "transformers", "rosbags", "ai_edge_litert", "huggingface_hub",
                      "safetensors", "PIL", "bitsandbytes", "accelerate"})


def top_level_imports(root: Path) -> dict[str, str]:
    """Top-level module -> first file importing it, over every .py under `root` (relative imports skipped)."""
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                out.setdefault(name.split(".")[0], str(path.relative_to(REPO_ROOT)))
    return out


def test_every_import_has_a_dependency():
    deps = {e.text for e in ET.parse(REPO_ROOT / "package.xml").getroot()
            if e.tag in ("depend", "exec_depend", "build_depend")}
    imports = top_level_imports(REPO_ROOT / "mllm3d_ros") | top_level_imports(REPO_ROOT / "launch")
    missing = sorted(f"{ROSDEP_KEYS.get(m, m)} (imported by {f})" for m, f in imports.items()
                     if m not in sys.stdlib_module_names and m != "mllm3d_ros" and m not in PIP_ONLY
                     and ROSDEP_KEYS.get(m, m) not in deps)
    assert missing == [], f"package.xml lacks <exec_depend> for: {missing}"


def test_colcon_test_registers_the_whole_test_folder():
    cmake = (REPO_ROOT / "CMakeLists.txt").read_text()
    registered = re.findall(r"ament_add_pytest_test\(\s*\S+\s+(\S+)", cmake)
    assert registered == ["test"], registered
