"""ROS 2 adapters: thin rclpy nodes around the ROS-free core (policy node, simulated robot)."""
