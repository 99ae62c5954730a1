"""Oracle: invertible adapters (NICE) match adapters 1.3.0; GLOW parameters match key for key.

Spec: INV-1 .. INV-4. Upstream's GLOW forward raises on any input (spec INV-2), so GLOW is checked for keys,
shapes and file loading only.
"""
import os

import numpy as np
import pytest

import minadapters as ma
from minadapters.composition import Stack
from minadapters.context import ForwardState
from oracle_utils import assert_close, batch, hf_model, perturb_adapter, save_model, torch_forward

import torch  # noqa: E402

MODEL_SETUPS = [("bert", {}), ("roberta", {}), ("bert", dict(hidden_size=45, num_attention_heads=3))]
CASES = [
    "seq_bn_inv",
    "double_seq_bn_inv",
    "seq_bn_inv[non_linearity='tanh', inv_adapter_reduction_factor=4]",
    "double_seq_bn_inv[non_linearity='gelu', inv_adapter_reduction_factor=3.0, reduction_factor=8]",
    "seq_bn_inv[inv_adapter_reduction_factor=0.5, non_linearity='swish']",
    "seq_bn[inv_adapter='nice', inv_adapter_reduction_factor=2, mh_adapter=True, output_adapter=False]",
]


class Env:
    def __init__(self, model_type, sizes, tmp):
        self.model_type, self.tmp = model_type, tmp
        self.torch_model = hf_model(model_type, **sizes)
        save_model(self.torch_model, os.path.join(tmp, "model"))
        self.ours = ma.AutoModel.from_pretrained(os.path.join(tmp, "model"))
        self.n = 0

    def compare(self, name, what, setup=None):
        self.torch_model.set_active_adapters(setup or name)
        self.ours.active_adapters = setup or name
        for pad in ("right", "left"):
            ids, mask = batch(B=3, T=8, pad_side=pad, model_type=self.model_type, seed=self.n)
            expected = torch_forward(self.torch_model, ids, mask).last_hidden_state.numpy()
            got = self.ours(input_ids=ids, attention_mask=mask).last_hidden_state
            assert_close(got, expected, what=f"{self.model_type} {what} ({pad})")


@pytest.fixture(scope="module", params=MODEL_SETUPS, ids=["bert", "roberta", "bert45"])
def env(request, tmp_path_factory):
    mt, sizes = request.param
    return Env(mt, sizes, str(tmp_path_factory.mktemp(mt)))


@pytest.mark.spec("INV-1")
@pytest.mark.spec("INV-4")
@pytest.mark.parametrize("config", CASES)
def test_upstream_file_forward(env, config):
    env.n += 1
    name = f"i{env.n}"
    m = env.torch_model
    m.add_adapter(name, config=config)
    perturb_adapter(m, name, seed=env.n, scale=0.3)
    m.eval()
    d = os.path.join(env.tmp, name)
    m.save_adapter(d, name, use_safetensors=env.n % 2 == 1)
    env.ours.load_adapter(d)
    env.compare(name, config)


@pytest.mark.spec("INV-1")
def test_inverse_matches_upstream_reverse(env):
    env.n += 1
    name = f"v{env.n}"
    m = env.torch_model
    m.add_adapter(name, config="seq_bn_inv[non_linearity='tanh']")
    perturb_adapter(m, name, seed=env.n, scale=0.3)
    m.eval()
    d = os.path.join(env.tmp, name)
    m.save_adapter(d, name)
    env.ours.load_adapter(d)
    x = np.random.default_rng(0).standard_normal((2, 5, env.ours.hidden_size)).astype(np.float32)
    with torch.no_grad():
        fwd = m.invertible_adapters[name](torch.tensor(x)).numpy()
        rev = m.invertible_adapters[name](torch.tensor(x), rev=True).numpy()
    inv = env.ours.model_level["invertible"]
    assert_close(inv.inverse(name, x), rev, what="inverse")
    assert_close(inv.inverse(name, fwd), x, what="round trip")


@pytest.mark.spec("INV-4")
def test_first_adapter_of_stack_decides(env):
    env.n += 1
    a, b = f"s{env.n}a", f"s{env.n}b"
    m = env.torch_model
    m.add_adapter(a, config="seq_bn")
    m.add_adapter(b, config="seq_bn_inv")
    perturb_adapter(m, a, seed=1)
    perturb_adapter(m, b, seed=2, scale=0.3)
    m.eval()
    for n in (a, b):
        m.save_adapter(os.path.join(env.tmp, n), n)
        env.ours.load_adapter(os.path.join(env.tmp, n))
    import adapters.composition as ac
    for order in ((a, b), (b, a)):
        m.set_active_adapters(ac.Stack(*order))
        env.ours.active_adapters = Stack(*order)
        ids, mask = batch(B=2, T=6, model_type=env.model_type)
        expected = torch_forward(m, ids, mask).last_hidden_state.numpy()
        assert_close(env.ours(input_ids=ids, attention_mask=mask).last_hidden_state, expected, what=str(order))


@pytest.mark.spec("INV-2")
def test_glow_keys_and_shapes_match_upstream(env):
    env.n += 1
    name = f"g{env.n}"
    m = env.torch_model
    m.add_adapter(name, config="seq_bn_inv[inv_adapter='glow', inv_adapter_reduction_factor=4]")
    d = os.path.join(env.tmp, name)
    m.save_adapter(d, name)
    env.ours.load_adapter(d)          # checks every key and shape of the file
    theirs = {f"invertible_adapters.{name}.{k}": tuple(v.shape)
              for k, v in m.invertible_adapters[name].state_dict().items()}
    ours = {k: v.shape for k, v in env.ours.adapter_state_dict(name).items() if k.startswith("invertible")}
    assert ours == theirs
    x = np.random.default_rng(0).standard_normal((2, 3, env.ours.hidden_size))
    inv = env.ours.model_level["invertible"]
    y, _ = inv.forward(x, None, ForwardState(setup=Stack(name)))
    np.testing.assert_allclose(inv.inverse(name, y), x, atol=1e-9)


@pytest.mark.spec("INV-1")
def test_ours_to_upstream(env):
    env.n += 1
    name = f"o{env.n}"
    env.ours.add_adapter(name, "double_seq_bn_inv[non_linearity='tanh']")
    rng = np.random.default_rng(env.n)
    for k, (dct, leaf) in env.ours.adapter_param_refs(name).items():
        dct[leaf] = dct[leaf] + (rng.standard_normal(dct[leaf].shape) * 0.3).astype(np.float32)
    d = os.path.join(env.tmp, name + "_ours")
    env.ours.save_adapter(d, name)
    env.torch_model.load_adapter(d)
    env.torch_model.eval()
    env.compare(name, "ours->upstream")
