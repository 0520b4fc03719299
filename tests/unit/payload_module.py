"""A module outside any deny list whose function a malicious test checkpoint calls on load."""

from pathlib import Path


def make_marker(path: str) -> None:
    Path(path).write_text("ran")
