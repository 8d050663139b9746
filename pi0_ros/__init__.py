"""pi0_ros: pi0 and pi0-FAST vision-language-action policies on an R1 Pro-style dual-arm robot."""

__version__ = "0.1.0"
