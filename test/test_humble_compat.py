"""The package uses only rclpy APIs that Humble (and Jazzy) have: an AST scan for Kilted/Jazzy-only patterns.

Each pattern was checked against the humble branch of ros2/rclpy:
- `rclpy.init()` returns None (a context manager only from Kilted): no `with rclpy.init()`, no use
  of its return value;
- `Node` and executors are not context managers (`__enter__` from Jazzy);
- `create_timer(autostart=...)` and `Client.call(timeout_sec=...)` are Jazzy+ keywords;
- modules that Humble's rclpy does not ship (`rclpy.clock_type`, `rclpy.event_handler`, ...), unless the
  import is guarded (`try: ... except ImportError:` with a fallback that Humble has).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SCANNED = (REPO_ROOT / "mllm3d_ros", REPO_ROOT / "launch")

MISSING_IN_HUMBLE = frozenset({
    "rclpy.clock_type", "rclpy.event_handler", "rclpy.logging_service", "rclpy.parameter_client",
    "rclpy.parameter_event_handler", "rclpy.service_introspection", "rclpy.type_description_service",
    "rclpy.type_hash", "rclpy.destroyable"})
NOT_CONTEXT_MANAGERS = frozenset({"Node", "LifecycleNode", "create_node", "Executor", "SingleThreadedExecutor",
                                  "MultiThreadedExecutor", "EventsExecutor"})
JAZZY_KEYWORDS = {"create_timer": "autostart", "call": "timeout_sec"}


def _callee(node: ast.AST) -> str:
    """'rclpy.init' for rclpy.init(...), 'Node' for Node(...), 'create_timer' for self.create_timer(...)."""
    func = node.func if isinstance(node, ast.Call) else node
    if isinstance(func, ast.Attribute):
        base = func.value.id if isinstance(func.value, ast.Name) else ""
        return f"{base}.{func.attr}" if base == "rclpy" else func.attr
    return func.id if isinstance(func, ast.Name) else ""


def kilted_only_uses(source: str, filename: str = "<string>") -> list[str]:
    """Every use in `source` of an rclpy API that Humble lacks, as 'file:line: what'."""
    tree = ast.parse(source, filename)
    init_names = {"rclpy.init"}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "rclpy":
            init_names |= {a.asname or a.name for a in node.names if a.name == "init"}
    guarded = {id(stmt) for t in ast.walk(tree) if isinstance(t, ast.Try)
               and any(_catches_import_error(h) for h in t.handlers) for stmt in t.body}
    for node in ast.walk(tree):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) in guarded:
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if isinstance(node, ast.ImportFrom) and node.module == "rclpy":
                modules += [f"rclpy.{a.name}" for a in node.names]
            found += [f"{where}: import of {m} (not in Humble's rclpy)" for m in modules if m in MISSING_IN_HUMBLE]
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                name = _callee(item.context_expr) if isinstance(item.context_expr, ast.Call) else ""
                if name in init_names:
                    found.append(f"{where}: `with rclpy.init()` (init returns None before Kilted)")
                elif name in NOT_CONTEXT_MANAGERS:
                    found.append(f"{where}: `with {name}(...)` (not a context manager in Humble)")
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.NamedExpr)) and isinstance(node.value, ast.Call):
            if _callee(node.value) in init_names:
                found.append(f"{where}: the value of rclpy.init() is used (None before Kilted)")
        elif isinstance(node, ast.Call):
            keyword = JAZZY_KEYWORDS.get(_callee(node))
            if keyword and any(k.arg == keyword for k in node.keywords):
                found.append(f"{where}: {_callee(node)}({keyword}=...) (not in Humble)")
    return found


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError") for n in names)


def test_a_guarded_import_is_not_flagged():
    guarded = """
try:
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:
    from rclpy.qos_event import SubscriptionEventCallbacks
"""
    assert kilted_only_uses(guarded) == []
    assert kilted_only_uses(guarded.replace("ImportError", "ValueError"))  # not a fallback for a missing module


def test_scanner_finds_each_pattern():
    bad = """
import rclpy
from rclpy import init as ros_init
from rclpy.clock_type import ClockType
import rclpy.event_handler
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
with rclpy.init(args=None):
    pass
with ros_init():
    pass
context = rclpy.init()
with Node("x") as node, MultiThreadedExecutor() as ex:
    node.create_timer(1.0, print, autostart=False)
    client.call(request, timeout_sec=1.0)
"""
    found = kilted_only_uses(bad)
    expected = ["clock_type", "event_handler", "`with rclpy.init()`", "`with rclpy.init()`", "value of rclpy.init",
                "`with Node", "`with MultiThreadedExecutor", "create_timer(autostart", "call(timeout_sec"]
    assert len(found) == len(expected), found
    for text in expected:
        assert any(text in f for f in found), (text, found)


def test_humble_patterns_pass_the_scanner():
    good = """
import rclpy
from rclpy.executors import MultiThreadedExecutor
rclpy.init(args=None)
try:
    executor = MultiThreadedExecutor()
    node.create_timer(1.0, print)
    client.call(request)
finally:
    rclpy.try_shutdown()
"""
    assert kilted_only_uses(good) == []


def test_package_uses_only_humble_apis():
    files = [f for root in SCANNED for f in sorted(root.rglob("*.py"))]
    assert len(files) > 20
    found = [hit for f in files for hit in kilted_only_uses(f.read_text(), str(f.relative_to(REPO_ROOT)))]
    assert found == [], "\n".join(found)


def test_sources_parse_with_the_python_of_humble():
    # Humble runs Python 3.10 (Ubuntu 22.04): no 3.11+ syntax such as `except*`.
    for path in (f for root in SCANNED for f in sorted(root.rglob("*.py"))):
        ast.parse(path.read_text(), str(path), feature_version=(3, 10))
