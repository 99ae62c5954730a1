"""Atomic file writes and clean-up of abandoned temporary files. Spec: IO-2, IO-14."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, BinaryIO, Callable, Iterable

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_json", "fsync_dir", "remove_stale_temps",
           "TEMP_SUFFIX"]

_NEW_FILE_MODE = 0o644
TEMP_SUFFIX = ".tmp"   # temporary files are named ".<final name>.<writer pid>.<random>.tmp"


def atomic_write(path: str | os.PathLike, writer: Callable[[BinaryIO], Any]) -> None:
    """Write a file all-or-nothing. Spec: IO-2.

    `writer(fp)` fills a temporary file in the same directory; it is flushed, fsynced and renamed
    over `path` with os.replace. If anything raises, the temporary file is removed and `path` is
    left as it was. The new file keeps the mode of the file it replaces (else 0o644). Temporary
    files of this name that a killed writer left behind are removed first (IO-14)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    remove_stale_temps(directory, (os.path.basename(path),))
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mode = _NEW_FILE_MODE
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.{os.getpid()}.",
                               suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as fp:
            writer(fp)
            fp.flush()
            os.fsync(fp.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(directory)


def fsync_dir(directory: str) -> None:
    """Make a rename or unlink durable (POSIX); platforms that can't open directories skip this."""
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """`atomic_write` of a bytes object. Spec: IO-2."""
    atomic_write(path, lambda fp: fp.write(data))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON as adapters does (`json.dump(obj, f, indent=2, sort_keys=True)`), atomically.

    Spec: IO-2. Serialisation happens before the file is opened, so a TypeError leaves no trace."""
    text = json.dumps(obj, indent=2, sort_keys=True)
    atomic_write_bytes(path, text.encode("utf-8"))


def _writer_alive(pid_text: str) -> bool:
    if not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return True     # this process: its own writes clean up after themselves
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True     # someone else's live process (or a number we can't check): leave it
    return True


def remove_stale_temps(directory: str | os.PathLike, final_names: Iterable[str]) -> list[str]:
    """Delete temporary files that an interrupted `atomic_write` of one of `final_names` left behind.

    Spec: IO-14. Only ".<final name>.<pid>.<random>.tmp" files whose writer process is gone are
    touched, so a concurrent writer's temp file is never removed under it. Returns the names."""
    directory = os.fspath(directory)
    prefixes = tuple(f".{n}." for n in final_names)
    removed = []
    try:
        entries = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        if not (entry.startswith(prefixes) and entry.endswith(TEMP_SUFFIX)):
            continue
        prefix = next(p for p in prefixes if entry.startswith(p))
        pid_text = entry[len(prefix):].split(".", 1)[0]
        if _writer_alive(pid_text):
            continue
        try:
            os.unlink(os.path.join(directory, entry))
            removed.append(entry)
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            pass
    return removed
