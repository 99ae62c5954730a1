"""Sentence embeddings from a sentence-transformers directory: pooling and normalisation. Spec: ST-1, ST-2.

A sentence-transformers model directory has ``modules.json`` listing its modules in order; we run
Transformer (this model), Pooling (``<path>/config.json``) and Normalize. Other modules (Dense, ...)
raise a ConfigError naming them. A directory without modules.json gets mean pooling, as
sentence-transformers does, with a warning.
"""
from __future__ import annotations

import os
import sys
import warnings
import weakref
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError
from .io.files import atomic_write_json, read_json
from .tokenizer import AutoTokenizer

#: pooling_mode_* flags in sentence-transformers' order of concatenation.
POOLING_MODES = ("cls_token", "max_tokens", "mean_tokens", "mean_sqrt_len_tokens", "weightedmean_tokens",
                 "lasttoken")
_MODULE_KINDS = {"Transformer": "transformer", "Pooling": "pooling", "Normalize": "normalize"}


@dataclass(frozen=True)
class SentenceConfig:
    """What modules.json, 1_Pooling/config.json and sentence_bert_config.json say."""
    pooling: tuple = ("mean_tokens",)
    include_prompt: bool = True
    normalize: bool = False
    max_seq_length: int | None = None
    do_lower_case: bool = False
    declared: bool = True          # False: no modules.json, defaults used


def _read(path):
    return read_json(path)


def load_sentence_config(model_dir) -> SentenceConfig:
    """Parse a sentence-transformers directory. Raises ConfigError for modules we do not implement."""
    model_dir = os.fspath(model_dir)
    mpath = os.path.join(model_dir, "modules.json")
    sb = os.path.join(model_dir, "sentence_bert_config.json")
    sbc = _read(sb) if os.path.isfile(sb) else {}
    common = dict(max_seq_length=sbc.get("max_seq_length"), do_lower_case=bool(sbc.get("do_lower_case", False)))
    if not os.path.isfile(mpath):
        return SentenceConfig(declared=False, **common)
    modules = _read(mpath)
    pooling, include_prompt, normalize = None, True, False
    for m in modules:
        kind = _MODULE_KINDS.get(str(m.get("type", "")).rsplit(".", 1)[-1])
        if kind is None:
            raise ConfigError(f"{mpath}: module {m.get('type')!r} (path {m.get('path')!r}) is not supported; "
                              f"minadapters runs {', '.join(_MODULE_KINDS)} modules only.")
        if kind == "pooling":
            cfg = _read(os.path.join(model_dir, m.get("path") or "", "config.json"))
            pooling = tuple(k for k in POOLING_MODES if cfg.get(f"pooling_mode_{k}"))
            if not pooling:
                raise ConfigError(f"{m.get('path')}/config.json: no pooling_mode_* flag is true; set one of "
                                  f"{', '.join('pooling_mode_' + k for k in POOLING_MODES)}.")
            include_prompt = bool(cfg.get("include_prompt", True))
        elif kind == "normalize":
            normalize = True
    return SentenceConfig(pooling=pooling or ("mean_tokens",), include_prompt=include_prompt, normalize=normalize,
                          **common)


def pool(hidden, mask, modes=("mean_tokens",)) -> np.ndarray:
    """Sentence vectors from token vectors, one block per mode, concatenated. Spec: ST-1.

        mean          Σ_t m_t h_t / max(Σ_t m_t, 1e-9)
        max           max_t over tokens with m_t = 1
        cls           h_0;   lasttoken: h at the last position with m_t = 1
        mean_sqrt_len Σ_t m_t h_t / sqrt(Σ_t m_t);   weightedmean: weights t + 1 (1-based position) · m_t
    hidden: (B, T, D) float, mask: (B, T) 0/1 -> (B, len(modes)·D) float32"""
    h = np.asarray(hidden, np.float32)
    m = np.asarray(mask, np.float32)[..., None]                     # (B, T, 1)
    out = []
    for mode in modes:
        if mode == "cls_token":
            out.append(h[:, 0])
        elif mode == "max_tokens":
            out.append(np.where(m > 0, h, np.float32(-1e9)).max(axis=1))
        elif mode in ("mean_tokens", "mean_sqrt_len_tokens"):
            s, n = (h * m).sum(axis=1), m.sum(axis=1)               # (B, D), (B, 1)
            out.append(s / np.maximum(n, np.float32(1e-9)) if mode == "mean_tokens" else s / np.sqrt(n))
        elif mode == "weightedmean_tokens":
            w = m * np.arange(1, h.shape[1] + 1, dtype=np.float32)[None, :, None]
            out.append((h * w).sum(axis=1) / np.maximum(w.sum(axis=1), np.float32(1e-9)))
        elif mode == "lasttoken":
            T = h.shape[1]
            last = T - 1 - np.argmax(m[:, ::-1, 0] > 0, axis=1)       # (B,) works for left and right padding
            out.append(h[np.arange(h.shape[0]), last])
        else:
            raise ConfigError(f"pooling mode {mode!r} is unknown; allowed: {', '.join(POOLING_MODES)}.")
    return np.ascontiguousarray(np.concatenate(out, axis=-1), dtype=np.float32)


def normalize(x) -> np.ndarray:
    """Unit L2 norm per row, as torch.nn.functional.normalize (eps 1e-12). Spec: ST-2.   (B, D) -> (B, D)"""
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), np.float32(1e-12))


_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _setup_for(model, tokenizer):
    got = _CACHE.get(model)
    if got is None or (tokenizer is not None and got[1] is not tokenizer):
        d = model.model_dir
        if d is None:
            raise ValueError("encode() needs the model's directory (AutoModel.from_pretrained sets it) or tokenizer=.")
        cfg = load_sentence_config(d)
        if not cfg.declared:
            warnings.warn(f"{d}: no modules.json (not a sentence-transformers directory); using mean pooling "
                          "without normalisation, as sentence-transformers does.")
        got = (cfg, tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(d))
        _CACHE[model] = got
    return got


class _Progress:
    """A one-line text progress bar on a stream (stderr)."""

    def __init__(self, total, stream, width=30):
        self.total, self.stream, self.width, self.done = total, stream, width, 0

    def update(self, n):
        self.done += n
        k = self.width * self.done // max(self.total, 1)
        self.stream.write(f"\rembedding {self.done}/{self.total} [{'#' * k}{'.' * (self.width - k)}]")
        if self.done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


def encode(model, sentences, *, batch_size=32, normalize_embeddings=False, show_progress_bar=None, tokenizer=None,
           convert_to_numpy=True, progress_stream=None) -> np.ndarray:
    """Embed sentences like sentence-transformers' ``SentenceTransformer.encode``. Spec: ST-1, ST-2.

    Texts are lower-cased if sentence_bert_config says so, truncated to max_seq_length, run in batches of
    ``batch_size`` (longest first, each padded to its own longest text), pooled and, when the directory has a
    Normalize module or ``normalize_embeddings=True``, L2-normalised. Returns (N, D) float32 in input order
    (a single string gives (D,))."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}; expected a positive int.")
    single = isinstance(sentences, str)
    texts = [sentences] if single else list(sentences)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"sentences[{i}] is {type(t).__name__}; expected a string.")
    cfg, tok = _setup_for(model, tokenizer)
    limit = cfg.max_seq_length or min(tok.model_max_length,
                                      getattr(model.config, "max_position_embeddings", tok.model_max_length))
    if cfg.do_lower_case:
        texts = [t.lower() for t in texts]
    order = np.argsort([-len(t) for t in texts], kind="stable")
    show = show_progress_bar if show_progress_bar is not None else False
    bar = _Progress(len(texts), progress_stream or sys.stderr) if show and texts else None
    chunks = []
    for start in range(0, len(texts), batch_size):
        idx = order[start:start + batch_size]
        enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=int(limit))
        out = model(**enc)
        h, mask = out.last_hidden_state, enc["attention_mask"]
        if h.shape[0] != mask.shape[0]:             # Parallel: channel-major copies of the batch
            mask = np.tile(mask, (h.shape[0] // mask.shape[0], 1))
        emb = pool(h, mask, cfg.pooling)
        if cfg.normalize or normalize_embeddings:
            emb = normalize(emb)
        chunks.append((idx, emb))
        if bar:
            bar.update(len(idx))
    if not chunks:
        return np.zeros((0, model.hidden_size), np.float32)
    copies = chunks[0][1].shape[0] // len(chunks[0][0])
    D = chunks[0][1].shape[1]
    result = np.empty((copies, len(texts), D), np.float32)
    for idx, emb in chunks:
        result[:, idx] = emb.reshape(copies, len(idx), D)
    result = result.reshape(copies * len(texts), D)
    return result[0] if single and copies == 1 else result


def write_sentence_config(directory, *, pooling=("mean_tokens",), normalize=True, max_seq_length=None,
                          do_lower_case=False) -> str:
    """Make a model directory a sentence-transformers directory (modules.json, 1_Pooling/config.json,
    sentence_bert_config.json, Normalize if asked); returns the directory. For tests and examples."""
    directory = os.fspath(directory)
    for m in pooling:
        if m not in POOLING_MODES:
            raise ConfigError(f"pooling mode {m!r} is unknown; allowed: {', '.join(POOLING_MODES)}.")
    hidden = read_json(os.path.join(directory, "config.json"))["hidden_size"]
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    os.makedirs(os.path.join(directory, "1_Pooling"), exist_ok=True)
    atomic_write_json(os.path.join(directory, "modules.json"), modules)
    atomic_write_json(os.path.join(directory, "1_Pooling", "config.json"),
                      {"word_embedding_dimension": hidden,
                       **{f"pooling_mode_{k}": k in pooling for k in POOLING_MODES}})
    atomic_write_json(os.path.join(directory, "sentence_bert_config.json"),
                      {"max_seq_length": max_seq_length, "do_lower_case": do_lower_case})
    return directory
