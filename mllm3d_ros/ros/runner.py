"""Process entry helper: init, a multi-threaded executor over one or more nodes, clean shutdown.

Humble and Jazzy: `rclpy.init()` returns None before Kilted, so the context is managed with
try/finally and `rclpy.try_shutdown()` rather than `with rclpy.init()`.

Faults at start-up end with one line and exit code 2 (a refused parameter, a parameters file that does
not parse), never a traceback. SIGINT and SIGTERM are seen by Python handlers that rclpy's own handler
chains to (it shuts the context down, which ends the spin): a signal that arrives while the nodes are
still being built (the launcher stopping the others after one refused its parameters) ends the process
quietly too. Log records of the ROS-free core (Python `logging` under `mllm3d_ros`) go to the ROS logger.
"""

from __future__ import annotations

import logging
import signal
import sys
from typing import Callable, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node

from ..core.config import ConfigError
from .params import ParameterError, check_overrides

BAD_PARAMETERS = 2


class _RosLogHandler(logging.Handler):
    """Python log records -> the ROS logger `mllm3d_ros` (rclpy refuses two severities from one call site,
    hence one line per severity)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self._logger = rclpy.logging.get_logger("mllm3d_ros")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"{record.name.rsplit('.', 1)[-1]}: {record.getMessage()}"
            if record.exc_info and record.exc_info[1] is not None:
                text += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
            level, log = record.levelno, self._logger
            if level >= logging.ERROR:
                log.error(text)
            elif level >= logging.WARNING:
                log.warning(text)
            elif level >= logging.INFO:
                log.info(text)
            else:
                log.debug(text)
        except Exception:  # noqa: BLE001 -- logging must never take a node down
            self.handleError(record)


def bridge_python_logging() -> None:
    """Send the package's Python log records (core, sources, backends) to the ROS logger (idempotent)."""
    logger = logging.getLogger("mllm3d_ros")
    if not any(isinstance(h, _RosLogHandler) for h in logger.handlers):
        logger.addHandler(_RosLogHandler())
        logger.setLevel(logging.INFO)
        logger.propagate = False  # else the root logger prints it a second time, unformatted


def run_nodes(factories: Sequence[Callable[[], Node]], args: Sequence[str] | None = None, num_threads: int = 4,
              signal_exit_codes: bool = False) -> int:
    """Create the nodes (in order) and spin them until shutdown. Bad parameters exit with status 2.

    A stop by SIGINT / SIGTERM returns 0, or 128 + the signal number with `signal_exit_codes` (the CLI).
    """
    args = list(sys.argv if args is None else args)
    nodes: list[Node] = []
    executor: MultiThreadedExecutor | None = None
    code = 0
    stopped_by: list[int] = []
    # rcl would log "Failed to parse global arguments" and raise "Couldn't parse params file": say why, once.
    problem = _params_file_problem(args)
    if problem:
        print(f"[mllm3d_ros] refusing to start: {problem}", file=sys.stderr, flush=True)
        return BAD_PARAMETERS
    previous = {s: signal.signal(s, lambda signum, _frame: stopped_by.append(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        rclpy.init(args=args)
    except Exception as exc:  # noqa: BLE001 -- rcl's RCLError: bad --ros-args
        print(f"[mllm3d_ros] refusing to start: cannot start ROS: {' '.join(str(exc).split())}", file=sys.stderr,
              flush=True)
        _restore(previous)
        return BAD_PARAMETERS
    bridge_python_logging()
    try:
        for factory in factories:
            nodes.append(factory())
        # `-p name:=value` reaches every node of the process, so a name is unknown only if no node
        # here declares it.
        check_overrides(nodes)
        if stopped_by or not rclpy.ok():  # stopped while building: no executor on a dead context
            return 128 + stopped_by[0] if stopped_by and signal_exit_codes else 0
        executor = MultiThreadedExecutor(num_threads=num_threads)
        for node in nodes:
            executor.add_node(node)
        executor.spin()
    except (ParameterError, ConfigError) as exc:
        print(f"[mllm3d_ros] refusing to start: {exc}", file=sys.stderr, flush=True)
        code = BAD_PARAMETERS
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        # Stopped while the nodes were being built: rclpy's handler shut the context down under them, and
        # whatever rcl call came next failed. Quiet: the process was asked to stop.
        if not stopped_by and rclpy.ok():
            raise
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
        _restore(previous)
    if code:
        return code
    if stopped_by and signal_exit_codes:
        return 128 + stopped_by[0]
    # A node that ends the process itself (replay with nothing readable) says how it ended.
    return max((int(getattr(node, "exit_code", 0)) for node in nodes), default=0)


def _restore(previous: dict) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def _params_file_problem(args: Sequence[str]) -> str | None:
    """The first `--params-file` of `args` that is not a usable parameters file, as one line."""
    from ..launch_spec import check_params_file
    for i, arg in enumerate(args[:-1]):
        if arg == "--params-file":
            problem = check_params_file(args[i + 1])
            if problem:
                return problem
    return None
