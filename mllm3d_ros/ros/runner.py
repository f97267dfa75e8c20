"""Process entry helper: init, a multi-threaded executor over one or more nodes, clean shutdown."""

from __future__ import annotations

import sys
from typing import Callable, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node

from ..core.config import ConfigError
from .params import ParameterError


def run_nodes(factories: Sequence[Callable[[], Node]], args: Sequence[str] | None = None, num_threads: int = 4) -> int:
    """Create the nodes (in order) and spin them until shutdown. Bad parameters exit with status 2."""
    args = list(sys.argv if args is None else args)
    nodes: list[Node] = []
    code = 0
    try:
        with rclpy.init(args=args):
            try:
                for factory in factories:
                    nodes.append(factory())
                executor = MultiThreadedExecutor(num_threads=num_threads)
                for node in nodes:
                    executor.add_node(node)
                executor.spin()
            except (ParameterError, ConfigError) as exc:
                print(f"[mllm3d_ros] refusing to start: {exc}", file=sys.stderr, flush=True)
                code = 2
            finally:
                for node in reversed(nodes):
                    shutdown = getattr(node, "shutdown_core", None)
                    if shutdown is not None:
                        shutdown()
                    node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    return code
