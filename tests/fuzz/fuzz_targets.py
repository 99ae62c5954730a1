"""Fuzz targets: each feeds one input to a public entry point of minadapters. Spec: IO-17.

A target has `setup(workdir)` (runs once in the parent, before workers fork: builds tiny models and
the seed corpus), `generate(rng, index)` (one deterministic input, under 64 KiB) and `run(data)`
(one call of the public API; raises on rejection). `allowed` is the documented error vocabulary
for that entry point (spec/io.md "Error vocabulary"); any other exception type is counted as
undocumented. `trace()` returns a description of state a rejected input left behind, or None.
"""
from __future__ import annotations

import json
import math
import os
import random
import shutil

import numpy as np

import minadapters as ma
from minadapters.errors import AdapterError
from minadapters.tiny import write_tiny_model

import fuzz_mutate as mu

# Filesystem errors for paths the caller named; everything else is an AdapterError subclass.
FILE_ERRORS = (AdapterError, FileNotFoundError, NotADirectoryError)
# forward() also raises plain ValueError / TypeError for malformed arrays (like NumPy does).
FORWARD_ERRORS = (AdapterError, ValueError, TypeError)


def _snapshot(model):
    return (tuple(sorted(model.adapters_config.adapters)), tuple(sorted(model.adapters_config.fusions)))


class Target:
    name = "?"
    allowed: tuple = FILE_ERRORS
    seeds: list

    def setup(self, workdir: str) -> None:
        raise NotImplementedError

    def generate(self, rng: random.Random, index: int) -> bytes:
        seed = self.seeds[index % len(self.seeds)]
        return self.mutate(rng, seed)

    def mutate(self, rng, seed: bytes) -> bytes:
        return mu.mutate_bytes(rng, seed)

    def run(self, data: bytes):
        raise NotImplementedError

    def trace(self):
        return None


class _ModelTarget(Target):
    """Targets that load into one tiny BERT model; a rejected load must leave its adapter set as it was."""

    def _model(self, workdir):
        self.model_dir = os.path.join(workdir, "model")
        if not os.path.isdir(self.model_dir):
            write_tiny_model(self.model_dir, seed=2)
        self.model = ma.AutoModel.from_pretrained(self.model_dir, seed=1)
        self.base = _snapshot(self.model)
        self.dir = os.path.join(workdir, self.name)
        os.makedirs(self.dir, exist_ok=True)

    def trace(self):
        now = _snapshot(self.model)
        if now == self.base:
            return None
        for f in set(now[1]) - set(self.base[1]):
            self.model.delete_adapter_fusion(f)
        for a in set(now[0]) - set(self.base[0]):
            self.model.delete_adapter(a)
        return f"adapter set changed: {now} (was {self.base})"


class AdapterFile(_ModelTarget):
    """load_adapter with a mutated weights file (torch zip / legacy pickle, or safetensors)."""

    def __init__(self, fmt: str):
        self.fmt = fmt
        self.name = f"load_adapter[{fmt}]"
        self.file = "adapter.safetensors" if fmt == "safetensors" else "pytorch_adapter.bin"

    def setup(self, workdir):
        self._model(workdir)
        m = self.model
        m.add_adapter("s", "seq_bn|lora[r=4]")
        src = os.path.join(self.dir, "seed")
        m.save_adapter(src, "s", use_safetensors=self.fmt == "safetensors")
        m.delete_adapter("s")
        with open(os.path.join(src, "adapter_config.json")) as f:
            cfg = json.load(f)
        cfg.pop("minadapters_weights")       # let the mutated file through to the parser
        self.config_text = json.dumps(cfg)
        with open(os.path.join(src, self.file), "rb") as f:
            self.seeds = [f.read()]
        self.work = os.path.join(self.dir, "in")
        os.makedirs(self.work, exist_ok=True)
        with open(os.path.join(self.work, "adapter_config.json"), "w") as f:
            f.write(self.config_text)

    def mutate(self, rng, seed):
        if self.fmt == "safetensors":
            if rng.random() < 0.4:        # mutate the JSON header structurally
                n = int.from_bytes(seed[:8], "little")
                head = mu.mutate_json(rng, seed[8:8 + n])
                return mu.cap(len(head).to_bytes(8, "little") + head + seed[8 + n:])
            return mu.mutate_bytes(rng, seed)
        if rng.random() < 0.15:
            return mu.cap(mu.make_zip({"archive/data.pkl": mu.hostile_pickles(rng),
                                       "archive/data/0": b"\0" * 4}))
        if rng.random() < 0.1:
            return mu.hostile_pickles(rng)           # legacy stream path
        return mu.mutate_torch_zip(rng, seed)

    def run(self, data):
        with open(os.path.join(self.work, self.file), "wb") as f:
            f.write(data)
        name = self.model.load_adapter(self.work, load_as="x")
        self.model.delete_adapter(name)


class JsonFileTarget(_ModelTarget):
    """A mutated JSON file (adapter_config.json, fusion config, setup file) beside valid weights."""

    def __init__(self, name, json_name, make, call):
        self.name, self.json_name, self._make, self._call = name, json_name, make, call

    def setup(self, workdir):
        self._model(workdir)
        self.work = self._make(self.model, self.dir)
        self.base = _snapshot(self.model)
        with open(os.path.join(self.work, self.json_name), "rb") as f:
            self.seeds = [f.read()]

    def mutate(self, rng, seed):
        k = rng.random()
        if k < 0.05:
            return mu.deep_json(rng.choice([100, 5000, 30000]), rng.choice("[{"))
        if k < 0.15:
            return mu.mutate_bytes(rng, seed)
        return mu.mutate_json(rng, seed)

    def run(self, data):
        with open(os.path.join(self.work, self.json_name), "wb") as f:
            f.write(data)
        self._call(self.model, self.work)


def _make_adapter(model, d):
    model.add_adapter("s", "seq_bn|lora[r=4]")
    model.save_adapter(os.path.join(d, "in"), "s")
    model.delete_adapter("s")
    return os.path.join(d, "in")


def _load_adapter(model, work):
    name = model.load_adapter(work, load_as="x")
    model.delete_adapter(name)


def _make_fusion(model, d):
    for n in ("a", "b"):
        model.add_adapter(n, "seq_bn")
    model.add_adapter_fusion(["a", "b"], "dynamic")
    model.save_adapter_fusion(os.path.join(d, "in"), ["a", "b"])
    model.delete_adapter_fusion("a,b")
    return os.path.join(d, "in")


def _load_fusion(model, work):
    name = model.load_adapter_fusion(work)
    model.delete_adapter_fusion(name)


def _make_setup(model, d):
    for n in ("p", "q"):
        model.add_adapter(n, "seq_bn")
    model.save_adapter_setup(os.path.join(d, "in"), ma.Stack("p", "q"))
    model.delete_adapter("p")
    model.delete_adapter("q")
    return os.path.join(d, "in")


def _load_setup(model, work):
    setup, _ = model.load_adapter_setup(work)
    for n in sorted(setup.flatten()) if hasattr(setup, "flatten") else [setup]:
        model.delete_adapter(n)


class ModelDir(Target):
    """AutoModel.from_pretrained with a mutated config.json or model.safetensors."""

    def __init__(self, part):
        self.part = part
        self.name = f"from_pretrained[{part}]"

    def setup(self, workdir):
        self.work = os.path.join(workdir, self.name)
        write_tiny_model(self.work, seed=4, layers=1)
        if self.part == "index":        # a sharded checkpoint: model.safetensors.index.json names the shard
            shard = "model-00001-of-00001.safetensors"
            os.replace(os.path.join(self.work, "model.safetensors"), os.path.join(self.work, shard))
            from minadapters.io import load_safetensors
            keys = sorted(load_safetensors(os.path.join(self.work, shard)))
            with open(os.path.join(self.work, "model.safetensors.index.json"), "w") as f:
                json.dump({"metadata": {"total_size": 0}, "weight_map": {k: shard for k in keys}}, f)
        self.file = {"config": "config.json", "weights": "model.safetensors",
                     "index": "model.safetensors.index.json"}[self.part]
        with open(os.path.join(self.work, self.file), "rb") as f:
            self.seeds = [f.read()]
        os.remove(os.path.join(self.work, "tokenizer.json"))

    def mutate(self, rng, seed):
        if self.part == "index":
            if rng.random() < 0.05:
                return mu.deep_json(rng.choice([100, 30000]), rng.choice("[{"))
            return mu.mutate_json(rng, seed)
        if self.part == "config":
            if rng.random() < 0.05:
                return mu.deep_json(rng.choice([100, 30000]), rng.choice("[{"))
            if rng.random() < 0.2:        # the hang: a huge layer count
                doc = json.loads(seed)
                doc[rng.choice(["num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size",
                                "vocab_size", "max_position_embeddings", "layer_norm_eps", "type_vocab_size"])] = \
                    rng.choice([10 ** 9, 0, -1, 1e-300, 2 ** 63, 0.0, 1.5, True, "12", None])
                return json.dumps(doc).encode()
            return mu.mutate_json(rng, seed)
        n = int.from_bytes(seed[:8], "little")
        if rng.random() < 0.5:
            head = mu.mutate_json(rng, seed[8:8 + n])
            return mu.cap(len(head).to_bytes(8, "little") + head + seed[8 + n:])
        return mu.mutate_bytes(rng, seed)

    def run(self, data):
        with open(os.path.join(self.work, self.file), "wb") as f:
            f.write(data)
        ma.AutoModel.from_pretrained(self.work)


class ConfigString(_ModelTarget):
    """AdapterConfig.load(string) and add_adapter with it (allocation is bounded by the config limits)."""

    name = "config_string"
    allowed = (AdapterError,)

    def setup(self, workdir):
        self._model(workdir)
        self.seeds = [s.encode() for s in (
            "lora[r=8,alpha=16]", "seq_bn[reduction_factor=4]", "prefix_tuning[prefix_length=10]",
            "seq_bn|lora[r=4]", "prompt_tuning[prompt_length=5]", "double_seq_bn", "ia3", "loreft[r=2]",
            "compacter", "par_bn[scaling=2.0]", "mam", "unipelt", "lora[attn_matrices=['q','v']]")]

    FIELDS = {"lora": ["r", "alpha", "dropout", "attn_matrices", "composition_mode", "init_weights", "use_gating"],
              "seq_bn": ["reduction_factor", "non_linearity", "scaling", "ln_before", "leave_out", "phm_dim"],
              "prefix_tuning": ["prefix_length", "bottleneck_size", "flat", "leave_out"],
              "prompt_tuning": ["prompt_length", "combine", "prompt_init"], "loreft": ["r", "prefix_positions"],
              "compacter": ["phm_dim", "phm_rank", "reduction_factor"], "ia3": ["r", "alpha"]}
    VALUES = ["1", "2", "4", "0", "-1", "16384", "16385", "2**31", "1e-9", "0.015625", "65536.0", "1e400", "nan",
              "True", "None", "'x'", "[0, 1]", "[-1]", "{'default': 4}", "{'1': 0}", "'learned'", "0.5", "1.0"]

    def mutate(self, rng, seed):
        if rng.random() < 0.5:      # well-formed strings with hostile values, so more reach the model
            name = rng.choice(list(self.FIELDS))
            kv = ", ".join(f"{f}={rng.choice(self.VALUES)}" for f in rng.sample(self.FIELDS[name], rng.randint(1, 2)))
            return f"{name}[{kv}]".encode()
        return mu.mutate_string(rng, seed)

    def run(self, data):
        text = data.decode("utf-8", "replace")
        cfg = ma.AdapterConfig.load(text)
        self.model.add_adapter("x", cfg)
        self.model.delete_adapter("x")


class Composition(_ModelTarget):
    """parse_composition(string) and set_active_adapters with it."""

    name = "composition"
    allowed = (AdapterError,)

    def setup(self, workdir):
        self._model(workdir)
        for n in "abc":
            self.model.add_adapter(n, "seq_bn")
        self.model.add_adapter_fusion(["a", "b"], "dynamic")
        self.base = _snapshot(self.model)
        self.seeds = [s.encode() for s in ("Stack(a, b)", "Fuse(a, b)", "Parallel(a, b)", "Stack(Fuse(a, b), c)",
                                           "Split(a, b, splits=[2, 4])", "BatchSplit(a, b, batch_sizes=[1, 1])",
                                           "Average(a, b, weights=[0.5, 0.5])", "a,b", "a")]

    def mutate(self, rng, seed):
        if rng.random() < 0.5:      # well-formed block expressions over known and unknown names
            return self._expr(rng, 0).encode()
        return mu.mutate_string(rng, seed)

    def _expr(self, rng, depth):
        if depth > 3 or rng.random() < 0.4:
            return rng.choice(["a", "b", "c", "a,b", "x"])
        block = rng.choice(["Stack", "Fuse", "Parallel", "Split", "BatchSplit", "Average"])
        kids = ", ".join(self._expr(rng, depth + 1) for _ in range(rng.randint(1, 3)))
        extra = {"Split": ", splits=[2, 3]", "BatchSplit": ", batch_sizes=[1, 1]",
                 "Average": ", weights=[0.5, 0.5]"}.get(block, "")
        return f"{block}({kids}{extra})"

    def run(self, data):
        text = data.decode("utf-8", "replace")
        comp = ma.parse_composition(_eval_blocks(text) if text[:1].isupper() else text)
        self.model.set_active_adapters(comp)
        self.model.set_active_adapters(None)


def _eval_blocks(text):
    """Build a composition from a block expression without eval: a tiny recursive-descent parser."""
    import ast
    try:
        tree = ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise ma.CompositionError(f"not a block expression ({type(e).__name__})") from None
    return _node(tree, 0)


def _node(node, depth):
    import ast
    if depth > 50:
        raise ma.CompositionError("expression too deep")
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Tuple):
        return ",".join(str(_node(e, depth + 1)) for e in node.elts)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in (
            "Stack", "Fuse", "Parallel", "Split", "BatchSplit", "Average"):
        # a misspelt keyword is a Python-level TypeError of the constructor, not bad data: not a finding
        known = {"Split": {"splits"}, "BatchSplit": {"batch_sizes"}, "Average": {"weights", "normalize_weights"},
                 "Fuse": {"name"}}.get(node.func.id, set())
        if any(k.arg not in known for k in node.keywords):
            raise ma.CompositionError("unknown keyword")
        try:
            kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
        except (ValueError, TypeError, SyntaxError, RecursionError):
            raise ma.CompositionError("bad keyword value") from None
        return getattr(ma, node.func.id)(*[_node(a, depth + 1) for a in node.args], **kwargs)
    raise ma.CompositionError("unsupported expression")


class Forward(Target):
    """forward() on both backends with hostile arrays; accepted inputs must agree across backends."""

    allowed = FORWARD_ERRORS

    def __init__(self, arch):
        self.arch = arch
        self.name = f"forward[{arch}]"
        self.seeds = [b""]

    def setup(self, workdir):
        d = os.path.join(workdir, f"model-{self.arch}")
        if self.arch == "bert":
            write_tiny_model(d, seed=5)
        else:
            from conformance.tinymodels import write_model
            write_model(d, self.arch, seed=5)
        self.models = {}
        for backend in ("numpy", "native"):
            try:
                m = ma.AutoModel.from_pretrained(d, seed=1, backend=backend)
            except ma.BackendUnavailableError as e:     # CI builds it; a bare checkout may not have
                print(f"    {self.name}: {e}; comparing nothing for this backend")
                continue
            m.add_adapter("l", "lora[r=4, init_weights='bert']")
            m.add_adapter("b", "seq_bn[init_weights='bert']")
            # GPT-2's fused qkv takes a single LoRA (as adapters): there, LoRA alone
            m.set_active_adapters(ma.Stack("l", "b") if self.arch == "bert" else "l")
            self.models[backend] = m
        self.vocab = self.models["numpy"].config.vocab_size
        self.disagreements = 0

    def generate(self, rng, index):
        # about half the inputs are valid, so accepted ones are compared across backends too
        B, T = rng.choice([0, 1, 1, 2, 2, 3, 3]), rng.choice([0, 1, 2, 2, 5, 5, 9, 9])
        if rng.random() < 0.05:
            T = rng.choice([300, 1200])          # past the position table
        spec = {"shape": [B, T], "ids": rng.choice(["ok"] * 8 + ["neg", "big", "float", "bool"])}
        if rng.random() < 0.7:
            spec["mask"] = rng.choice(["ones"] * 3 + ["pad"] * 3 + ["zeros", "bool", "three", "nan", "huge", "neg",
                                                                      "half", "wrong"])
        if self.arch == "bert" and rng.random() < 0.4:
            spec["tt"] = rng.choice(["zeros", "zeros", "ones", "neg", "big", "float"])
        if self.arch != "bert" and rng.random() < 0.3:
            spec["pos"] = rng.choice(["ok", "ok", "neg", "big", "float"])
        spec["seed"] = rng.randrange(2 ** 31)
        return json.dumps(spec).encode()

    def _arrays(self, spec):
        rng = np.random.default_rng(spec["seed"])
        B, T = spec["shape"]
        ids = rng.integers(0, self.vocab, size=(B, T))
        ids = {"ok": ids, "neg": ids - self.vocab, "big": ids + self.vocab, "float": ids.astype(np.float32),
               "bool": ids > 3}[spec["ids"]]
        kw = {"input_ids": ids}
        if "mask" in spec:
            m = np.ones((B, T), np.int64)
            m = {"ones": m, "zeros": m * 0, "pad": np.tril(np.ones((B, T), np.int64), k=T // 2)[:B, :T] if B and T else m,
                 "three": m * 3, "nan": np.where(rng.random((B, T)) < 0.5, np.nan, 1.0), "huge": m * 1e30,
                 "bool": m.astype(bool), "neg": -m, "half": m * 0.5, "wrong": np.ones((B, T + 1))}[spec["mask"]]
            kw["attention_mask"] = m
        if "tt" in spec:
            t = np.zeros((B, T), np.int64)
            kw["token_type_ids"] = {"zeros": t, "ones": t + 1, "neg": t - 1, "big": t + 99,
                                    "float": t.astype(np.float32)}[spec["tt"]]
        if "pos" in spec:
            p = np.broadcast_to(np.arange(T), (B, T))
            kw["position_ids"] = {"ok": p, "neg": p - 1, "big": p + 10 ** 6, "float": p.astype(np.float32)}[spec["pos"]]
        return kw

    def run(self, data):
        kw = self._arrays(json.loads(data))
        outcome = {}
        for backend, m in self.models.items():
            try:
                outcome[backend] = m(**kw).last_hidden_state
            except Exception as e:      # noqa: BLE001  (compared across backends below)
                outcome[backend] = e
        a, b = outcome["numpy"], outcome.get("native", outcome["numpy"])
        if isinstance(a, Exception) or isinstance(b, Exception):
            if type(a) is not type(b):
                self.disagreements += 1
                raise BackendDisagreement(f"numpy: {type(a).__name__}, native: {type(b).__name__}")
            raise a
        if a.shape != b.shape or not np.allclose(a, b, rtol=1e-4, atol=1e-5, equal_nan=True) \
                or not np.isfinite(a).all():
            self.disagreements += 1
            raise BackendDisagreement(f"outputs differ or are not finite (max |diff| "
                                      f"{float(np.nanmax(np.abs(a - b))) if a.shape == b.shape else math.inf})")


class BackendDisagreement(Exception):
    """numpy and native disagree on an input (counted as a failure, never documented)."""


def all_targets():
    return [
        AdapterFile("torch"), AdapterFile("safetensors"),
        JsonFileTarget("adapter_config.json", "adapter_config.json", _make_adapter, _load_adapter),
        JsonFileTarget("adapter_fusion_config.json", "adapter_fusion_config.json", _make_fusion, _load_fusion),
        JsonFileTarget("adapter_setup.json", "adapter_setup.json", _make_setup, _load_setup),
        ModelDir("config"), ModelDir("weights"), ModelDir("index"),
        ConfigString(), Composition(),
        Forward("bert"), Forward("gpt2"),
    ]


def cleanup(workdir):
    shutil.rmtree(workdir, ignore_errors=True)
