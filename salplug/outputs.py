"""Output folders: where salplug may write, and writing them whole or not at all.

A folder salplug writes holds the :data:`MARKER` file; only such folders are ever replaced.
:func:`check_destination` says, before any model work, whether a folder may be written;
:class:`Staging` writes into a hidden folder next to it and moves it into place at the end.
Shared by ``salplug run`` (runner) and ``salplug evaluate`` (evaluate).
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import time
import warnings
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
    ``overwrite``); never a file, somebody else's folder, the working folder or one holding it,
    or a loop of symbolic links; its parent must be writable.
    """
    try:
        here: Path | None = Path(os.path.realpath(os.getcwd()))
    except FileNotFoundError:  # deleted under the shell
        here = None
        if not Path(folder).is_absolute():
            raise error(f"{where}: the working folder no longer exists, so {str(folder)!r} cannot be placed; "
                        f"change to an existing folder (cd) and try again.") from None
    final = Path(folder).absolute()
    try:
        os.stat(final)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise error(f"{where}: {str(final)!r} goes through a loop of symbolic links ({exc.strerror}); "
                        f"fix or remove the link, or choose another folder.") from None
    real = _real(final)
    if here is not None and (real == here or real in here.parents):
        raise error(f"{where}: {str(final)!r} is the working folder or holds it; salplug replaces its output "
                    f"folder whole, which would delete the folder you are working in. Choose a folder inside "
                    f"it (e.g. 'salplug-out') or elsewhere.")
    # checked where the folder really is (what gets replaced): links followed, and '..' after a
    # missing folder resolved as the OS will ('new/../mine' is 'mine')
    if real.exists():
        if not real.is_dir():
            raise error(f"{where}: {str(final)!r} is a file; choose a folder name.")
        if any(real.iterdir()):
            if not (real / MARKER).exists():
                raise error(f"{where}: {str(final)!r} exists and was not written by salplug; choose "
                            f"another folder (salplug only replaces its own output folders).")
            if not overwrite:
                raise error(f"{where}: {str(final)!r} exists and {overwrite_key} is false; choose "
                            f"another folder or set {overwrite_key} = true.")
    parent = real.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise error(f"{where}: {str(final)!r} cannot be created: {str(parent)!r} is a file, not a folder; "
                    f"choose another folder.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise error(f"{where}: {str(final)!r} cannot be written: no permission to write in {str(parent)!r}; "
                    f"choose another folder.")
    return final


def _real(folder: Path) -> Path:
    """Where ``folder`` lives, every symbolic link on its path followed, dangling ones included
    (a link is written through and kept; a missing target is created)."""
    return Path(os.path.realpath(folder))


def _new_folder(parent: Path, prefix: str) -> Path:
    """A fresh folder ``parent/<prefix><random>``, made with ``mkdir`` so it gets the usual
    permissions (the umask), not ``tempfile.mkdtemp``'s 0700."""
    for _ in range(100):
        path = parent / f"{prefix}{os.getpid()}-{secrets.token_hex(4)}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no free name for a staging folder in {str(parent)!r}")


class Staging:
    """A hidden temporary folder next to ``final``, holding the marker, moved into place by :meth:`commit`.

    ``final`` may be (or lie under) a symbolic link, dangling or not: the folder it points to is
    written (created if missing) and the link stays. ``claim_parent``: also mark the folder
    holding ``final`` as salplug output when this created it or it was empty (``salplug
    evaluate`` writing inside the run's folder).
    """

    def __init__(self, final: Path, where: str = "outputs.folder", claim_parent: bool = False,
                 error: type[SalplugError] = ConfigError):
        self.final = final
        self.target = _real(final)
        self.owner = _real(final.parent)  # the folder holding ``final`` (not a link target's parent)
        self.created: list[Path] = []
        parent = self.target.parent
        missing = []
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        try:
            self.claim = claim_parent and (not self.owner.exists() or not any(self.owner.iterdir()))
            for folder in reversed(missing):
                folder.mkdir()
                self.created.append(folder)
            self.path = _new_folder(self.target.parent, f".{self.target.name}.tmp-")
            (self.path / MARKER).write_text(MARKER_TEXT, encoding="utf-8")
        except OSError as exc:
            self.discard()
            raise error(f"{where}: cannot write {str(final)!r}: {exc}; choose another folder.") from None

    def commit(self) -> None:
        old = None
        if self.target.exists():
            old = self.target.with_name(f".{self.target.name}.old-{os.getpid()}-{time.monotonic_ns()}")
            self.target.rename(old)
        self.path.rename(self.target)
        if old is not None:
            _remove(old)
        if self.claim and self.owner.is_dir() and not (self.owner / MARKER).exists():
            (self.owner / MARKER).write_text(MARKER_TEXT, encoding="utf-8")

    def discard(self) -> None:
        if hasattr(self, "path"):
            _remove(self.path)
        for folder in reversed(self.created):
            try:
                folder.rmdir()
            except OSError:
                break


def _remove(path: Path) -> None:
    """Delete a folder salplug replaced (a link: the link only); a failure is a warning, not silence."""
    try:
        if path.is_symlink() or not path.is_dir():
            path.unlink()
        else:
            shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        warnings.warn(f"salplug could not delete {str(path)!r} ({exc}); delete it by hand.", stacklevel=3)
