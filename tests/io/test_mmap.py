"""Memory-mapped model checkpoints. Spec: IO-19 (and IO-7 for the values)."""
import hashlib
import json
import mmap
import os
import struct

import numpy as np
import pytest

import minadapters as ma
from minadapters.io.safetensors_io import load_safetensors, save_safetensors
from minadapters.tiny import write_tiny_model

pytestmark = pytest.mark.spec("IO-19")


def _root_buffer(a):
    while isinstance(a, np.ndarray) and a.base is not None:
        a = a.base
    return a


def _is_mapped(a) -> bool:
    root = _root_buffer(a)
    return isinstance(root, mmap.mmap) or (isinstance(root, memoryview) and isinstance(root.obj, mmap.mmap))


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_mapped_read_equals_plain_read_and_is_a_view(tmp_path):
    """IO-19: float32/int64 entries are views of the map, values identical to a plain read, writable."""
    rng = np.random.default_rng(0)
    arrays = {"w": rng.standard_normal((7, 5)).astype(np.float32), "i": np.arange(6, dtype=np.int64).reshape(2, 3),
              "h": rng.standard_normal((3,)).astype(np.float16)}
    path = tmp_path / "m.safetensors"
    save_safetensors(path, arrays)
    plain, mapped = load_safetensors(path), load_safetensors(path, mmap=True)
    assert set(plain) == set(mapped)
    for k in arrays:
        np.testing.assert_array_equal(mapped[k], plain[k])
        assert mapped[k].dtype == plain[k].dtype and mapped[k].shape == plain[k].shape
        assert not _is_mapped(plain[k])
    assert _is_mapped(mapped["w"]) and _is_mapped(mapped["i"])
    before = _sha(path)
    mapped["w"][0, 0] = 123.0          # copy-on-write: private page, the file stays as it was
    assert mapped["w"].flags.writeable and _sha(path) == before
    np.testing.assert_array_equal(load_safetensors(path)["w"], arrays["w"])


def _write_unaligned(path, arr):
    """A hand-made file whose one float32 tensor starts 2 bytes into the data (writers never do this)."""
    body = b"\0\0" + arr.tobytes()
    header = {"pad": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
              "w": {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [2, len(body)]}}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + body)


def test_unaligned_entry_is_read_not_mapped(tmp_path):
    """IO-19: an entry at an offset that is not a multiple of its item size gets an owned, aligned copy."""
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    path = tmp_path / "u.safetensors"
    _write_unaligned(path, arr)
    got = load_safetensors(path, mmap=True)
    np.testing.assert_array_equal(got["w"], arr)
    assert not _is_mapped(got["w"]) and got["w"].flags.aligned
    assert _is_mapped(got["pad"])        # a byte array is aligned anywhere


def test_from_pretrained_maps_float32_checkpoints(tmp_path, monkeypatch):
    """IO-19: every float32 base weight of a loaded model is a view of the checkpoint (no copy);
    MINADAPTERS_MMAP=0 gives owned arrays with the same outputs."""
    d = write_tiny_model(tmp_path / "m")
    ids = np.array([[2, 5, 7, 9], [3, 4, 0, 0]])
    mask = (ids != 0).astype(np.int64)
    model = ma.AutoModel.from_pretrained(d)
    assert model.params and all(_is_mapped(v) for v in model.params.values())
    out = model(input_ids=ids, attention_mask=mask).last_hidden_state
    monkeypatch.setenv("MINADAPTERS_MMAP", "0")
    owned = ma.AutoModel.from_pretrained(d)
    assert not any(_is_mapped(v) for v in owned.params.values())
    np.testing.assert_array_equal(owned(input_ids=ids, attention_mask=mask).last_hidden_state, out)


@pytest.mark.parametrize("config", ["lora[r=4]", "ia3"])
def test_merge_on_a_mapped_model_leaves_the_file_alone(tmp_path, config):
    """IO-19: merge_adapter writes into mapped weights copy-on-write: merged outputs equal the unmerged forward,
    reset restores the base, and the checkpoint's bytes never change."""
    d = write_tiny_model(tmp_path / "m")
    ckpt = os.path.join(d, "model.safetensors")
    before = _sha(ckpt)
    ids = np.array([[2, 5, 7, 9, 11], [3, 4, 6, 0, 0]])
    mask = (ids != 0).astype(np.int64)
    model = ma.AutoModel.from_pretrained(d)
    base = model(input_ids=ids, attention_mask=mask).last_hidden_state
    model.add_adapter("a", config=config)
    rng = np.random.default_rng(1)
    for _, (holder, leaf) in model.adapter_param_refs("a").items():
        holder[leaf] = (holder[leaf] + 0.1 * rng.standard_normal(holder[leaf].shape)).astype(np.float32)
    model.set_active_adapters("a")
    unmerged = model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert not np.allclose(unmerged, base, atol=1e-4)
    model.merge_adapter("a")
    np.testing.assert_allclose(model(input_ids=ids, attention_mask=mask).last_hidden_state, unmerged,
                               rtol=1e-4, atol=1e-5)
    assert _sha(ckpt) == before
    model.reset_adapter()
    model.set_active_adapters(None)
    np.testing.assert_allclose(model(input_ids=ids, attention_mask=mask).last_hidden_state, base, rtol=1e-4, atol=1e-5)
    assert _sha(ckpt) == before
    fresh = ma.AutoModel.from_pretrained(d)
    np.testing.assert_array_equal(fresh(input_ids=ids, attention_mask=mask).last_hidden_state, base)
