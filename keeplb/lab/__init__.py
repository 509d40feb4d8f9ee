"""Network-namespace lab: used by ``keeplb demo``, the netns tests and bench/."""

from keeplb.lab.netns import Host, Lab, LabError, cleanup_stale, list_labs

__all__ = ["Host", "Lab", "LabError", "cleanup_stale", "list_labs"]
