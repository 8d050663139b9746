"""Shared pytest configuration."""

import importlib.util

# test/launch/ holds launch_testing files for machines with a ROS 2 install; the launch packages are
# not installable from PyPI, so they are not collected where `launch_testing` is missing.
collect_ignore_glob = [] if importlib.util.find_spec("launch_testing") else ["launch/*.py"]
