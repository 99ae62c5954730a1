"""A pickle reader that can only build plain data and call an allowlist. Spec: IO-1, IO-15.

Written for torch checkpoints (`torch_pickle.py` supplies the allowlist), with no `pickle`
machinery behind it: every opcode is ours, so every limit is checked before the thing it limits
is built, and no untrusted object is ever hashed (dict keys must be str or int), compared or
`repr()`ed in full.
"""

from __future__ import annotations

import pickle
import struct
from typing import Any, Callable, Mapping

from ..errors import UnsafePickleError, WeightsError

__all__ = ["Unpickler", "PICKLE_LIMITS", "brief"]

# Limits (spec IO-15). torch's own files stay far inside every one of them.
PICKLE_LIMITS = {
    "depth": 32,             # container nesting (state dict -> tensor args -> size tuple is 3)
    "memo": 1 << 20,         # memo entries
    "marks": 64,             # open MARKs
    "tuple": 64,             # items in one tuple (REDUCE args, size/stride: tensor rank <= 62)
    "items": 1 << 22,        # entries in one list or dict
    "int_bytes": 16,         # LONG1 payload (the legacy magic needs 10)
    "global_name": 256,      # bytes of a GLOBAL module / name line
}
LIMITS = PICKLE_LIMITS


def brief(x) -> str:
    """A short description of an untrusted value for messages: never a full repr.

    Classes that set `__brief__ = True` (inert markers) are shown by their own repr."""
    if isinstance(x, (bool, type(None))):
        return repr(x)
    if isinstance(x, int):
        return str(x) if abs(x) < 10 ** 30 else f"an int of {x.bit_length()} bits"
    if isinstance(x, float):
        return repr(x)
    if isinstance(x, str):
        return repr(x[:60]) + ("..." if len(x) > 60 else "")
    if isinstance(x, (tuple, list, dict)):
        return f"a {type(x).__name__} of {len(x)} items"
    if getattr(type(x), "__brief__", False):
        return repr(x)
    return f"a {type(x).__name__}"


_OP_NAMES = {}
for _name in dir(pickle):
    _val = getattr(pickle, _name)
    if _name.isupper() and isinstance(_val, bytes) and len(_val) == 1:
        _OP_NAMES.setdefault(_val[0], _name)
del _name, _val
_CONTAINERS = (tuple, list, dict)


class Unpickler:
    """A pickle reader that can only rebuild tensors. Spec: IO-1, IO-15.

    Opcodes: the protocol 0-5 subset torch (and pickle protocol 2-5 for plain data) uses to write
    a state dict. Everything else -- BUILD (except torch's `_metadata` on the state dict), INST,
    OBJ, NEWOBJ(_EX), EXT*, PERSID text, bytes/bytearray/buffers, sets, frozensets -- raises
    UnsafePickleError naming the opcode. Containers are only mutated by the opcode meant for their
    type and never after they were placed inside another container, so the nesting depth recorded
    when a container is built is final and can be bounded."""

    def __init__(self, data: bytes, pos: int, *, source: str, persistent_load: Callable,
                 find_class: Callable[[str, str, str], Any], callables: Mapping[Callable, tuple[int, int]],
                 allow_build: Callable[[Any, Any], bool]):
        self.data, self.pos, self.source = data, pos, source
        self.persistent_load, self.find_class, self.allow_build = persistent_load, find_class, allow_build
        self.arity = {id(f): (f, lo_hi) for f, lo_hi in callables.items()}   # by identity: never hash input
        self.stack: list = []
        self.marks: list[int] = []
        self.memo: dict[int, Any] = {}
        self.depth: dict[int, int] = {}     # id(container) -> nesting depth
        self.frozen: set[int] = set()       # ids of containers placed inside another
        self.alive: list = []               # keeps ids in `depth` unique for the whole load

    # ---- bytes ---------------------------------------------------------------------------------
    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise WeightsError(f"{self.source}: pickle ends inside an opcode at byte {self.pos}. "
                               "Is the file truncated?")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return bytes(out)

    def _u(self, n: int) -> int:
        return int.from_bytes(self._take(n), "little")

    def _line(self) -> str:
        end = self.data.find(b"\n", self.pos, self.pos + LIMITS["global_name"] + 1)
        if end < 0:
            raise WeightsError(f"{self.source}: GLOBAL name at byte {self.pos} is missing its newline "
                               f"or longer than {LIMITS['global_name']} bytes")
        raw = self._take(end - self.pos)
        self.pos += 1
        return raw.decode("utf-8")

    # ---- helpers -------------------------------------------------------------------------------
    def _bad(self, what: str):
        raise WeightsError(f"{self.source}: {what} (pickle byte {self.pos}); not a torch state dict")

    def _pop(self):
        if len(self.stack) <= (self.marks[-1] if self.marks else 0):
            self._bad("pickle stack underflow")
        return self.stack.pop()

    def _top(self):
        if len(self.stack) <= (self.marks[-1] if self.marks else 0):
            self._bad("pickle stack underflow")
        return self.stack[-1]

    def _pop_mark(self) -> list:
        if not self.marks:
            self._bad("pickle uses a MARK that was never set")
        start = self.marks.pop()
        items = self.stack[start:]
        del self.stack[start:]
        return items

    def _new(self, obj, children=()):
        """Register a new container built from `children`; enforce the depth limit."""
        depth = 1
        for c in children:
            if isinstance(c, _CONTAINERS):
                depth = max(depth, 1 + self.depth.get(id(c), 1))
                self.frozen.add(id(c))
        if depth > LIMITS["depth"]:
            self._bad(f"containers nest deeper than {LIMITS['depth']} levels")
        self.depth[id(obj)] = depth
        self.alive.append(obj)
        return obj

    def _grow(self, target, children) -> None:
        """Depth bookkeeping when `children` are added to the mutable container `target`."""
        if id(target) in self.frozen:
            self._bad("a container is modified after it was placed inside another one")
        depth = self.depth.get(id(target), 1)
        for c in children:
            if isinstance(c, _CONTAINERS):
                if c is target:
                    self._bad("a container is put inside itself")
                depth = max(depth, 1 + self.depth.get(id(c), 1))
                self.frozen.add(id(c))
        if depth > LIMITS["depth"]:
            self._bad(f"containers nest deeper than {LIMITS['depth']} levels")
        self.depth[id(target)] = depth

    def _push(self, obj):
        self.stack.append(obj)

    # ---- main loop -----------------------------------------------------------------------------
    def load(self) -> tuple[Any, int]:
        """Run until STOP; return (object, position after STOP)."""
        while True:
            if self.pos >= len(self.data):
                raise WeightsError(f"{self.source}: pickle has no STOP opcode. Is the file truncated?")
            op = self.data[self.pos]
            self.pos += 1
            handler = _DISPATCH.get(op)
            if handler is None:
                name = _OP_NAMES.get(op)
                if name is None:
                    self._bad(f"byte 0x{op:02x} is not a pickle opcode")
                raise UnsafePickleError(f"{self.source}: pickle opcode {name} is not allowed in a weights "
                                        "file (only tensor rebuilding is)")
            if handler(self) is _STOP:
                if len(self.stack) != 1 or self.marks:
                    self._bad("pickle stops with a malformed stack")
                return self.stack.pop(), self.pos

    # ---- opcodes -------------------------------------------------------------------------------
    def op_proto(self):
        if self._u(1) > 5:
            self._bad("unknown pickle protocol")

    def op_frame(self):
        if self._u(8) > len(self.data) - self.pos:
            self._bad("FRAME longer than the pickle")

    def op_stop(self):
        return _STOP

    def op_mark(self):
        if len(self.marks) >= LIMITS["marks"]:
            self._bad(f"more than {LIMITS['marks']} open MARKs")
        self.marks.append(len(self.stack))

    def op_global(self):
        module, name = self._line(), self._line()
        self._push(self.find_class(self.source, module, name))

    def op_stack_global(self):
        name, module = self._pop(), self._pop()
        if not isinstance(module, str) or not isinstance(name, str):
            self._bad("STACK_GLOBAL needs two strings")
        self._push(self.find_class(self.source, module[:LIMITS["global_name"]], name[:LIMITS["global_name"]]))

    def op_binpersid(self):
        self._push(self.persistent_load(self._pop()))

    def op_reduce(self):
        args = self._pop()
        func = self._pop()
        if id(func) not in self.arity:
            raise UnsafePickleError(f"{self.source}: pickle REDUCE of {brief(func)} is not allowed; "
                                    "only tensor rebuild functions may be called")
        lo, hi = self.arity[id(func)][1]
        if not isinstance(args, tuple) or not lo <= len(args) <= hi:
            self._bad(f"REDUCE of {func.__name__} needs {lo}..{hi} arguments; got {brief(args)}")
        obj = func(*args)
        if isinstance(obj, dict):
            self._new(obj)
        self._push(obj)

    def op_build(self):
        state = self._pop()
        target = self._top()
        if not self.allow_build(target, state):
            raise UnsafePickleError(f"{self.source}: pickle opcode BUILD is only allowed to attach "
                                    "'_metadata' to a state dict")

    def op_tuple(self):
        self._tuple(self._pop_mark())

    def _tuple(self, items):
        if len(items) > LIMITS["tuple"]:
            self._bad(f"a tuple has {len(items)} items; the limit is {LIMITS['tuple']}")
        self._push(self._new(tuple(items), items))

    def op_tuple_n(self, n):
        items = [self._pop() for _ in range(n)][::-1]
        self._tuple(items)

    def op_empty_list(self):
        self._push(self._new([]))

    def op_list(self):
        items = self._pop_mark()
        if len(items) > LIMITS["items"]:
            self._bad("a list is too long")
        self._push(self._new(list(items), items))

    def _extend(self, items):
        target = self._top()
        if type(target) is not list:
            self._bad(f"APPEND(S) onto {brief(target)}; only lists can be appended to")
        if len(target) + len(items) > LIMITS["items"]:
            self._bad(f"a list grows past {LIMITS['items']} items")
        self._grow(target, items)
        target.extend(items)

    def op_append(self):
        self._extend([self._pop()])

    def op_appends(self):
        self._extend(self._pop_mark())

    def op_empty_dict(self):
        self._push(self._new({}))

    def op_dict(self):
        items = self._pop_mark()
        d = self._new({})
        self._push(d)
        self._setitems(items)

    def _setitems(self, items):
        target = self._top()
        if not isinstance(target, dict):
            self._bad(f"SETITEM(S) onto {brief(target)}; only dicts take items")
        if len(items) % 2:
            self._bad("SETITEMS with an odd number of stack items")
        keys = items[0::2]
        for k in keys:
            if type(k) not in (str, int):
                self._bad(f"a dict key is {brief(k)}; only str and int keys are accepted")
        if len(target) + len(keys) > LIMITS["items"]:
            self._bad(f"a dict grows past {LIMITS['items']} items")
        self._grow(target, items[1::2])
        for k, v in zip(keys, items[1::2]):
            target[k] = v

    def op_setitem(self):
        v = self._pop()
        k = self._pop()
        self._setitems([k, v])

    def op_setitems(self):
        self._setitems(self._pop_mark())

    def _put(self, idx):
        if idx not in self.memo and len(self.memo) >= LIMITS["memo"]:
            self._bad(f"more than {LIMITS['memo']} memo entries")
        self.memo[idx] = self._top()

    def _get(self, idx):
        if idx not in self.memo:
            self._bad(f"memo entry {idx} is read before it is written")
        self._push(self.memo[idx])

    def op_int(self, n, signed):
        self._push(int.from_bytes(self._take(n), "little", signed=signed))

    def op_long1(self):
        n = self._u(1)
        if n > LIMITS["int_bytes"]:
            self._bad(f"an integer of {n} bytes; the limit is {LIMITS['int_bytes']}")
        self._push(int.from_bytes(self._take(n), "little", signed=True))

    def op_str(self, n_len, encoding):
        raw = self._take(self._u(n_len))
        try:
            self._push(raw.decode(encoding))
        except UnicodeDecodeError:
            self._bad("a string is not valid UTF-8")

    def op_binfloat(self):
        self._push(struct.unpack(">d", self._take(8))[0])


_STOP = object()
_U = Unpickler
_DISPATCH: dict[int, Callable] = {
    pickle.PROTO[0]: _U.op_proto, pickle.FRAME[0]: _U.op_frame, pickle.STOP[0]: _U.op_stop,
    pickle.MARK[0]: _U.op_mark, pickle.GLOBAL[0]: _U.op_global, pickle.STACK_GLOBAL[0]: _U.op_stack_global,
    pickle.BINPERSID[0]: _U.op_binpersid, pickle.REDUCE[0]: _U.op_reduce, pickle.BUILD[0]: _U.op_build,
    pickle.EMPTY_TUPLE[0]: lambda u: u._tuple([]), pickle.TUPLE[0]: _U.op_tuple,
    pickle.TUPLE1[0]: lambda u: u.op_tuple_n(1), pickle.TUPLE2[0]: lambda u: u.op_tuple_n(2),
    pickle.TUPLE3[0]: lambda u: u.op_tuple_n(3),
    pickle.EMPTY_LIST[0]: _U.op_empty_list, pickle.LIST[0]: _U.op_list, pickle.APPEND[0]: _U.op_append,
    pickle.APPENDS[0]: _U.op_appends, pickle.EMPTY_DICT[0]: _U.op_empty_dict, pickle.DICT[0]: _U.op_dict,
    pickle.SETITEM[0]: _U.op_setitem, pickle.SETITEMS[0]: _U.op_setitems,
    pickle.BINPUT[0]: lambda u: u._put(u._u(1)), pickle.LONG_BINPUT[0]: lambda u: u._put(u._u(4)),
    pickle.MEMOIZE[0]: lambda u: u._put(len(u.memo)),
    pickle.BINGET[0]: lambda u: u._get(u._u(1)), pickle.LONG_BINGET[0]: lambda u: u._get(u._u(4)),
    pickle.BININT[0]: lambda u: u.op_int(4, True), pickle.BININT1[0]: lambda u: u.op_int(1, False),
    pickle.BININT2[0]: lambda u: u.op_int(2, False), pickle.LONG1[0]: _U.op_long1,
    pickle.NONE[0]: lambda u: u._push(None), pickle.NEWTRUE[0]: lambda u: u._push(True),
    pickle.NEWFALSE[0]: lambda u: u._push(False),
    pickle.BINUNICODE[0]: lambda u: u.op_str(4, "utf-8"),
    pickle.SHORT_BINUNICODE[0]: lambda u: u.op_str(1, "utf-8"),
    pickle.SHORT_BINSTRING[0]: lambda u: u.op_str(1, "latin-1"),
    pickle.BINSTRING[0]: lambda u: u.op_str(4, "latin-1"),
    pickle.BINFLOAT[0]: _U.op_binfloat,
}
del _U
