"""Models for trying things out: a small random Hugging Face encoder directory (config.json, model.safetensors,
tokenizer.json) for the README's first command and for tests, not a trained model; and a weightless shell of any
supported architecture, for parameter counts (``minadapters summary``).
"""
from __future__ import annotations

import os

import numpy as np
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from .io.files import atomic_write_json
from .io.safetensors_io import save_safetensors
from .model import AdapterModel, AutoModel
from .models import architecture
from .models import bart, bert, t5

DEMO_INIT_STD = 0.05  # std of the random base weights (and of the LayerNorm gains around 1) of a tiny model
TINY_MAX_TOKENS = 64  # longest input a tiny model takes
TINY_SEQ2SEQ_STD = 0.3  # larger weights for the tiny BART, so its layers (not only the tied embedding) pick tokens
DEMO_ADAPTER_NOISE = 0.1  # std of the noise added to a fresh demo adapter, so that it is not the identity

WORDS = ("the a an of to and in is it that for on with as was be by this are or from at hello adapters world "
         "model text some more small random bert roberta numpy torch layer head token").split()


def _tokenizer(directory: str, model_type: str) -> list:
    if model_type == "bert":
        special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        cls_tok, sep_tok, unk = "[CLS]", "[SEP]", "[UNK]"
    else:
        special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        cls_tok, sep_tok, unk = "<s>", "</s>", "<unk>"
    vocab = {w: i for i, w in enumerate(special + list(WORDS))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(special)               # so decode(skip_special_tokens=True) drops them
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls_tok} $A {sep_tok}", pair=f"{cls_tok} $A {sep_tok} $B:1 {sep_tok}:1",
        special_tokens=[(cls_tok, vocab[cls_tok]), (sep_tok, vocab[sep_tok])])
    tok.save(os.path.join(directory, "tokenizer.json"))
    return list(vocab)


def _random_weights(shapes: dict, seed: int, std: float = DEMO_INIT_STD) -> dict:
    rng = np.random.default_rng(seed)
    weights = {}
    for k, s in shapes.items():
        gain = k.endswith(("LayerNorm.weight", "layer_norm.weight", "layernorm_embedding.weight"))
        weights[k] = (1 + DEMO_INIT_STD * rng.standard_normal(s) if gain else std * rng.standard_normal(s))
        weights[k] = weights[k].astype(np.float32)
    return weights


def write_tiny_bart(directory, seed: int = 0, hidden: int = 32, layers: int = 2, heads: int = 4,
                    ffn: int = 37) -> str:
    """Create ``directory`` with a random BART (encoder-decoder; <s>=0, <pad>=1, </s>=2 the decoder start and eos);
    returns the directory path. Spec: ENCDEC-5 (``minadapters run`` generates with it)."""
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    vocab = _tokenizer(directory, "bart")
    raw = {"model_type": "bart", "architectures": ["BartModel"], "d_model": hidden, "encoder_layers": layers,
           "decoder_layers": layers, "encoder_attention_heads": heads, "decoder_attention_heads": heads,
           "encoder_ffn_dim": ffn, "decoder_ffn_dim": ffn, "vocab_size": len(vocab),
           "max_position_embeddings": TINY_MAX_TOKENS, "activation_function": "gelu", "scale_embedding": False,
           "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2, "decoder_start_token_id": 2,
           "forced_eos_token_id": 2, "tie_word_embeddings": True}
    cfg = bart.BartConfig.from_dict(raw)
    save_safetensors(os.path.join(directory, "model.safetensors"),
                     _random_weights(bart.expected_shapes(cfg), seed, TINY_SEQ2SEQ_STD))
    atomic_write_json(os.path.join(directory, "config.json"), raw)
    return directory


def write_tiny_t5(directory, seed: int = 0, hidden: int = 32, layers: int = 2, heads: int = 4, ffn: int = 37,
                  model_type: str = "t5") -> str:
    """Create ``directory`` with a random T5 (ReLU FFN, tied) or MT5 (gated-GELU, untied LM head); d_kv = 6 so that
    heads · d_kv ≠ d_model; <s>=0 the decoder start, <pad>=1, </s>=2 eos. Spec: T5-1 (``minadapters run``)."""
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    vocab = _tokenizer(directory, model_type)
    raw = {"model_type": model_type, "architectures": ["T5ForConditionalGeneration" if model_type == "t5"
                                                       else "MT5ForConditionalGeneration"],
           "d_model": hidden, "d_kv": 6, "d_ff": ffn, "num_layers": layers, "num_decoder_layers": layers,
           "num_heads": heads, "relative_attention_num_buckets": 16, "relative_attention_max_distance": 32,
           "vocab_size": len(vocab), "feed_forward_proj": "relu" if model_type == "t5" else "gated-gelu",
           "tie_word_embeddings": model_type == "t5", "pad_token_id": 1, "eos_token_id": 2,
           "decoder_start_token_id": 0, "layer_norm_epsilon": 1e-6}
    cfg = t5.T5Config.from_dict(raw)
    shapes = dict(t5.expected_shapes(cfg))
    if not cfg.tie_word_embeddings:
        shapes["lm_head.weight"] = (cfg.vocab_size, hidden)
    save_safetensors(os.path.join(directory, "model.safetensors"), _random_weights(shapes, seed, TINY_SEQ2SEQ_STD))
    atomic_write_json(os.path.join(directory, "config.json"), raw)
    # T5 has no position table; its tokenizers declare the length (t5-small: 512), which run truncates to
    atomic_write_json(os.path.join(directory, "tokenizer_config.json"), {"model_max_length": TINY_MAX_TOKENS})
    return directory


def write_tiny_model(directory, model_type: str = "bert", seed: int = 0, hidden: int = 32, layers: int = 2,
                     heads: int = 4, ffn: int = 37) -> str:
    """Create ``directory`` with a random ``model_type`` model (bert, roberta; bart, t5, mt5: ``write_tiny_bart``,
    ``write_tiny_t5``); returns
    the directory path."""
    if model_type == "bart":
        return write_tiny_bart(directory, seed=seed, hidden=hidden, layers=layers, heads=heads, ffn=ffn)
    if model_type in ("t5", "mt5"):
        return write_tiny_t5(directory, seed=seed, hidden=hidden, layers=layers, heads=heads, ffn=ffn,
                             model_type=model_type)
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    vocab = _tokenizer(directory, model_type)
    pad = 0 if model_type == "bert" else 1
    # RoBERTa numbers positions from pad_token_id + 1, so its table needs pad + 1 rows more than
    # the tokens it takes (BERT, pad 0, keeps one spare row).
    raw = {"model_type": model_type, "architectures": ["BertModel" if model_type == "bert" else "RobertaModel"],
           "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
           "intermediate_size": ffn, "vocab_size": len(vocab), "max_position_embeddings": TINY_MAX_TOKENS + pad + 1,
           "type_vocab_size": 2 if model_type == "bert" else 1, "layer_norm_eps": 1e-12, "hidden_act": "gelu",
           "pad_token_id": pad, "position_embedding_type": "absolute"}
    cfg = bert.EncoderConfig.from_dict(raw)
    rng = np.random.default_rng(seed)
    shapes = dict(bert.expected_shapes(cfg), **{"pooler.dense.weight": (hidden, hidden), "pooler.dense.bias": (hidden,)})
    weights = {}
    for k, s in shapes.items():
        if k.endswith("LayerNorm.weight"):
            weights[k] = (1 + DEMO_INIT_STD * rng.standard_normal(s)).astype(np.float32)
        else:
            weights[k] = (DEMO_INIT_STD * rng.standard_normal(s)).astype(np.float32)
    save_safetensors(os.path.join(directory, "model.safetensors"), weights)
    atomic_write_json(os.path.join(directory, "config.json"), raw)
    return directory


def write_demo_adapter(model_dir, name: str = "demo", config: str = "seq_bn|lora[r=4]", seed: int = 0) -> str:
    """Save a randomly perturbed adapter for ``model_dir`` to ``<model_dir>/<name>_adapter``; returns the path."""
    model = AutoModel.from_pretrained(model_dir, seed=seed)
    model.add_adapter(name, config=config)
    rng = np.random.default_rng(seed)
    for _, (d, leaf) in model.adapter_param_refs(name).items():
        d[leaf] = (d[leaf] + DEMO_ADAPTER_NOISE * rng.standard_normal(d[leaf].shape)).astype(d[leaf].dtype)
    path = os.path.join(os.fspath(model_dir), f"{name}_adapter")
    model.save_adapter(path, name)
    return path


def shell_model(raw_config: dict, with_pooler: bool = True):
    """An AdapterModel for ``raw_config`` (a config.json dict) whose base weights are zero-stride zeros of the right
    shapes: no memory, so a 7B preset costs nothing. For parameter counts, not for a forward."""
    arch = architecture(raw_config["model_type"])
    config = arch.config_class.from_dict(raw_config)
    shapes = dict(arch.expected_shapes(config))
    if with_pooler and arch.pooler:
        D = config.hidden_size
        shapes[arch.pooler[0]], shapes[arch.pooler[1]] = (D, D), (D,)
    params = {k: np.broadcast_to(np.float32(0), s) for k, s in shapes.items()}
    model = AdapterModel(arch, config, params, name_or_path="", seed=0)
    model.raw_config = dict(raw_config)
    return model
