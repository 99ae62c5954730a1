"""Oracle: prompt tuning (random_uniform and from_string init, combine prefix / prefix_after_bos, with prefix
tuning in one union, files both ways, load_as) matches adapters 1.3.0.

Spec: PROMPT-1 .. PROMPT-4. Model: hidden 40, 3 layers, perturbed base weights; batches with right and left padding.
"""
import json
import os

import numpy as np
import pytest

import minadapters as ma

pytest.importorskip("adapters", reason="oracle: needs adapters==1.3.0 and torch (pip install -e .[oracle])")
pytest.importorskip("tokenizers", reason="prompt from_string: needs the tokenizers package")
from adapters import ConfigUnion, PrefixTuningConfig, PromptTuningConfig  # noqa: E402
from adapters.methods.prefix_tuning import PrefixTuningLayer as UpstreamLayer  # noqa: E402
from oracle_utils import assert_close, batch, hf_model, perturb_adapter, save_model, torch_forward  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers, processors  # noqa: E402

MODEL_TYPES = ["bert", "roberta"]
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + [f"w{i}" for i in range(60)]


def write_tokenizer(directory):
    """A word-level tokenizer.json with a [CLS] $A [SEP] template (special tokens count, as upstream's call)."""
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.save(os.path.join(directory, "tokenizer.json"))
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast"}, f)


class Env:
    def __init__(self, model_type, tmp):
        self.model_type, self.tmp, self.n = model_type, tmp, 0
        self.torch_model = hf_model(model_type)
        mdir = save_model(self.torch_model, os.path.join(tmp, "model"))
        for mod in self.torch_model.modules():        # save_pretrained drops the prefix pool aliases
            if isinstance(mod, UpstreamLayer):
                mod.set_pool(self.torch_model.prefix_tuning)
        write_tokenizer(mdir)
        self.torch_model.config.tokenizer_name_or_path = mdir
        self.ours = ma.AutoModel.from_pretrained(mdir)

    def add(self, config, perturb=True, load_as=None):
        self.n += 1
        name = f"q{self.n}"
        self.torch_model.add_adapter(name, config=config)
        if perturb:
            perturb_adapter(self.torch_model, name, seed=self.n)
        d = os.path.join(self.tmp, name)
        self.torch_model.save_adapter(d, name)
        self.ours.load_adapter(d, load_as=load_as)
        return name

    def compare(self, theirs, ours, pad_side="right", what=""):
        ids, mask = batch(B=3, T=8, seed=self.n, pad_side=pad_side, model_type=self.model_type)
        self.torch_model.set_active_adapters(theirs)
        self.ours.active_adapters = ours
        exp = torch_forward(self.torch_model, ids, mask)
        got = self.ours(input_ids=ids, attention_mask=mask)
        assert_close(got.last_hidden_state, exp.last_hidden_state.numpy(), what=f"{self.model_type} {what}")
        assert_close(got.pooler_output, exp.pooler_output.numpy(), what=f"{self.model_type} {what} pooler")
        return got


@pytest.fixture(scope="module", params=MODEL_TYPES)
def env(request, tmp_path_factory):
    return Env(request.param, str(tmp_path_factory.mktemp(request.param)))


@pytest.mark.spec("PROMPT-2")
@pytest.mark.spec("PROMPT-3")
@pytest.mark.parametrize("combine", ["prefix", "prefix_after_bos"])
@pytest.mark.parametrize("length", [1, 4, 7])
@pytest.mark.parametrize("pad_side", ["right", "left"])
def test_random_uniform(env, combine, length, pad_side):
    name = env.add(PromptTuningConfig(prompt_length=length, combine=combine))
    got = env.compare(name, name, pad_side=pad_side, what=f"P={length} {combine} {pad_side}")
    assert got.last_hidden_state.shape[1] == 8 + length


@pytest.mark.spec("PROMPT-1")
@pytest.mark.parametrize("length,text", [(7, "w1 w5 w9"), (3, "w1 w2 w3 w4 w5"), (5, "w7 zz")])
def test_from_string_init_equals_upstream(env, length, text):
    """Unperturbed: our initial prompt equals upstream's exactly (tokenizer ids incl. specials, repeated, cut)."""
    cfg = dict(prompt_length=length, prompt_init="from_string", prompt_init_text=text)
    env.n += 1
    name = f"s{env.n}"
    env.torch_model.add_adapter(name, config=PromptTuningConfig(**cfg))
    env.ours.add_adapter(name, ma.PromptTuningConfig(**cfg))
    theirs = env.torch_model.prompt_tuning.prompt_tunings[name].prompt_embedding.weight.detach().numpy()
    ours = env.ours.adapter_state_dict(name)[f"prompt_tuning.prompt_tunings.{name}.prompt_embedding.weight"]
    np.testing.assert_array_equal(ours, theirs)
    env.compare(name, name, what=f"from_string {text!r}")


@pytest.mark.spec("PROMPT-2")
@pytest.mark.parametrize("combine", ["prefix", "prefix_after_bos"])
def test_union_prompt_and_prefix(env, combine):
    """Prompt tuning and prefix tuning in one adapter: the prefix keys come before the prompt positions."""
    name = env.add(ConfigUnion(PromptTuningConfig(prompt_length=3, combine=combine),
                               PrefixTuningConfig(prefix_length=4, bottleneck_size=6, use_gating=True)))
    env.compare(name, name, pad_side="left", what=f"prompt+prefix {combine}")


@pytest.mark.spec("PROMPT-2")
def test_only_first_adapter_of_setup(env):
    """Stack(other, prompt): the prompt is not the first adapter, so upstream (and we) add no prompt."""
    a = env.add(PrefixTuningConfig(prefix_length=2, bottleneck_size=4))
    b = env.add(PromptTuningConfig(prompt_length=3))
    import adapters.composition as ac
    got = env.compare(ac.Stack(a, b), ma.Stack(a, b), what="Stack(prefix, prompt)")
    assert got.last_hidden_state.shape[1] == 8
    got = env.compare(ac.Stack(b, a), ma.Stack(b, a), what="Stack(prompt, prefix)")
    assert got.last_hidden_state.shape[1] == 11


@pytest.mark.spec("PROMPT-4")
def test_ours_to_adapters(env, tmp_path):
    env.n += 1
    name = f"o{env.n}"
    env.ours.add_adapter(name, ma.PromptTuningConfig(prompt_length=5, combine="prefix_after_bos"))
    env.ours.save_adapter(str(tmp_path / name), name)
    assert env.torch_model.load_adapter(str(tmp_path / name)) == name
    env.compare(name, name, pad_side="left", what="ours->adapters")


@pytest.mark.spec("PROMPT-4")
def test_load_as_keeps_prompt(env):
    """Our load_as keeps the prompt weights (upstream's load_as leaves them at their fresh init: not renamed)."""
    name = env.add(PromptTuningConfig(prompt_length=4))
    d = os.path.join(env.tmp, name)
    new = name + "_as"
    env.ours.load_adapter(d, load_as=new)
    np.testing.assert_array_equal(
        env.ours.adapter_state_dict(new)[f"prompt_tuning.prompt_tunings.{new}.prompt_embedding.weight"],
        env.torch_model.prompt_tuning.prompt_tunings[name].prompt_embedding.weight.detach().numpy())
    env.compare(name, new, what="load_as == original")
    env.torch_model.load_adapter(d, load_as=new)            # upstream: the documented deviation
    theirs = env.torch_model.prompt_tuning.prompt_tunings[new].prompt_embedding.weight.detach().numpy()
    assert not np.allclose(theirs, env.torch_model.prompt_tuning.prompt_tunings[name].prompt_embedding.weight
                           .detach().numpy())
