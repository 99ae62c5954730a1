"""Oracle: every bottleneck preset and a spread of BnConfig flag combinations match adapters 1.3.0.

Spec: BN-1 .. BN-5, INIT-1, IO-10. Model: odd sizes (hidden 40, 3 layers, FFN 72), perturbed base weights and
biases, perturbed adapter weights, padded batch of 3.
"""
import itertools
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minadapters as ma

pytest.importorskip("adapters", reason="oracle: needs adapters==1.3.0 and torch (pip install -e .[oracle])")
from oracle_utils import OracleEnv, assert_close, perturb_adapter, torch_forward

MODEL_TYPES = ["bert", "roberta"]
PRESETS = ["seq_bn", "double_seq_bn", "par_bn", "scaled_par_bn", "pfeiffer", "houlsby", "parallel", "scaled_parallel"]
FLAG_CASES = [
    "seq_bn[use_gating=True, ln_before=True, ln_after=True]",
    "seq_bn[residual_before_ln=False]",
    "seq_bn[residual_before_ln='post_add']",
    "seq_bn[original_ln_before=False, original_ln_after=False]",
    "double_seq_bn[scaling='channel', adapter_residual_before_ln=True, ln_after=True]",
    "seq_bn[reduction_factor={'1': 4, 'default': 8}, leave_out=[0], mh_adapter=True, non_linearity='gelu']",
    "par_bn[ln_after=True, use_gating=True, scaling='learned']",
    "par_bn[ln_before=True, scaling=0.5, init_weights='bert']",
    "seq_bn[non_linearity='tanh', reduction_factor=3, init_weights='houlsby']",
    "seq_bn[non_linearity='leakyrelu', reduction_factor=0.5]",
    "seq_bn[non_linearity='gelu_new', reduction_factor=100]",
    "double_seq_bn[non_linearity='sigmoid', use_gating=True, residual_before_ln=False, ln_before=True]",
    "seq_bn[scaling=2.0, init_weights='mam_adapter', is_parallel=True]",
]


class Env(OracleEnv):
    """OracleEnv plus this module's add-and-compare helper."""

    def check(self, config, use_safetensors=False):
        self.n += 1
        name = f"a{self.n}"
        m = self.torch_model
        m.add_adapter(name, config=config)
        perturb_adapter(m, name, seed=self.n)
        m.set_active_adapters(name)
        expected = torch_forward(m, self.ids, self.mask).last_hidden_state.numpy()
        d = os.path.join(self.tmp, name)
        m.save_adapter(d, name, use_safetensors=use_safetensors)
        assert self.ours.load_adapter(d, use_safetensors=use_safetensors) == name
        self.ours.active_adapters = name
        got = self.ours(input_ids=self.ids, attention_mask=self.mask).last_hidden_state
        assert_close(got, expected, what=f"{self.model_type} {config}")
        return name


@pytest.fixture(scope="module", params=MODEL_TYPES)
def env(request, tmp_path_factory):
    return Env(request.param, str(tmp_path_factory.mktemp(request.param)))


@pytest.mark.spec("BN-1")
def test_base_model_parity(env):
    expected = torch_forward(env.torch_model, env.ids, env.mask)
    env.torch_model.set_active_adapters(None)
    env.ours.active_adapters = None
    out = env.ours(input_ids=env.ids, attention_mask=env.mask)
    assert_close(out.last_hidden_state, expected.last_hidden_state.numpy(), rtol=1e-5, what="base")
    assert_close(out.pooler_output, expected.pooler_output.numpy(), rtol=1e-5, what="pooler")


@pytest.mark.parametrize("config", PRESETS)
def test_preset(env, config):
    env.check(config)


@pytest.mark.parametrize("config", FLAG_CASES)
def test_flag_combination(env, config):
    env.check(config)


def test_safetensors_file(env):
    env.check("double_seq_bn", use_safetensors=True)


_flags = st.fixed_dictionaries({
    "original_ln_before": st.booleans(), "original_ln_after": st.booleans(),
    "residual_before_ln": st.sampled_from([True, False]), "adapter_residual_before_ln": st.booleans(),
    "ln_before": st.booleans(), "ln_after": st.booleans(), "mh_adapter": st.booleans(),
    "is_parallel": st.booleans(), "use_gating": st.booleans(),
    "scaling": st.sampled_from([1.0, 0.7, "learned", "channel"]),
    "non_linearity": st.sampled_from(["relu", "swish", "gelu", "tanh", "quick_gelu", "relu6", "mish"]),
    "reduction_factor": st.sampled_from([2, 5, 16, 40]),
})


@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(flags=_flags)
def test_drawn_flags(env, flags):
    """Hypothesis-drawn BnConfig flag combinations (12 per architecture)."""
    cfg = dict(flags, output_adapter=True)
    ma.BnConfig(**cfg)  # our class accepts it
    env.check(dict(cfg))


def test_ours_to_adapters(env, tmp_path):
    """Files we write load in adapters 1.3.0 and give the same output there (both formats). Spec: IO-10."""
    import adapters  # noqa: F401
    for j, (config, st_) in enumerate(itertools.product(["seq_bn", "double_seq_bn[use_gating=True]"], [False, True])):
        name = f"mine{j}"
        env.ours.add_adapter(name, config=config)
        for k, (d, leaf) in env.ours.adapter_param_refs(name).items():
            d[leaf] = d[leaf] + np.random.default_rng(j).normal(0, 0.1, d[leaf].shape).astype(np.float32)
        env.ours.active_adapters = name
        got = env.ours(input_ids=env.ids, attention_mask=env.mask).last_hidden_state
        env.ours.save_adapter(tmp_path / name, name, use_safetensors=st_)
        m = env.torch_model
        assert m.load_adapter(str(tmp_path / name), use_safetensors=st_) == name
        m.set_active_adapters(name)
        expected = torch_forward(m, env.ids, env.mask).last_hidden_state.numpy()
        assert_close(got, expected, what=f"ours->adapters {config} safetensors={st_}")
