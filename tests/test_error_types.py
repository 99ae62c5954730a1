"""Errors catchable as upstream's: where adapters 1.3.0 raises IndexError / KeyError / TypeError / ValueError,
ours is (also) that builtin, plus AdapterError. Spec: API-ERR.

Each row: case id, the builtin adapters 1.3.0 raises, and the same operation on both libraries (``lib`` is
minadapters or adapters, ``m`` a 2-layer BERT with seq_bn adapters 'a', 'b' and a LoRA 'l', ``fw`` activates a
setup and runs a forward on a batch of 2 x 6 tokens). tests/oracle/test_error_types_oracle.py runs each row on
adapters 1.3.0.

Not mirrored: adapters raises AssertionError for save_adapter('unknown') and MultiTask without task_ids; an
assert is not an API, so ours raise AdapterNotFoundError (KeyError, ValueError) / CompositionError (ValueError).
"""
import numpy as np
import pytest

import minadapters as ma

CASES = [
    ("Split sizes != T", IndexError, lambda lib, m, fw: fw(lib.Split("a", "b", splits=[2, 2]))),
    ("BatchSplit sizes != B", IndexError, lambda lib, m, fw: fw(lib.BatchSplit("a", "b", batch_sizes=[1, 2]))),
    ("Fuse without fusion layer", KeyError, lambda lib, m, fw: fw(lib.Fuse("a", "b"))),
    ("set_active_adapters unknown", ValueError, lambda lib, m, fw: m.set_active_adapters("nope")),
    ("Stack with unknown name", ValueError, lambda lib, m, fw: m.set_active_adapters(lib.Stack("a", "nope"))),
    ("add_adapter_fusion unknown", ValueError, lambda lib, m, fw: m.add_adapter_fusion(["a", "nope"])),
    ("AdapterConfig.load unknown id", ValueError, lambda lib, m, fw: lib.AdapterConfig.load("nope")),
    ("config unknown field", TypeError, lambda lib, m, fw: lib.LoRAConfig(nope=1)),
    ("config replace unknown field", TypeError, lambda lib, m, fw: lib.LoRAConfig().replace(nope=1)),
    ("abstract AdapterConfig()", TypeError, lambda lib, m, fw: lib.AdapterConfig()),
    ("config dict unknown architecture", KeyError,
     lambda lib, m, fw: m.add_adapter("x", config={"architecture": "nope"})),
    ("unknown non_linearity", KeyError,
     lambda lib, m, fw: m.add_adapter("y", config=lib.SeqBnConfig(non_linearity="nope"))),
    ("reduction_factor map without default", KeyError,
     lambda lib, m, fw: m.add_adapter("z", config=lib.SeqBnConfig(reduction_factor={"1": 2}))),
    ("nested ConfigUnion", TypeError, lambda lib, m, fw: lib.ConfigUnion(lib.MAMConfig(), lib.LoRAConfig())),
    ("forward unknown kwarg", TypeError, lambda lib, m, fw: m(np.zeros((2, 6), np.int64), nope=1)),
]
IDS = [c[0] for c in CASES]


def _ours(tmp_path_factory):
    from minadapters.tiny import write_tiny_model
    d = write_tiny_model(str(tmp_path_factory.mktemp("errtypes")))
    m = ma.AutoModel.from_pretrained(d, seed=0)
    for n, c in (("a", "seq_bn"), ("b", "seq_bn"), ("l", "lora")):
        m.add_adapter(n, config=c)
    ids = np.random.default_rng(0).integers(5, 30, (2, 6))

    def fw(setup):
        m.set_active_adapters(setup)
        return m(input_ids=ids)
    return m, fw


@pytest.mark.spec("API-ERR")
@pytest.mark.parametrize("case,builtin,op", CASES, ids=IDS)
def test_ours_is_catchable_as_upstreams_type(case, builtin, op, tmp_path_factory):
    m, fw = _ours(tmp_path_factory)
    with pytest.raises(builtin) as info:
        op(ma, m, fw)
    err = info.value
    assert isinstance(err, ma.AdapterError) or type(err) is builtin, (
        f"{case}: raised {type(err).__name__}, which is neither an AdapterError nor plain {builtin.__name__}")
    msg = str(err)
    assert len(msg) > 20 and not msg.startswith("'"), f"{case}: message {msg!r} should explain, not just quote a key"
