"""The policy node's ROS-free core: state assembly, action decoding, safety, modes, chunk scheduling.

Nothing here imports rclpy; :mod:`pi0_ros.nodes.policy_node` is a thin adapter that feeds messages
into :class:`~pi0_ros.control.controller.ControlCore` and publishes what its ``tick`` returns.
"""
