"""What may run concurrently on one model, and the lock that makes it so. Spec: IO-18 (spec/io.md).

Forward passes (and saves, which only read) share the model; every change of the adapter set --
add/delete/load/average/merge/share -- is exclusive. A forward therefore sees the adapter set
either before or after a change, never half of one: an adapter loaded from a file becomes visible
only once its weights are in place. Forwards under different `AdapterSetup`s need nothing extra
(the setup is a thread-local read once per forward).

Writers are preferred (a waiting change blocks new forwards, so a stream of forwards cannot starve
it), both sides are re-entrant per thread (load_adapter calls add_adapter; generate calls
forward), and a thread inside a change may run forwards itself.
"""
from __future__ import annotations

import functools
import threading
from contextlib import contextmanager

__all__ = ["AdapterSetLock", "mutates", "reads"]


class AdapterSetLock:
    """Shared readers, exclusive re-entrant writer, writer preference."""

    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = None          # thread ident of the writer
        self._writer_depth = 0
        self._waiting_writers = 0
        self._local = threading.local()

    @contextmanager
    def reading(self):
        me = threading.get_ident()
        depth = getattr(self._local, "read_depth", 0)
        if depth or self._writer == me:        # nested, or inside our own change: already safe
            self._local.read_depth = depth + 1
            try:
                yield
            finally:
                self._local.read_depth = depth
            return
        with self._cond:
            while self._writer is not None or self._waiting_writers:
                self._cond.wait()
            self._readers += 1
        self._local.read_depth = 1
        try:
            yield
        finally:
            self._local.read_depth = 0
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def writing(self):
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:
                self._writer_depth += 1
            else:
                if getattr(self._local, "read_depth", 0):
                    raise RuntimeError("an adapter change was started from inside a forward pass on the same "
                                       "model; it would wait for itself")
                self._waiting_writers += 1
                try:
                    while self._writer is not None or self._readers:
                        self._cond.wait()
                finally:
                    self._waiting_writers -= 1
                self._writer, self._writer_depth = me, 1
        try:
            yield
        finally:
            with self._cond:
                self._writer_depth -= 1
                if not self._writer_depth:
                    self._writer = None
                    self._cond.notify_all()


_CREATE = threading.Lock()


def _lock_of(obj) -> AdapterSetLock:
    lock = obj.__dict__.get("_adapter_set_lock")
    if lock is None:
        with _CREATE:
            lock = obj.__dict__.setdefault("_adapter_set_lock", AdapterSetLock())
    return lock


def mutates(method):
    """Decorator: the method changes the adapter set; it runs alone on its model."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with _lock_of(self).writing():
            return method(self, *args, **kwargs)
    return wrapper


def reads(method):
    """Decorator: the method reads the adapter set (forward, save); any number run together."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with _lock_of(self).reading():
            return method(self, *args, **kwargs)
    return wrapper
