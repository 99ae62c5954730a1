"""Composition blocks: data model, nesting validation, run-time errors, AdapterSetup thread safety.

Spec: COMP-0, COMP-1, COMP-SETUP, COMP-BATCHSPLIT, COMP-PARALLEL, COMP-AVERAGE.
"""
import itertools
import threading

import numpy as np
import pytest

import minadapters as ma
from minadapters.composition import ALLOWED_NESTINGS, BLOCKS
from minadapters.tiny import write_tiny_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = write_tiny_model(tmp_path_factory.mktemp("tiny") / "bert", seed=1)
    m = ma.AutoModel.from_pretrained(d, seed=0)
    for name, cfg in [("a", "seq_bn"), ("b", "seq_bn[reduction_factor=4]"), ("c", "double_seq_bn"),
                      ("d", "seq_bn[use_gating=True]")]:
        m.add_adapter(name, config=cfg)
        rng = np.random.default_rng(ord(name))
        for _, (p, leaf) in m.adapter_param_refs(name).items():
            p[leaf] = p[leaf] + rng.normal(0, 0.2, p[leaf].shape).astype(np.float32)
    return m


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 40, size=(4, 7))
    mask = np.ones((4, 7), np.int64)
    mask[1, 5:] = 0
    mask[3, 3:] = 0
    return ids, mask


def run(model, setup, ids, mask, **kw):
    model.active_adapters = setup
    return model(input_ids=ids, attention_mask=mask, **kw).last_hidden_state


def _make(block_cls, children):
    kw = {"splits": 1} if block_cls is ma.Split else {"batch_sizes": 1} if block_cls is ma.BatchSplit else {}
    return block_cls(*children, **kw)


@pytest.mark.spec("COMP-1")
@pytest.mark.parametrize("parent,child", [(p, c) for p, c in itertools.product(BLOCKS.values(), BLOCKS.values())
                                          if c not in ALLOWED_NESTINGS[p]])
def test_every_disallowed_nesting_is_rejected(parent, child):
    setup = _make(parent, [_make(child, ["x", "y"]), "z"])
    with pytest.raises(ValueError) as e:
        ma.parse_composition(setup)
    msg = str(e.value)
    assert child.__name__ in msg and parent.__name__ in msg, msg


@pytest.mark.spec("COMP-1")
def test_too_deep_is_rejected():
    with pytest.raises(ValueError, match="too deep"):
        ma.parse_composition(ma.Stack(ma.Parallel("a", ma.BatchSplit("b", "c", batch_sizes=1))))


@pytest.mark.spec("COMP-0")
def test_string_and_list_forms():
    assert ma.parse_composition("a") == ma.Stack("a")
    with pytest.warns(FutureWarning):
        assert ma.parse_composition(["a", ["b", "c"]]) == ma.Stack("a", ma.Fuse("b", "c"))
    assert ma.Stack("a") != ma.Stack("a", "b")
    assert ma.Split("a", "b", split_index=3).splits == [3, 3]
    s = ma.Stack("a", ma.Average("b", "c", weights=[1, 3]))
    assert ma.AdapterCompositionBlock.from_dict(s.to_dict()) == s


def test_block_argument_errors():
    with pytest.raises(ValueError, match="batch_sizes"):
        ma.BatchSplit("a", "b", batch_sizes=[1, 2, 3])
    with pytest.raises(ValueError, match="splits"):
        ma.Split("a", "b")
    with pytest.raises(ValueError, match="weights"):
        ma.Average("a", "b", weights=[1.0])


def test_unknown_adapter_names_known_ones(model):
    with pytest.raises(ValueError) as e:
        model.active_adapters = ma.Stack("a", "nope")
    assert "'nope'" in str(e.value) and "'a'" in str(e.value)


def test_fuse_without_fusion_layer(model):
    with pytest.raises(ValueError, match="add_adapter_fusion"):
        model.active_adapters = ma.Fuse("a", "b")


@pytest.mark.spec("COMP-BATCHSPLIT")
def test_batchsplit_sum_mismatch_names_both(model, inputs):
    ids, mask = inputs
    with pytest.raises(ValueError) as e:
        run(model, ma.BatchSplit("a", "b", batch_sizes=[1, 2]), ids, mask)
    assert "4" in str(e.value) and "[1, 2]" in str(e.value)


@pytest.mark.spec("COMP-BATCHSPLIT")
def test_batchsplit_equals_separate_runs(model, inputs):
    ids, mask = inputs
    # Children with the same pre-processing flags (all seq_bn): one pre_block for the block equals each alone.
    out = run(model, ma.BatchSplit("a", "b", "d", batch_sizes=[1, 2, 1]), ids, mask)
    parts = [run(model, "a", ids[:1], mask[:1]), run(model, "b", ids[1:3], mask[1:3]), run(model, "d", ids[3:], mask[3:])]
    np.testing.assert_allclose(out, np.concatenate(parts), rtol=1e-5, atol=1e-6)


@pytest.mark.spec("COMP-PARALLEL")
def test_parallel_equals_each_alone(model, inputs):
    ids, mask = inputs
    out = run(model, ma.Parallel("a", "b", "d"), ids, mask)
    assert out.shape == (12, 7, 32), f"out.shape={out.shape}, but should be (12, 7, 32) [Parallel('a','b','d')]"
    for i, name in enumerate("abd"):
        np.testing.assert_allclose(out[4 * i:4 * (i + 1)], run(model, name, ids, mask), rtol=1e-5, atol=1e-6)


@pytest.mark.spec("COMP-AVERAGE")
def test_average_of_identical_adapters(model, inputs):
    """Average(a, a') with a' = a gives a's adapter output scaled by Σw/N around the residual (adapters 1.3.0)."""
    ids, mask = inputs
    if "a2" not in model.adapters_config:
        model.add_adapter("a2", config="seq_bn")
        for k, (p, leaf) in model.adapter_param_refs("a2").items():
            src, sl = model.adapter_param_refs("a")[k.replace(".a2.", ".a.")]
            p[leaf] = src[sl].copy()
    out = run(model, ma.Average("a", "a2", weights=[0.5, 0.5]), ids, mask)
    # mean of two identical states weighted 0.5 each = half the state: compare to a model computing that directly
    assert np.all(np.isfinite(out))
    out_a = run(model, "a", ids, mask)
    assert not np.allclose(out, out_a), "Average divides by N again (spec COMP-AVERAGE), so it differs from 'a'"


@pytest.mark.spec("COMP-SETUP")
def test_adapter_setup_thread_safe(model, inputs):
    ids, mask = inputs
    setups = [ma.Stack("a"), ma.Stack("b"), ma.Stack("a", "c"), ma.Parallel("a", "b"),
              ma.BatchSplit("a", "b", batch_sizes=[2, 2]), ma.Average("a", "b"), ma.Stack("d", "b"), ma.Stack("c")]
    model.active_adapters = None
    expected = []
    for s in setups:
        with ma.AdapterSetup(s):
            expected.append(model(input_ids=ids, attention_mask=mask).last_hidden_state)
    results, errors = [None] * len(setups), []
    barrier = threading.Barrier(len(setups))

    def worker(i):
        try:
            barrier.wait()
            for _ in range(5):
                with ma.AdapterSetup(setups[i]):
                    results[i] = model(input_ids=ids, attention_mask=mask).last_hidden_state
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(setups))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for s, got, want in zip(setups, results, expected):
        np.testing.assert_array_equal(got, want, err_msg=f"thread with AdapterSetup({s!r})")
    assert ma.AdapterSetup.get_context() is None


def test_mixed_locations_parallel_runs(model, inputs):
    """Parallel('c', 'a', 'b'): at mh_adapter only 'c' exists; upstream crashes, we pass other rows through."""
    ids, mask = inputs
    out = run(model, ma.Parallel("c", "a", "b"), ids, mask)
    assert out.shape == (12, 7, 32)
    np.testing.assert_allclose(out[:4], run(model, "c", ids, mask), rtol=1e-5, atol=1e-6)


@pytest.mark.spec("COMP-PARALLEL")
def test_parallel_uses_first_childs_preprocessing(model, inputs):
    """adapters 1.3.0 runs one pre_block (the first child's LN/residual flags) for the whole block, so a
    double_seq_bn child after a seq_bn child does not equal running it alone (spec COMP-PARALLEL)."""
    ids, mask = inputs
    out = run(model, ma.Parallel("a", "c"), ids, mask)
    np.testing.assert_allclose(out[:4], run(model, "a", ids, mask), rtol=1e-5, atol=1e-6)
    assert not np.allclose(out[4:], run(model, "c", ids, mask), atol=1e-4)


def test_delete_active_adapter_resets_setup(model, inputs):
    model.add_adapter("tmp", config="seq_bn")
    model.active_adapters = ma.Stack("tmp", "a")
    model.delete_adapter("tmp")
    assert model.active_adapters is None


@pytest.mark.spec("BN-4")
def test_parallel_adapter_under_parallel_block(model, inputs):
    """is_parallel bottlenecks under Parallel: upstream crashes (unreplicated h); ours equals each alone."""
    ids, mask = inputs
    for name in ("p1", "p2"):
        if name not in model.adapters_config:
            model.add_adapter(name, config="par_bn[reduction_factor=4]")
            rng = np.random.default_rng(len(name) + ord(name[-1]))
            for _, (p, leaf) in model.adapter_param_refs(name).items():
                p[leaf] = p[leaf] + rng.normal(0, 0.2, p[leaf].shape).astype(np.float32)
    out = run(model, ma.Parallel("p1", "p2"), ids, mask)
    np.testing.assert_allclose(out[:4], run(model, "p1", ids, mask), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[4:], run(model, "p2", ids, mask), rtol=1e-5, atol=1e-6)


def test_fuse_with_last_child_left_out(tmp_path):
    """Fuse('b', 'a') where 'a' is left out of layer 0: the last present child closes the block there."""
    m = ma.AutoModel.from_pretrained(write_tiny_model(tmp_path / "m", seed=1))
    m.add_adapter("a", config="seq_bn[leave_out=[0]]")
    m.add_adapter("b", config="seq_bn")
    m.add_adapter_fusion(["b", "a"], set_active=True)
    out = m(input_ids=np.array([[5, 6, 7, 8]])).last_hidden_state
    assert out.shape == (1, 4, 32) and np.all(np.isfinite(out))
