"""Command-line tools (console scripts) of pi0_ros."""
