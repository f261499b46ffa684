"""Output folders: where salplug may write, and writing them whole or not at all.

A folder salplug writes holds the :data:`MARKER` file; only such folders are ever replaced.
:func:`check_destination` says, before any model work, whether a folder may be written;
:class:`Staging` writes into a hidden folder next to it and moves it into place at the end.
Shared by ``salplug run`` (runner) and ``salplug evaluate`` (evaluate).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from .config import ConfigError
from .errors import SalplugError

__all__ = ["MARKER", "Staging", "check_destination"]

#: File that marks a folder as salplug output (only such folders are replaced by a new run).
MARKER = ".salplug-output"
MARKER_TEXT = "salplug output; replaced by the next run into this folder\n"


def check_destination(folder: str | Path, *, overwrite: bool = True, where: str = "outputs.folder",
                      overwrite_key: str = "outputs.overwrite", error: type[SalplugError] = ConfigError) -> Path:
    """``folder`` made absolute, once it is sure salplug may write it (:class:`Staging` does).

    It may be missing (its parents are created), empty, or a folder salplug wrote (when
    ``overwrite``); never a file or somebody else's folder; its parent must be writable.
    """
    final = Path(folder).absolute()
    if final.exists():
        if not final.is_dir():
            raise error(f"{where}: {str(final)!r} is a file; choose a folder name.")
        if any(final.iterdir()):
            if not (final / MARKER).exists():
                raise error(f"{where}: {str(final)!r} exists and was not written by salplug; choose "
                            f"another folder (salplug only replaces its own output folders).")
            if not overwrite:
                raise error(f"{where}: {str(final)!r} exists and {overwrite_key} is false; choose "
                            f"another folder or set {overwrite_key} = true.")
    parent = final.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise error(f"{where}: {str(final)!r} cannot be created: {str(parent)!r} is a file, not a folder; "
                    f"choose another folder.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise error(f"{where}: {str(final)!r} cannot be written: no permission to write in {str(parent)!r}; "
                    f"choose another folder.")
    return final


class Staging:
    """A hidden temporary folder next to ``final``, holding the marker, moved into place by :meth:`commit`.

    ``claim_parent``: also mark ``final``'s parent as salplug output when this created it or it
    was empty (``salplug evaluate`` writing inside the run's folder).
    """

    def __init__(self, final: Path, where: str = "outputs.folder", claim_parent: bool = False,
                 error: type[SalplugError] = ConfigError):
        self.final = final
        self.created: list[Path] = []
        parent = final.parent
        missing = []
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        try:
            self.claim = claim_parent and (bool(missing) or not any(final.parent.iterdir()))
            for folder in reversed(missing):
                folder.mkdir()
                self.created.append(folder)
            self.path = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
            (self.path / MARKER).write_text(MARKER_TEXT, encoding="utf-8")
        except OSError as exc:
            self.discard()
            raise error(f"{where}: cannot write {str(final)!r}: {exc}; choose another folder.") from None

    def commit(self) -> None:
        old = None
        if self.final.exists():
            old = self.final.with_name(f".{self.final.name}.old-{os.getpid()}-{time.monotonic_ns()}")
            self.final.rename(old)
        self.path.rename(self.final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        if self.claim and not (self.final.parent / MARKER).exists():
            (self.final.parent / MARKER).write_text(MARKER_TEXT, encoding="utf-8")

    def discard(self) -> None:
        if hasattr(self, "path"):
            shutil.rmtree(self.path, ignore_errors=True)
        for folder in reversed(self.created):
            try:
                folder.rmdir()
            except OSError:
                break
