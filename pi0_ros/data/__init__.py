"""Demonstration data: LeRobot v3.0 datasets (writer, reader, statistics), the ROS-free frame assembly
shared by the recorder node and the rosbag2 import, and the import itself."""
