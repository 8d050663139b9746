"""Off-board inference: an openpi-protocol websocket server and a remote ``Policy`` client.

Modules: ``msgpack_numpy`` (safe openpi-compatible codec), ``validation`` (checks on decoded
observations and results), ``server`` (``pi0-serve``), ``remote_policy`` (the robot-side
backend), ``loader`` (lazy policy factories), ``echo_policy`` (a model-free policy for tests
and benchmarks). Nothing here imports ROS.
"""
