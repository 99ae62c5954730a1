"""Deterministic mutators for the fuzz campaign: bytes, JSON documents, pickles, zips, strings.

Every function takes a `random.Random` and returns new bytes; nothing here reads a clock, so a
(target, seed, index) triple always reproduces the same input. Outputs are capped at MAX_INPUT.
"""
from __future__ import annotations

import io
import json
import pickle
import random
import struct
import zipfile

MAX_INPUT = 64 * 1024 - 1          # the campaign's promise: under 64 KiB in, at most 256 MiB out

INTERESTING_INTS = [0, -1, 1, 2, 3, 255, 256, 65535, 2 ** 31 - 1, 2 ** 31, -2 ** 31, 2 ** 32, 2 ** 53,
                    2 ** 61, 2 ** 62, 2 ** 63 - 1, 2 ** 63, 2 ** 64, 2 ** 70, 10 ** 9, 10 ** 18, -10 ** 9]
INTERESTING_FLOATS = [0.0, -0.0, 1e-300, 1e-9, 0.5, 1e30, 1e308, -1e308]
JSON_SPECIALS = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" + "0" * 5000, "[]", "{}", "null",
                 "true", '""', '"x"', "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]"
                 "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"]


def cap(data: bytes) -> bytes:
    return data[:MAX_INPUT]


# ---- generic bytes ------------------------------------------------------------------------------

def mutate_bytes(rng: random.Random, data: bytes, rounds: int = 0) -> bytes:
    """AFL-style havoc: flips, interesting integers at random offsets, chunk copy/delete/insert."""
    buf = bytearray(data) or bytearray(b"\0")
    for _ in range(rounds or rng.randint(1, 8)):
        kind = rng.randrange(7)
        pos = rng.randrange(len(buf)) if buf else 0
        if kind == 0:
            buf[pos] ^= 1 << rng.randrange(8)
        elif kind == 1:
            buf[pos] = rng.randrange(256)
        elif kind == 2:
            width, fmt = rng.choice([(1, "<B"), (2, "<H"), (4, "<I"), (8, "<Q"), (4, ">I"), (8, ">Q")])
            v = rng.choice(INTERESTING_INTS) % (1 << (8 * width))
            buf[pos:pos + width] = struct.pack(fmt, v)
        elif kind == 3 and len(buf) > 2:
            n = rng.randint(1, max(1, len(buf) // 8))
            del buf[pos:pos + n]
        elif kind == 4:
            n = rng.randint(1, 64)
            src = rng.randrange(len(buf))
            buf[pos:pos] = buf[src:src + n]
        elif kind == 5:
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        else:
            cut = rng.randrange(len(buf) + 1)
            del buf[cut:]
    return cap(bytes(buf))


# ---- JSON ----------------------------------------------------------------------------------------

def _paths(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, prefix + (i,))


def _set(doc, path, value):
    if not path:
        return value
    node = doc
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return doc


def _get(doc, path):
    for p in path:
        doc = doc[p]
    return doc


def _hostile_value(rng: random.Random, old):
    choice = rng.randrange(12)
    if choice == 0:
        return rng.choice(INTERESTING_INTS)
    if choice == 1:
        return rng.choice(INTERESTING_FLOATS)
    if choice == 2:
        return [old] if rng.random() < 0.5 else {"x": old}
    if choice == 3:
        return None
    if choice == 4:
        return "" if rng.random() < 0.5 else "x" * rng.randint(1, 3000)
    if choice == 5:
        return rng.choice([True, False])
    if choice == 6:
        return []
    if choice == 7:
        return {}
    if choice == 8 and isinstance(old, (int, float)) and not isinstance(old, bool):
        return old * rng.choice([-1, 0, 2, 1000, 10 ** 6, 10 ** 9]) + rng.choice([0, 0.5])
    if choice == 9 and isinstance(old, str):
        return old + rng.choice(["[", "]", "|", ",", "=", "'", "\n", "\x00", "é", "../"])
    if choice == 10:
        return "@@SPECIAL@@"     # replaced textually by NaN / Infinity / deep nesting below
    return [[old]]


def mutate_json(rng: random.Random, data: bytes) -> bytes:
    """Structure-aware: replace, delete, duplicate values with hostile ones; or raw JSON specials."""
    try:
        doc = json.loads(data)
    except ValueError:
        return mutate_bytes(rng, data)
    specials = []
    for _ in range(rng.randint(1, 4)):
        paths = list(_paths(doc))
        path = rng.choice(paths)
        if path and rng.random() < 0.15:
            parent = _get(doc, path[:-1])
            if isinstance(parent, dict):
                del parent[path[-1]]
            else:
                del parent[path[-1]]
            continue
        new = _hostile_value(rng, _get(doc, path) if path else doc)
        if new == "@@SPECIAL@@":
            specials.append(rng.choice(JSON_SPECIALS + ["[" * 200000 + "]" * 200000]))
        doc = _set(doc, path, new)
    text = json.dumps(doc)
    for s in specials:
        text = text.replace('"@@SPECIAL@@"', s, 1)
    if rng.random() < 0.1:
        return mutate_bytes(rng, text.encode())
    return cap(text.encode())


def deep_json(depth: int, opener: str = "[") -> bytes:
    closer = {"[": "]", "{": "}"}[opener]
    if opener == "{":
        return cap(('{"a":' * depth + "1" + "}" * depth).encode())
    return cap((opener * depth + closer * depth).encode())


# ---- pickles / torch zips --------------------------------------------------------------------------

def zip_records(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def make_zip(records: dict[str, bytes], *, compression=zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for n, raw in records.items():
            zf.writestr(n, raw)
    return buf.getvalue()


def _pkl_int(n: int) -> bytes:
    if 0 <= n < 256:
        return pickle.BININT1 + bytes([n])
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return pickle.LONG1 + bytes([len(raw)]) + raw


def _pkl_str(s: str) -> bytes:
    b = s.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(b)) + b


def _glob(m, n):
    return pickle.GLOBAL + f"{m}\n{n}\n".encode()


ODICT = _glob("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE


def tensor_pickle(entries) -> bytes:
    """entries: (name, storage key, storage numel, offset, size, stride) of FloatStorage tensors."""
    body = b""
    for name, key, numel, offset, size, stride in entries:
        pid = (pickle.MARK + _pkl_str("storage") + _glob("torch", "FloatStorage") + _pkl_str(key) + _pkl_str("cpu")
               + _pkl_int(numel) + pickle.TUPLE + pickle.BINPERSID)
        args = (pickle.MARK + pid + _pkl_int(offset) + pickle.MARK + b"".join(map(_pkl_int, size)) + pickle.TUPLE
                + pickle.MARK + b"".join(map(_pkl_int, stride)) + pickle.TUPLE + pickle.NEWFALSE + ODICT + pickle.TUPLE)
        body += _pkl_str(name) + _glob("torch._utils", "_rebuild_tensor_v2") + args + pickle.REDUCE
    return pickle.PROTO + b"\x02" + ODICT + pickle.MARK + body + pickle.SETITEMS + pickle.STOP


def hostile_pickles(rng: random.Random) -> bytes:
    """Pickles aimed at the unpickler's limits (the issue's crash classes and their relatives)."""
    k = rng.randrange(9)
    n = rng.choice([40, 1000, 30000])
    if k == 0:      # a dict key that is a tuple nested n deep (hashing recursed -> SIGSEGV)
        return cap(pickle.PROTO + b"\x02" + pickle.EMPTY_DICT + pickle.EMPTY_TUPLE + pickle.TUPLE1 * n
                   + pickle.BININT1 + b"\x01" + pickle.SETITEM + pickle.STOP)
    if k == 1:      # a list nested n deep as the whole object
        return cap(pickle.PROTO + b"\x02" + (pickle.EMPTY_LIST + pickle.MARK) * n
                   + pickle.APPENDS * n + pickle.STOP)
    if k == 2:      # APPEND / SETITEMS aimed at non-containers
        return pickle.PROTO + b"\x02" + rng.choice([pickle.NONE, _pkl_int(3), _pkl_str("x"), ODICT]) \
            + rng.choice([pickle.NONE + pickle.APPEND, pickle.MARK + pickle.NONE + pickle.APPENDS,
                          pickle.NONE + pickle.NONE + pickle.SETITEM]) + pickle.STOP
    if k == 3:      # memo explosion / huge memo index
        return cap(pickle.PROTO + b"\x02" + pickle.NONE + (pickle.LONG_BINPUT + struct.pack("<I", rng.randrange(2 ** 32))) * n
                   + pickle.STOP)
    if k == 4:      # tuple of a huge number of items / doubling via memo GET
        return cap(pickle.PROTO + b"\x02" + pickle.NONE + pickle.BINPUT + b"\x00" + pickle.MARK
                   + (pickle.BINGET + b"\x00") * n + pickle.TUPLE + pickle.STOP)
    if k == 5:      # huge integers
        raw = bytes(rng.randrange(256) for _ in range(rng.choice([9, 17, 255])))
        return pickle.PROTO + b"\x02" + pickle.LONG1 + bytes([len(raw)]) + raw + pickle.STOP
    if k == 6:      # views that would inflate a tiny storage
        size = rng.choice([(16384, 20000), (2 ** 31,), (1, 2 ** 40), (3, 4)])
        stride = rng.choice([(0,) * len(size), (1,) * len(size), (2 ** 70,) * len(size)])
        return tensor_pickle([("w", "0", 1, 0, size, stride)])
    if k == 7:      # many MARKs
        return cap(pickle.PROTO + b"\x02" + pickle.MARK * n + pickle.STOP)
    return pickle.PROTO + b"\x02" + rng.choice([pickle.BUILD, pickle.INST, pickle.NEWOBJ, b"\xff", pickle.EXT1 + b"\x01",
                                                pickle.STACK_GLOBAL, pickle.REDUCE]) + pickle.STOP


def mutate_torch_zip(rng: random.Random, data: bytes) -> bytes:
    """Mutate a valid torch zip: its pickle (opcode-level), its records, or its container."""
    k = rng.randrange(8)
    try:
        records = zip_records(data)
    except zipfile.BadZipFile:
        return mutate_bytes(rng, data)
    pkl_name = next(n for n in records if n.endswith("data.pkl"))
    if k <= 2:
        records[pkl_name] = mutate_bytes(rng, records[pkl_name], rounds=rng.randint(1, 3))
    elif k == 3:
        records[pkl_name] = hostile_pickles(rng)
    elif k == 4:      # compression methods torch never writes (bzip2 bombs, lzma, deflate)
        if rng.random() < 0.5:
            records[pkl_name] = records[pkl_name] + b"\x00" * rng.choice([1000, 10 ** 6, 3 * 10 ** 7])
        return cap(make_zip(records, compression=rng.choice([zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2,
                                                            zipfile.ZIP_LZMA])))
    elif k == 5:      # delete / truncate a storage record
        keys = [n for n in records if "/data/" in n]
        if keys:
            victim = rng.choice(keys)
            records[victim] = records[victim][: rng.randrange(len(records[victim]) + 1)]
    elif k == 6:      # encrypted flag / bytes inside the container
        return mutate_bytes(rng, data)
    else:             # swap to a legacy stream
        return mutate_bytes(rng, records[pkl_name])
    return cap(make_zip(records))


# ---- strings -------------------------------------------------------------------------------------

STRING_ALPHABET = "abcdefgr_=[],|()'\"0123456789.-+eEinfNa \n\\{}:"


def mutate_string(rng: random.Random, data: bytes) -> bytes:
    s = data.decode("utf-8", "replace")
    k = rng.randrange(6)
    if k == 0:
        n = rng.choice([50, 300, 3000])
        return cap((rng.choice(["Stack(", "Fuse(", "Parallel(", "[", "(", "lora[r=("]) * n + "a" + ")" * n).encode())
    if k == 1:
        return cap((s + rng.choice(["[r=2**31]", "[r=1e400]", "[alpha=nan]", "[reduction_factor=1e-9]",
                                    "[prompt_length=100000000]", "[r=-1]", "[r=True]", "[scaling=float('nan')]",
                                    "[x=__import__('os')]", "[r=" + "9" * 5000 + "]"])).encode())
    chars = list(s)
    for _ in range(rng.randint(1, 6)):
        pos = rng.randrange(len(chars) + 1)
        op = rng.randrange(3)
        if op == 0:
            chars.insert(pos, rng.choice(STRING_ALPHABET))
        elif op == 1 and chars:
            del chars[min(pos, len(chars) - 1)]
        else:
            chars[pos:pos] = list(rng.choice(["Stack(", "Fuse(", "Split(", "BatchSplit(", ",", ")", "|", "[", "]"]))
    return cap("".join(chars).encode("utf-8", "replace"))
