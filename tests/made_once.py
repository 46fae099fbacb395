"""Runs a test module makes once and each of its tests starts from as if it had made them itself."""
from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Callable


class MadeOnce:
    """``make(work)`` run once in a module's folder ``work``, and an untouched copy of that folder.
    :meth:`restored` puts ``work`` back from the copy, at the same paths (export states record their
    outputs and folders by absolute path), and gives a deep copy of what ``make`` returned (reports, a
    simulated platform): a test may rerun, export again or damage it all, as after a run of its own."""

    def __init__(self, tmp_path_factory, name: str, make: Callable[[Path], object]):
        base = tmp_path_factory.mktemp(name)
        self.work, self._pristine = base / "work", base / "pristine"
        self._made = make(self.work)
        shutil.copytree(self.work, self._pristine)

    def restored(self):
        shutil.rmtree(self.work)
        shutil.copytree(self._pristine, self.work)
        return copy.deepcopy(self._made)


def made_once_fixture(name: str, make: Callable[[Path], object]):
    """A module-scoped fixture giving ``MadeOnce(tmp_path_factory, name, make)``: ``make`` run once for the
    module (``made_x = made_once_fixture("x", x)``; a test takes ``made_x`` and calls its ``restored()``)."""
    import pytest

    def made(tmp_path_factory) -> MadeOnce:
        return MadeOnce(tmp_path_factory, name, make)

    made.__doc__ = f"{getattr(make, '__name__', name)} run once for the module ({name})."
    return pytest.fixture(scope="module")(made)
