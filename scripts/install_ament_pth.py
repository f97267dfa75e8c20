"""Append the venv to AMENT_PREFIX_PATH in every Python process of the venv (a .pth hook).

With ROS 2 from pip the venv *is* the ROS underlay; ament_index lookups (package share dirs,
rosidl typesupport) need it on AMENT_PREFIX_PATH at build and run time (ros2-pip pitfall 2).
"""

import sysconfig
from pathlib import Path

HOOK = (
    "import os, sys; _p = [x for x in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if x]; "
    "os.environ['AMENT_PREFIX_PATH'] = os.pathsep.join(_p if sys.prefix in _p else _p + [sys.prefix]); del _p\n"
)
path = Path(sysconfig.get_paths()["purelib"]) / "ament_prefix_path.pth"
if not path.exists() or path.read_text() != HOOK:
    path.write_text(HOOK)
