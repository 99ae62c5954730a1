"""AutoTokenizer: a Hugging Face ``tokenizer.json`` called like transformers' tokenizer, returning NumPy. Spec: TOK-1.

    tok = ma.AutoTokenizer.from_pretrained("path/or/org-name")
    model(**tok(["a sentence", "another"]))          # input_ids, attention_mask (+ token_type_ids for BERT)

Padding and truncation come from the call, never from tokenizer.json (many files, all-MiniLM-L6-v2's among
them, pad every input to 128 tokens; transformers ignores that too). Differences from transformers: the result
is always NumPy int64 arrays of shape (batch, tokens), so ``padding`` defaults to "longest".
"""
from __future__ import annotations

import json
import os
import threading

import numpy as np
from tokenizers import Tokenizer as _Backend

from .errors import ShapeError
from .hub import resolve_tokenizer_dir

#: tokenizer classes whose models take token_type_ids (transformers' model_input_names for them).
_TYPE_ID_CLASSES = ("Bert", "Electra", "Albert", "MobileBert", "Funnel", "SqueezeBert", "Splinter", "LayoutLM",
                    "ConvBert", "RoFormer", "XLNet")
_TYPE_ID_MODEL_TYPES = ("bert", "albert", "electra", "mobilebert", "funnel", "squeezebert", "convbert", "roformer")
_CONVENTIONAL = {"pad_token": ("[PAD]", "<pad>"), "unk_token": ("[UNK]", "<unk>"), "cls_token": ("[CLS]", "<s>"),
                 "sep_token": ("[SEP]", "</s>"), "mask_token": ("[MASK]", "<mask>"), "bos_token": ("<s>",),
                 "eos_token": ("</s>",)}
_HUGE = int(1e30)       # transformers' "no limit" model_max_length


class BatchEncoding(dict):
    """The tokenizer's output: a dict of NumPy arrays with attribute access (``enc.input_ids``)."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"BatchEncoding has no field {key!r}; fields: {', '.join(self)}") from None


def _read_json(path):
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _token_text(v):
    return v.get("content") if isinstance(v, dict) else v


class Tokenizer:
    """A ``tokenizers.Tokenizer`` plus the settings transformers keeps in tokenizer_config.json. Spec: TOK-1."""

    def __init__(self, backend, *, model_max_length=_HUGE, pad_token=None, padding_side="right",
                 model_input_names=("input_ids", "attention_mask"), name_or_path="", special_tokens=None):
        self.backend = backend
        backend.no_padding()
        backend.no_truncation()
        self.model_max_length = int(model_max_length)
        self.padding_side = padding_side
        self.model_input_names = tuple(model_input_names)
        self.name_or_path = name_or_path
        self.special_tokens = dict(special_tokens or {})
        self.pad_token = pad_token
        self._lock = threading.Lock()

    # ---- construction ----------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path, *, revision=None, local_files_only=False, cache_dir=None, token=None,
                        **kwargs) -> "Tokenizer":
        """Read ``tokenizer.json`` (+ tokenizer_config.json, special_tokens_map.json, config.json) from a
        directory or a Hugging Face id (see minadapters.hub). kwargs override tokenizer_config fields."""
        d = resolve_tokenizer_dir(name_or_path, revision=revision, local_files_only=local_files_only,
                                  cache_dir=cache_dir, token=token)
        path = os.path.join(d, "tokenizer.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No tokenizer.json in {d!r}; minadapters reads only the fast-tokenizer file "
                                    "(save one with transformers' tokenizer.save_pretrained or tokenizers).")
        backend = _Backend.from_file(path)
        tcfg = dict(_read_json(os.path.join(d, "tokenizer_config.json")), **kwargs)
        smap = _read_json(os.path.join(d, "special_tokens_map.json"))
        mcfg = _read_json(os.path.join(d, "config.json"))
        special = {k: _token_text(smap.get(k, tcfg.get(k))) for k in
                   ("pad_token", "unk_token", "cls_token", "sep_token", "bos_token", "eos_token", "mask_token")}
        special = {k: v for k, v in special.items() if v is not None}
        added = {t.content for t in backend.get_added_tokens_decoder().values() if t.special}
        for k, names in _CONVENTIONAL.items():          # only tokenizer.json: the usual names of special tokens
            if k not in special:
                special.update({k: n for n in names[:1] if n in added} or
                               {k: n for n in names[1:] if n in added})
        pad = special.get("pad_token")
        if pad is None and backend.padding:
            pad = backend.padding.get("pad_token")
        if pad is None and mcfg.get("pad_token_id") is not None:
            pad = backend.id_to_token(int(mcfg["pad_token_id"]))
        names = tcfg.get("model_input_names")
        if not names:
            cls_name = str(tcfg.get("tokenizer_class") or "")
            uses_types = (cls_name.startswith(_TYPE_ID_CLASSES) if cls_name else
                          mcfg.get("model_type") in _TYPE_ID_MODEL_TYPES)
            names = ("input_ids", "token_type_ids", "attention_mask") if uses_types else ("input_ids", "attention_mask")
        return cls(backend, model_max_length=tcfg.get("model_max_length") or _HUGE, pad_token=pad,
                   padding_side=tcfg.get("padding_side", "right"), model_input_names=names,
                   name_or_path=os.fspath(name_or_path), special_tokens=special)

    # ---- special tokens --------------------------------------------------------------------------
    @property
    def pad_token_id(self):
        return None if self.pad_token is None else self.backend.token_to_id(self.pad_token)

    def __getattr__(self, key):        # eos_token, cls_token_id, ... like transformers
        if key.endswith("_token_id") and key[:-3] in self.__dict__.get("special_tokens", {}):
            return self.backend.token_to_id(self.special_tokens[key[:-3]])
        if key.endswith("_token") and key in self.__dict__.get("special_tokens", {}):
            return self.special_tokens[key]
        raise AttributeError(f"{type(self).__name__} has no attribute {key!r}")

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=False)

    def __len__(self):
        return self.backend.get_vocab_size(with_added_tokens=True)

    def __repr__(self):
        return (f"Tokenizer(name_or_path={self.name_or_path!r}, vocab_size={len(self)}, "
                f"model_max_length={self.model_max_length}, pad_token={self.pad_token!r}, "
                f"model_input_names={list(self.model_input_names)})")

    # ---- encoding --------------------------------------------------------------------------------
    def __call__(self, text, text_pair=None, *, padding=True, truncation=None, max_length=None, return_tensors="np",
                 add_special_tokens=True, return_token_type_ids=None, return_attention_mask=True) -> BatchEncoding:
        """Tokenize a string, a list of strings, or pairs (``text_pair=`` or a list of 2-tuples). Spec: TOK-1.

        padding: True / "longest" (default), "max_length", False (all inputs must then have the same length).
        truncation: True / "longest_first" / "only_first" / "only_second" / False; None truncates only when
        max_length is given (transformers' behaviour). Returns int64 arrays (B, T)."""
        if return_tensors not in (None, "np"):
            raise ValueError(f"return_tensors={return_tensors!r}: minadapters returns NumPy arrays; use 'np' or None.")
        inputs = self._batch(text, text_pair)
        strategy, limit = self._truncation(truncation, max_length)
        with self._lock:
            if strategy is None:
                self.backend.no_truncation()
            else:
                self.backend.enable_truncation(limit, strategy=strategy)
            try:
                encs = self.backend.encode_batch(inputs, add_special_tokens=add_special_tokens)
            except Exception as e:      # tokenizers raises a bare Exception, e.g. for a too-short second text
                if strategy is None:
                    raise
                raise ValueError(f"truncation={strategy!r}, max_length={limit}: {e}") from None
            finally:
                self.backend.no_truncation()
        return self._pad(encs, padding, max_length, return_token_type_ids, return_attention_mask)

    def _batch(self, text, text_pair):
        single = isinstance(text, str)
        texts = [text] if single else list(text)
        for i, t in enumerate(texts):
            is_pair = isinstance(t, (tuple, list)) and len(t) == 2 and all(isinstance(s, str) for s in t)
            if not (isinstance(t, str) or is_pair):
                raise TypeError(f"text[{i}] is {type(t).__name__} {t!r}; expected a string or a (text, text_pair) "
                                "pair.")
        if text_pair is None:
            return [tuple(t) if not isinstance(t, str) else t for t in texts]
        pairs = [text_pair] if isinstance(text_pair, str) else list(text_pair)
        if len(pairs) != len(texts) or any(not isinstance(t, str) for t in texts + pairs):
            raise ValueError(f"text_pair: got {len(pairs)} second texts for {len(texts)} first texts; give one string "
                             "per text.")
        return list(zip(texts, pairs))

    def _truncation(self, truncation, max_length):
        if truncation is None:
            truncation = max_length is not None
        if truncation is False or truncation == "do_not_truncate":
            return None, None
        strategy = "longest_first" if truncation is True else truncation
        if strategy not in ("longest_first", "only_first", "only_second"):
            raise ValueError(f"truncation={truncation!r}; allowed: True, False, 'longest_first', 'only_first', "
                             "'only_second'.")
        limit = max_length if max_length is not None else self.model_max_length
        if limit >= _HUGE:
            raise ValueError("truncation=True needs max_length=: this tokenizer has no model_max_length.")
        if not isinstance(limit, int) or limit < 1:
            raise ValueError(f"max_length={limit!r}; expected a positive int.")
        return strategy, limit

    def _pad(self, encs, padding, max_length, return_token_type_ids, return_attention_mask):
        lengths = [len(e.ids) for e in encs]
        if padding in (True, "longest"):
            T = max(lengths, default=0)
        elif padding == "max_length":
            T = max_length if max_length is not None else self.model_max_length
            if T >= _HUGE:
                raise ValueError("padding='max_length' needs max_length=: this tokenizer has no model_max_length.")
            T = max(T, max(lengths, default=0))
        elif padding in (False, "do_not_pad"):
            if len(set(lengths)) > 1:
                raise ShapeError(f"padding=False, but the inputs have different lengths {lengths}; NumPy needs one "
                                 "length: use padding=True.")
            T = lengths[0] if lengths else 0
        else:
            raise ValueError(f"padding={padding!r}; allowed: True, 'longest', 'max_length', False.")
        pad_id = self.pad_token_id
        if pad_id is None:
            if any(n != T for n in lengths):
                raise ValueError(f"the inputs need padding but tokenizer {self.name_or_path!r} has no pad token; set "
                                 "tokenizer.pad_token (e.g. = tokenizer.eos_token).")
            pad_id = 0
        B = len(encs)
        ids = np.full((B, T), pad_id, np.int64)
        types = np.zeros((B, T), np.int64)
        mask = np.zeros((B, T), np.int64)
        for b, (e, n) in enumerate(zip(encs, lengths)):
            sl = slice(0, n) if self.padding_side == "right" else slice(T - n, T)
            ids[b, sl] = e.ids
            types[b, sl] = e.type_ids
            mask[b, sl] = 1
        out = BatchEncoding(input_ids=ids)
        if return_token_type_ids or (return_token_type_ids is None and "token_type_ids" in self.model_input_names):
            out["token_type_ids"] = types
        if return_attention_mask:
            out["attention_mask"] = mask
        return out

    def encode(self, text, text_pair=None, add_special_tokens=True) -> list:
        """Token ids of one text (or pair), unpadded, untruncated."""
        enc = self.backend.encode(text, text_pair, add_special_tokens=add_special_tokens)
        return list(enc.ids)

    def decode(self, ids, skip_special_tokens=True) -> str:
        flat = [int(i) for i in np.asarray(ids).reshape(-1)]
        return self.backend.decode(flat, skip_special_tokens=skip_special_tokens)

    def batch_decode(self, ids, skip_special_tokens=True) -> list:
        return [self.decode(row, skip_special_tokens=skip_special_tokens) for row in np.asarray(ids)]


class AutoTokenizer:
    """``AutoTokenizer.from_pretrained(dir or id)`` as in transformers; returns a Tokenizer. Spec: TOK-1."""

    from_pretrained = staticmethod(Tokenizer.from_pretrained)
