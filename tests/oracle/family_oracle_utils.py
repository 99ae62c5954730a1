"""Tiny random transformers models of the families added after BERT/GPT-2/LLaMA (odd sizes, eager attention,
every weight and bias perturbed, adapters.init applied). Only imported by oracle tests.
"""
from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch", reason="oracle: needs torch==2.13.0 (pip install -e .[oracle])")
adapters = pytest.importorskip("adapters", reason="oracle: needs adapters==1.3.0 (pip install -e .[oracle])")
transformers = pytest.importorskip("transformers", reason="oracle: needs transformers~=4.57.6")

import minadapters as ma  # noqa: E402
from decoder_oracle_utils import batch  # noqa: E402
from oracle_utils import assert_close, perturb_adapter, save_model  # noqa: E402

VOCAB = 101
DECODER_SIZES = dict(hidden_size=40, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                     intermediate_size=68, vocab_size=VOCAB, max_position_embeddings=64)


def _config(model_type, overrides):
    t = transformers
    if model_type == "distilbert":
        kw = dict(dim=36, n_layers=3, n_heads=4, hidden_dim=37, vocab_size=VOCAB, max_position_embeddings=64)
        return t.DistilBertConfig(**dict(kw, **overrides), attn_implementation="eager"), t.DistilBertModel
    if model_type == "electra":
        kw = dict(hidden_size=40, embedding_size=28, num_hidden_layers=3, num_attention_heads=4,
                  intermediate_size=37, vocab_size=VOCAB, max_position_embeddings=64)
        return t.ElectraConfig(**dict(kw, **overrides), attn_implementation="eager"), t.ElectraModel
    if model_type == "albert":
        kw = dict(hidden_size=40, embedding_size=28, num_hidden_layers=4, num_hidden_groups=2, num_attention_heads=4,
                  intermediate_size=37, vocab_size=VOCAB, max_position_embeddings=64)
        return t.AlbertConfig(**dict(kw, **overrides), attn_implementation="eager"), t.AlbertModel
    if model_type == "bert-generation":
        kw = dict(hidden_size=40, num_hidden_layers=3, num_attention_heads=4, intermediate_size=37,
                  vocab_size=VOCAB, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)
        return t.BertGenerationConfig(**dict(kw, **overrides), attn_implementation="eager"), t.BertGenerationEncoder
    if model_type in ("deberta", "deberta-v2"):
        # relative attention with both terms, a span (6) shorter than the 9-token batches, token types
        kw = dict(hidden_size=40, num_hidden_layers=3, num_attention_heads=4,
                  intermediate_size=37, vocab_size=VOCAB, max_position_embeddings=64, type_vocab_size=2,
                  relative_attention=True, pos_att_type=["c2p", "p2c"], max_relative_positions=6)
        if model_type == "deberta":
            return t.DebertaConfig(**dict(kw, **overrides), attn_implementation="eager"), t.DebertaModel
        kw.update(position_buckets=4, share_att_key=True, norm_rel_ebd="layer_norm", max_relative_positions=16,
                  position_biased_input=False)                           # deberta-v3's options, small
        return t.DebertaV2Config(**dict(kw, **overrides), attn_implementation="eager"), t.DebertaV2Model
    if model_type == "xmod":       # two languages; adapters.init deletes the language adapters
        kw = dict(hidden_size=40, num_hidden_layers=3, num_attention_heads=4, intermediate_size=37, vocab_size=VOCAB,
                  max_position_embeddings=64, pad_token_id=0, languages=["en_XX", "de_DE"], adapter_reduction_factor=4)
        return t.XmodConfig(**dict(kw, **overrides), attn_implementation="eager"), t.XmodModel
    if model_type == "gptj":       # head_dim 10, rotary on 6 of them (interleaved pairs), lm_head with a bias
        kw = dict(n_embd=40, n_layer=3, n_head=4, rotary_dim=6, n_inner=68, vocab_size=VOCAB, n_positions=64,
                  pad_token_id=0, bos_token_id=1, eos_token_id=2)
        return t.GPTJConfig(**dict(kw, **overrides), attn_implementation="eager"), t.GPTJModel
    classes = {"mistral": (t.MistralConfig, t.MistralModel), "qwen2": (t.Qwen2Config, t.Qwen2Model),
               "qwen3": (t.Qwen3Config, t.Qwen3Model), "gemma": (t.GemmaConfig, t.GemmaModel)}
    cfg_cls, model_cls = classes[model_type]
    return (cfg_cls(**dict(DECODER_SIZES, **overrides), attn_implementation="eager", pad_token_id=0,
                    eos_token_id=2, bos_token_id=1), model_cls)


def gemma_interface():
    """adapters 1.3.0 has no interface for Gemma (v1): the declaration a user passes to adapters.init, the same data
    as minadapters' GEMMA record (LLaMA-like, up_proj = intermediate, pre-norms only)."""
    return adapters.AdapterModelInterface(
        adapter_methods=["bottleneck", "lora", "reft", "invertible"], model_embeddings="embed_tokens",
        model_layers="layers", layer_self_attn="self_attn", layer_cross_attn=None, attn_k_proj="k_proj",
        attn_q_proj="q_proj", attn_v_proj="v_proj", attn_o_proj="o_proj", layer_intermediate_proj="mlp.up_proj",
        layer_output_proj="mlp.down_proj", layer_pre_self_attn="input_layernorm",
        layer_pre_ffn="post_attention_layernorm", layer_ln_1=None, layer_ln_2=None)


def hf_family_model(model_type, seed=0, scale=0.05, lm=False, **overrides):
    """A small random transformers base model of ``model_type``, every parameter perturbed (biases nonzero);
    ``lm``: the ...ForCausalLM class."""
    torch.manual_seed(seed)
    cfg, cls = _config(model_type, overrides)
    if lm:
        cls = getattr(transformers, cls.__name__.replace("Model", "ForCausalLM"))
    model = cls(cfg)
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.add_(torch.randn_like(p) * scale)
    model.eval()
    adapters.init(model, interface=gemma_interface() if model_type == "gemma" else None)
    return model


def torch_hidden(model, ids, mask, **kw):
    if model.config.model_type == "bert-generation" and model.config.is_decoder:
        kw.setdefault("use_cache", False)   # adapters 1.3.0's layer concatenates the 4.57 Cache object: TypeError
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids), attention_mask=None if mask is None else torch.tensor(mask), **kw)
    return out.last_hidden_state.numpy()


def relink_pool(model):
    from adapters.methods.prefix_tuning import PrefixTuningLayer
    for mod in model.modules():
        if isinstance(mod, PrefixTuningLayer) and hasattr(model, "prefix_tuning"):
            mod.set_pool(model.prefix_tuning)


class Env:
    """One upstream model + our model loaded from its weights; adapters added to both, weights perturbed."""

    def __init__(self, model_type, tmp, **overrides):
        self.model_type, self.tmp, self.n = model_type, tmp, 0
        self.torch_model = hf_family_model(model_type, **overrides)
        save_model(self.torch_model, os.path.join(tmp, "model"))
        relink_pool(self.torch_model)
        self.ours = ma.AutoModel.from_pretrained(os.path.join(tmp, "model"))

    def add(self, config):
        self.n += 1
        name = f"a{self.n}"
        self.torch_model.add_adapter(name, config=config)
        perturb_adapter(self.torch_model, name, seed=self.n)
        self.torch_model.eval()
        d = os.path.join(self.tmp, name)
        self.torch_model.save_adapter(d, name)
        assert self.ours.load_adapter(d) == name
        return name

    def compare(self, theirs, ours, what="", sides=("left", "right"), B=3):
        self.torch_model.set_active_adapters(theirs)
        self.ours.active_adapters = ours
        for side in sides:
            ids, mask = batch(pad_side=side, B=B, seed=self.n)
            got = self.ours(ids, attention_mask=mask).last_hidden_state
            assert_close(got, torch_hidden(self.torch_model, ids, mask), what=f"{self.model_type} {what} {side}")


def preset_counts(preset):
    """(ours, adapters') adapter_summary parameter counts of an `ARCH_PRESETS` entry with a LoRA, a bottleneck, an
    IA3 and (where supported) a prefix-tuning adapter; adapters' model built on the meta device."""
    from minadapters.summary import ARCH_PRESETS
    from minadapters.tiny import shell_model
    raw = dict(ARCH_PRESETS[preset])
    cfg = transformers.AutoConfig.for_model(**raw)
    ours = shell_model(raw)
    configs = [("l", "lora[r=8, intermediate_lora=True]"), ("b", "seq_bn"), ("i", "ia3")]
    if "prefix_tuning" in ours.arch.methods:
        configs.append(("p", "prefix_tuning[prefix_length=20]"))
    with torch.device("meta"):
        m = transformers.AutoModel.from_config(cfg)
        adapters.init(m, interface=gemma_interface() if raw["model_type"] == "gemma" else None)
        for name, config in configs:
            m.add_adapter(name, config=config)
            ours.add_adapter(name, config=config)
    want = {r["name"]: r["#param"] for r in m.adapter_summary(as_dict=True)}
    got = {r["name"]: r["#param"] for r in ours.adapter_summary(as_dict=True)}
    return got, want
