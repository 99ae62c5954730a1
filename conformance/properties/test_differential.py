"""Differential checks: the driver under test against the reference, same weights, same inputs.

Each example: a drawn config (every field random within its valid range), perturbed weights (the reference's
fresh weights plus seeded noise, handed to both drivers), a padded batch. Spec IDs come from the method entry.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.harness import (Built, add_fusions, add_perturbed, batch, describe_case, need, need_method, record,
                                 single)
from conformance.driver import Unsupported
from conformance.outcomes import UnreadableFile, assert_close, tolerance
from conformance.strategies import (REGISTRY, batch_shapes, composition_trees, configs_for, runnable_blocks, seeds,
                                    tree_configs, tree_names)

METHODS = [pytest.param(e, id=e.name, marks=pytest.mark.spec(*e.spec)) for e in REGISTRY.values()]


def _both(driver, reference, model_dirs, arch):
    need(driver, f"arch:{arch}")
    need(reference, f"arch:{arch}", role="reference")
    return Built(reference, model_dirs[arch]), Built(driver, model_dirs[arch])


@pytest.mark.spec("ENC-1", "ENC-2", "ENC-3", "ENC-4", "API-2")
@pytest.mark.conformance(method="base", block="-")
@given(data=st.data())
def test_base_model(driver, reference, model_dirs, arch, data):
    """No adapter: the plain encoder."""
    ref, dut = _both(driver, reference, model_dirs, arch)
    shape = data.draw(batch_shapes(), label="batch")
    ids, mask = batch(arch, data.draw(seeds, label="seed"), shape)
    record("base", "-", arch)
    rtol, atol = tolerance("differential", driver)
    assert_close(dut.run(None, ids, mask), ref.run(None, ids, mask), rtol=rtol, atol=atol, what="last_hidden_state",
                 context=f"{arch} base B,T={shape[:2]}")


@pytest.mark.conformance(block="single")
@pytest.mark.parametrize("method", METHODS)
@given(data=st.data())
def test_single_adapter(driver, reference, model_dirs, arch, method, data):
    """One adapter of ``method`` with a drawn config, active alone."""
    ref, dut = _both(driver, reference, model_dirs, arch)
    need_method(method, driver, reference, arch=arch)
    cfg = data.draw(configs_for(method, arch), label="config")
    shape = data.draw(batch_shapes(min_len=method.min_tokens(cfg)), label="batch")
    seed = data.draw(seeds, label="seed")
    # bottlenecks also get large weights: saturating activations (relu6's cap at 6, tanh, sigmoid) only show
    # there (a relu6 without its cap passed every check at the default scale)
    scale = data.draw(st.sampled_from([0.3, 1.0]), label="weight scale") if method.name == "bottleneck" else 0.3
    ctx = describe_case(method.name, arch, [("a", cfg)], single("a"), shape, seed) + f" weight scale {scale}"
    add_perturbed(ref, [dut], [("a", cfg)], seed, scale=scale)
    ids, mask = batch(arch, seed, shape)
    record(method.name, "single", arch)
    rtol, atol = tolerance("differential", driver)
    assert_close(dut.run(single("a"), ids, mask), ref.run(single("a"), ids, mask), rtol=rtol, atol=atol,
                 what="last_hidden_state", context=ctx)


@pytest.mark.spec("COMP-1", "COMP-STACK", "COMP-FUSE", "COMP-SPLIT", "COMP-BATCHSPLIT", "COMP-PARALLEL",
                  "COMP-MULTITASK", "COMP-AVERAGE")
@pytest.mark.conformance(block="tree")
@pytest.mark.parametrize("method", METHODS)
@given(data=st.data())
def test_composition_tree(driver, reference, model_dirs, arch, method, data):
    """A drawn composition tree (ALLOWED_NESTINGS, depth <= 2) over 3 adapters of ``method``."""
    ref, dut = _both(driver, reference, model_dirs, arch)
    need_method(method, driver, reference, arch=arch)
    if not runnable_blocks(method, driver, reference, arch=arch):
        pytest.skip(f"no block supported by both drivers (and adapters 1.3.0) for {method.name} on {arch}")
    cfgs = tree_configs(method, [data.draw(configs_for(method, arch), label=f"config {n}") for n in "abc"], arch)
    blocks = runnable_blocks(method, driver, reference, arch=arch, cfg=cfgs[0])
    if not blocks:
        record(method.name, "tree-skipped", arch)
        return
    shape = data.draw(batch_shapes(min_B=2, min_len=max(method.min_tokens(c) for c in cfgs)), label="batch")
    tree = data.draw(composition_trees(["a", "b", "c"], blocks, shape[0], shape[1],
                                               exclude=method.tree_exclusions), label="tree")
    used = sorted(set(tree_names(tree["setup"])))
    specs = [(n, c) for n, c in zip("abc", cfgs) if n in used]
    seed = data.draw(seeds, label="seed")
    ctx = describe_case(method.name, arch, specs, tree["setup"], shape, seed)
    add_perturbed(ref, [dut], specs, seed)
    if tree["fusions"]:
        need(driver, "op:fusion")
        fcfg = data.draw(fusion_configs(), label="fusion config")
        add_fusions(ref, [dut], tree["fusions"], fcfg, seed)
    kw = {}
    if tree["task_ids"] is not None:
        need(driver, "op:task_ids")
        kw["task_ids"] = np.asarray(tree["task_ids"])
    for b in tree["blocks"]:
        record(method.name, b, arch)
    ids, mask = batch(arch, seed, shape)
    rtol, atol = tolerance("differential", driver)
    assert_close(dut.run(tree["setup"], ids, mask, **kw), ref.run(tree["setup"], ids, mask, **kw), rtol=rtol,
                 atol=atol, what="last_hidden_state", context=ctx)


@st.composite
def fusion_configs(draw):
    """AdapterFusionConfig dicts: static / dynamic preset fields with every flag drawn (temperature off:
    it decays on every forward upstream, FUSION-1)."""
    return {"key": draw(st.booleans(), label="key"), "query": draw(st.booleans(), label="query"),
            "value": draw(st.booleans(), label="value"),
            "query_before_ln": draw(st.booleans(), label="query_before_ln"), "regularization": False,
            "residual_before": draw(st.booleans(), label="residual_before"), "temperature": False,
            "value_before_softmax": draw(st.booleans(), label="value_before_softmax"),
            "value_initialized": draw(st.booleans(), label="value_initialized"), "dropout_prob": None}


@pytest.mark.spec("FUSION-1", "COMP-FUSE")
@pytest.mark.conformance(method="bottleneck", block="Fuse")
@given(data=st.data())
def test_fusion(driver, reference, model_dirs, arch, data):
    """Fuse over 2-3 bottleneck adapters with a drawn fusion config and perturbed fusion weights."""
    ref, dut = _both(driver, reference, model_dirs, arch)
    need(driver, "method:bottleneck", "block:Fuse", "op:fusion")
    need(reference, "method:bottleneck", "block:Fuse", "op:fusion", role="reference")
    entry = REGISTRY["bottleneck"]
    n = data.draw(st.integers(2, 3), label="n adapters")
    names = ["a", "b", "c"][:n]
    specs = list(zip(names, tree_configs(entry, [data.draw(configs_for(entry, arch), label=f"config {x}")
                                                 for x in names], arch)))
    seed = data.draw(seeds, label="seed")
    shape = data.draw(batch_shapes(), label="batch")
    setup = {"type": "Fuse", "children": [{"type": "single", "children": [x]} for x in names]}
    ctx = describe_case("bottleneck", arch, specs, setup, shape, seed)
    add_perturbed(ref, [dut], specs, seed)
    add_fusions(ref, [dut], [names], data.draw(fusion_configs(), label="fusion config"), seed)
    ids, mask = batch(arch, seed, shape)
    record("bottleneck", "Fuse", arch)
    rtol, atol = tolerance("differential", driver)
    assert_close(dut.run(setup, ids, mask), ref.run(setup, ids, mask), rtol=rtol, atol=atol,
                 what="last_hidden_state", context=ctx)


@pytest.mark.spec("IO-10", "IO-11")
@pytest.mark.parametrize("direction", ["reference->driver", "driver->reference"])
@pytest.mark.conformance(block="io")
@pytest.mark.parametrize("method", METHODS)
@given(data=st.data())
def test_files_cross_load(driver, reference, model_dirs, arch, method, direction, data, tmp_path_factory):
    """An adapter saved by one side loads in the other and gives the same output there (decoder key paths too:
    GPT-2 h.{i}.attn.c_attn.loras..., LLaMA layers.{i}.self_attn...)."""
    ref, dut = _both(driver, reference, model_dirs, arch)
    need_method(method, driver, reference, arch=arch)
    src, dst = (ref, dut) if direction.startswith("reference") else (dut, ref)
    need(driver, "io:adapters-format")       # the files cross implementations: adapters' directory format
    need(reference, "io:adapters-format", role="reference")
    cfg = data.draw(configs_for(method, arch), label="config")
    seed = data.draw(seeds, label="seed")
    shape = data.draw(batch_shapes(min_len=method.min_tokens(cfg)), label="batch")
    ctx = describe_case(method.name, arch, [("a", cfg)], single("a"), shape, seed)
    if method.file_caveat(cfg) and "adapters" in (driver.name, reference.name):
        record(method.name, "io-skipped", arch)
        return
    add_perturbed(src, [], [("a", cfg)], seed)
    d = str(tmp_path_factory.mktemp("xload") / "a")
    src.drv.save_adapter(src.model, "a", d)
    try:
        name = dst.drv.load_adapter(dst.model, d)
    except Exception as e:  # noqa: BLE001
        if dst is dut or isinstance(e, Unsupported):
            raise                     # the driver cannot read adapters' directory: its own error
        raise UnreadableFile(f"the reference {reference.name!r} cannot load the directory {driver.name!r} saved "
                             f"({type(e).__name__}: {str(e)[:200]}), but should (io:adapters-format) [{ctx}]") from e
    ids, mask = batch(arch, seed, shape)
    record(method.name, "io", arch)
    rtol, atol = tolerance("differential", driver)
    assert_close(dst.run(single(name), ids, mask), src.run(single("a"), ids, mask), rtol=rtol, atol=atol,
                 what=f"last_hidden_state after {direction}", context=ctx)


# Configs that leave fields to their defaults: a dict with the architecture only (every driver), or one of
# adapters' preset strings (config:strings). Complete drawn dicts never reach a default; these do.
DEFAULT_CASES = [
    pytest.param({"architecture": "lora"}, "LORA-0", id="dict-lora"),
    pytest.param({"architecture": "prefix_tuning"}, "PREFIX-1", id="dict-prefix_tuning"),
    pytest.param("lora", "LORA-0", id="str-lora"),
    pytest.param("ia3", "LORA-0", id="str-ia3"),
    pytest.param("seq_bn", "BN-1", id="str-seq_bn"),
    pytest.param("double_seq_bn", "BN-1", id="str-double_seq_bn"),
    pytest.param("par_bn", "BN-1", id="str-par_bn"),
    pytest.param("prefix_tuning", "PREFIX-1", id="str-prefix_tuning"),
]


@pytest.mark.spec("CFG-2", "CFG-5")
@pytest.mark.conformance(method="defaults", block="single")
@pytest.mark.parametrize("config,spec_id", DEFAULT_CASES)
@settings(max_examples=1)
@given(data=st.data())
def test_defaults_reach_the_forward(driver, reference, model_dirs, arch, config, spec_id, data):
    """A config that leaves fields out gets adapters 1.3.0's defaults (dict defaults and preset values): the
    driver's output equals the reference's on the same perturbed weights."""
    method = config.split("[")[0] if isinstance(config, str) else config["architecture"]
    entry = REGISTRY["bottleneck" if method in ("seq_bn", "double_seq_bn", "par_bn") else method]
    need_method(entry, driver, reference, arch=arch)        # e.g. no prefix tuning on qwen2, as adapters 1.3.0
    ref, dut = _both(driver, reference, model_dirs, arch)
    if isinstance(config, str):
        need(driver, "config:strings")
        need(reference, "config:strings", role="reference")
    seed, shape = 4242, (3, 7, [7, 5, 2])
    ctx = describe_case("defaults", arch, [("a", config)], single("a"), shape, seed) + f" ({spec_id})"
    add_perturbed(ref, [dut], [("a", config)], seed)
    ids, mask = batch(arch, seed, shape)
    record("defaults", "single", arch)
    rtol, atol = tolerance("differential", driver)
    assert_close(dut.run(single("a"), ids, mask), ref.run(single("a"), ids, mask), rtol=rtol, atol=atol,
                 what="last_hidden_state", context=ctx)
