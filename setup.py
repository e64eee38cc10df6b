"""Build hook: the top-level ``ui/`` pages ship inside the wheel as ``webrtc/ui/``.

Everything else is declared in setup.cfg. ``ui/`` stays at the top of the tree (the project's
layout: pages are not Python), so it is no package of its own and setuptools' package data cannot
name it; this hook copies it beside `webrtc.app`, which serves it and looks there first (see
`webrtc.app.UI_DIR`). An editable install gets no copy: it serves the tree's ``ui/`` directly.
MANIFEST.in carries ``ui/`` into the sdist, from which ``python -m build`` makes the wheel.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithPages(build_py):
    """`build_py`, then ``ui/`` copied afresh to ``<build_lib>/webrtc/ui`` (no stale page kept)."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "webrtc" / "ui"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree("ui", target, ignore=shutil.ignore_patterns(".*", "*~"))


setup(cmdclass={"build_py": BuildPyWithPages})
