"""Backend selection (set_backend / MINADAPTERS_BACKEND / "auto" / from_pretrained) and native vs numpy at
model level. Spec: OPS-0."""
import sys

import numpy as np
import pytest

import minadapters as ma
import minadapters.ops
from minadapters.errors import BackendUnavailableError
from minadapters.ops import NumpyOps, get_backend, get_ops, native_self_check, resolve_backend, set_backend
from minadapters.tiny import write_tiny_model


@pytest.fixture
def clean_backend(monkeypatch):
    monkeypatch.delenv("MINADAPTERS_BACKEND", raising=False)
    set_backend(None)
    yield
    set_backend(None)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("tiny"), "bert", hidden=48, layers=2, heads=4, ffn=70)


@pytest.mark.spec("OPS-0")
def test_precedence(clean_backend, monkeypatch, native):
    assert get_backend() == "auto"                       # nothing chosen
    monkeypatch.setenv("MINADAPTERS_BACKEND", "numpy")
    assert get_backend() == "numpy"                      # the environment beats the default
    set_backend("native")
    assert get_backend() == "native"                     # set_backend beats the environment
    set_backend("auto")
    assert get_backend() == "auto"
    set_backend(None)
    assert get_backend() == "numpy"


@pytest.mark.spec("OPS-0")
def test_unknown_backend(clean_backend):
    with pytest.raises(ValueError, match="unknown backend 'cuda'; choose one of: auto, numpy, native"):
        set_backend("cuda")
    assert get_backend() == "auto"
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        resolve_backend("cuda")


@pytest.mark.spec("OPS-0")
def test_auto_is_native_when_it_loads_and_passes_the_self_check(clean_backend, native):
    assert native_self_check() is None
    assert resolve_backend("auto") == resolve_backend() == "native"
    assert get_ops("auto").name == get_ops().name == "native"
    assert resolve_backend("numpy") == "numpy" and resolve_backend("native") == "native"


@pytest.mark.spec("OPS-0")
def test_auto_falls_back_to_numpy_and_never_raises(clean_backend, monkeypatch):
    monkeypatch.delitem(sys.modules, "minadapters.ops.native", raising=False)
    monkeypatch.setitem(sys.modules, "minadapters.ops._native", None)     # the extension cannot be imported
    monkeypatch.delattr(minadapters.ops, "_native", raising=False)
    native_self_check.cache_clear()
    try:
        assert "not available" in native_self_check()
        assert resolve_backend("auto") == "numpy"
        assert get_ops("auto").name == "numpy"
        set_backend("auto")                                  # allowed although native is missing
        with pytest.raises(BackendUnavailableError):
            set_backend("native")
        assert get_backend() == "auto"
    finally:
        native_self_check.cache_clear()


@pytest.mark.spec("OPS-0")
def test_auto_rejects_a_native_backend_that_fails_its_self_check(clean_backend, native, monkeypatch):
    from minadapters.ops import native as native_mod

    def wrong_linear(self, x, w, b=None):
        return NumpyOps().linear(x, w, b) + np.float32(1e-2)

    monkeypatch.setattr(native_mod.NativeOps, "linear", wrong_linear)
    native_self_check.cache_clear()
    try:
        assert "native linear differs" in native_self_check()
        assert resolve_backend("auto") == "numpy"
    finally:
        monkeypatch.undo()
        native_self_check.cache_clear()
    assert resolve_backend("auto") == "native"


def test_from_pretrained_follows_selection(clean_backend, tiny, native, monkeypatch):
    assert ma.AutoModel.from_pretrained(tiny).ops.name == "native"           # "auto" with native built
    set_backend("numpy")
    assert ma.AutoModel.from_pretrained(tiny).ops.name == "numpy"
    assert ma.AutoModel.from_pretrained(tiny, backend="native").ops.name == "native"
    set_backend(None)
    monkeypatch.setenv("MINADAPTERS_BACKEND", "numpy")
    assert ma.AutoModel.from_pretrained(tiny).ops.name == "numpy"


@pytest.mark.native
@pytest.mark.parametrize("adapter", [None, "seq_bn", "double_seq_bn[reduction_factor=4]"])
def test_native_model_matches_numpy(clean_backend, tiny, native, adapter):
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 40, (3, 11))
    mask = np.ones((3, 11), np.int64)
    mask[1, 7:] = 0
    outs = []
    for backend in ("numpy", "native"):
        m = ma.AutoModel.from_pretrained(tiny, backend=backend, seed=0)
        if adapter:
            m.add_adapter("a", config=adapter)
            n = 0
            for layer in m.method_layers.values():
                for _, params, leaf in layer.param_refs("a"):
                    params[leaf] = params[leaf] + np.float32(0.05) * np.ones_like(params[leaf])
                    n += 1
            assert n > 0
            m.active_adapters = ma.Stack("a")
        outs.append(m(input_ids=ids, attention_mask=mask).last_hidden_state)
    assert outs[1].dtype == np.float32
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-4, atol=1e-4)
