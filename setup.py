"""Optional mypyc build of the clustering hot path (everything else is in pyproject.toml).

By default this builds a pure-Python package. With ``NEWSFLOW_MYPYC=1`` it compiles
``COMPILED`` with mypyc (needs mypy, gcc and the Python headers, and setuptools >= 77;
build without isolation so the venv's mypy is used), for wheels and ``pip install
--target`` only: ``make compiled`` puts such a build in build/mypyc for ``make bench`` and
the compiled-vs-pure test. Editable and in-place builds are refused, because an extension
module next to its ``.py`` would be imported instead of it, and silently go stale when the
``.py`` is edited.
"""

from __future__ import annotations

import os

from setuptools import setup
from setuptools.command.build_ext import build_ext

COMPILED = ["processors/features.py", "processors/dedup.py", "processors/clustering.py"]


class _WheelOnlyBuildExt(build_ext):
    def run(self) -> None:
        if self.inplace or getattr(self, "editable_mode", False):
            raise SystemExit("NEWSFLOW_MYPYC=1 builds wheels only (an in-place extension module "
                             "would shadow the edited .py); use `make compiled`")
        super().run()


def _ext_modules() -> list:  # type: ignore[type-arg]
    if os.environ.get("NEWSFLOW_MYPYC") != "1":
        return []
    from mypyc.build import mypycify  # only needed (and installed) for compiled builds

    return mypycify(COMPILED, opt_level="3")


setup(ext_modules=_ext_modules(), cmdclass={"build_ext": _WheelOnlyBuildExt})
