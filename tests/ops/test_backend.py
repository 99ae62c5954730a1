"""Backend selection (set_backend / MINADAPTERS_BACKEND / from_pretrained) and native vs numpy at model level."""
import numpy as np
import pytest

import minadapters as ma
from minadapters.ops import get_backend, set_backend
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


def test_precedence(clean_backend, monkeypatch, native):
    assert get_backend() == "numpy"
    monkeypatch.setenv("MINADAPTERS_BACKEND", "native")
    assert get_backend() == "native"
    set_backend("numpy")
    assert get_backend() == "numpy"
    set_backend(None)
    assert get_backend() == "native"


def test_unknown_backend(clean_backend):
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        set_backend("cuda")
    assert get_backend() == "numpy"


def test_from_pretrained_follows_selection(clean_backend, tiny, native, monkeypatch):
    assert ma.AutoModel.from_pretrained(tiny).ops.name == "numpy"
    set_backend("native")
    assert ma.AutoModel.from_pretrained(tiny).ops.name == "native"
    assert ma.AutoModel.from_pretrained(tiny, backend="numpy").ops.name == "numpy"
    set_backend(None)
    monkeypatch.setenv("MINADAPTERS_BACKEND", "native")
    assert ma.AutoModel.from_pretrained(tiny).ops.name == "native"


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
