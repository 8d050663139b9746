"""Shared pytest configuration."""

import importlib.util

import pytest

# test/launch/ holds launch_testing files for machines with a ROS 2 install; the launch packages are
# not installable from PyPI, so they are not collected where `launch_testing` is missing.
collect_ignore_glob = [] if importlib.util.find_spec("launch_testing") else ["launch/*.py"]


@pytest.fixture
def one_torch_thread():
    """Torch on one thread for the test: tiny matmuls on a shared 2-core machine run many times faster on
    one thread, and CPU results are bitwise reproducible (resume comparisons)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
