"""The shared `main()` body of the package's plain nodes: init, spin, clean shutdown on Ctrl-C."""

from __future__ import annotations

from typing import Callable, List, Optional

import rclpy
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node


def spin_node(make_node: Callable[[], Node], args: Optional[List[str]] = None,
              executor_factory: Callable[[], Executor] = SingleThreadedExecutor) -> None:
    """Create the node, spin it until interrupted, then call its `shutdown()` (if any) and clean up.

    The executor is made after `rclpy.init` (it needs an initialized context), hence a factory.
    """
    rclpy.init(args=args)
    executor = executor_factory()
    node = None
    try:
        node = make_node()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            shutdown = getattr(node, "shutdown", None)
            if shutdown is not None:
                shutdown()
            node.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown()
