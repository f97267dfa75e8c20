"""Process entry helper: init, a multi-threaded executor over one or more nodes, clean shutdown.

Humble and Jazzy: `rclpy.init()` returns None before Kilted, so the context is managed with
try/finally and `rclpy.try_shutdown()` rather than `with rclpy.init()`.
"""

from __future__ import annotations

import sys
from typing import Callable, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node

from ..core.config import ConfigError
from .params import ParameterError, check_overrides


def run_nodes(factories: Sequence[Callable[[], Node]], args: Sequence[str] | None = None, num_threads: int = 4) -> int:
    """Create the nodes (in order) and spin them until shutdown. Bad parameters exit with status 2."""
    args = list(sys.argv if args is None else args)
    nodes: list[Node] = []
    executor: MultiThreadedExecutor | None = None
    code = 0
    rclpy.init(args=args)
    try:
        for factory in factories:
            nodes.append(factory())
        # `-p name:=value` reaches every node of the process, so a name is unknown only if no node
        # here declares it.
        check_overrides(nodes)
        executor = MultiThreadedExecutor(num_threads=num_threads)
        for node in nodes:
            executor.add_node(node)
        executor.spin()
    except (ParameterError, ConfigError) as exc:
        print(f"[mllm3d_ros] refusing to start: {exc}", file=sys.stderr, flush=True)
        code = 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # Executor first (its threads stop touching the nodes), then the nodes, then the context.
        if executor is not None:
            executor.shutdown()
        for node in reversed(nodes):
            shutdown = getattr(node, "shutdown_core", None)
            if shutdown is not None:
                shutdown()
            node.destroy_node()
        rclpy.try_shutdown()
    # A node that ends the process itself (replay with nothing readable) says how it ended.
    return code or max((int(getattr(node, "exit_code", 0)) for node in nodes), default=0)
