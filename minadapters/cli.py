"""The ``minadapters`` command: run, summary, tiny-model, conformance, bench. Spec: API-4."""
from __future__ import annotations

import argparse
import ast
import os
import sys
import time

import numpy as np
from tokenizers import Tokenizer

from . import bench, conformance_cli
from .composition import BLOCKS, Stack
from .io.files import read_json
from .model import AutoModel
from .summary import ARCH_PRESETS, SUMMARY_COLUMNS
from .tiny import shell_model, write_demo_adapter, write_tiny_model

PREVIEW_VALUES = 6  # `run` prints the first few values of each row's output vector
PREVIEW_CHARS = 40  # ... next to the first characters of its text
# `summary` names each adapter "<i>:<config>", cut to fit the summary table's name column
SUMMARY_NAME_CHARS = SUMMARY_COLUMNS[0][2] - 1

DESCRIPTION = """minadapters: run Hugging Face encoders/decoders with AdapterHub adapters in NumPy, no torch.

examples:
  minadapters tiny-model /tmp/tiny-bert                  # small random BERT (config, weights, tokenizer) + demo adapter
  minadapters run --model /tmp/tiny-bert --adapter /tmp/tiny-bert/demo_adapter "hello adapters"
  minadapters run --model DIR --adapter ADAPTER_DIR --setup "Stack(a, b)" "some text" "more text"
  minadapters summary --arch bert-base-uncased --config lora seq_bn "prefix_tuning[prefix_length=20]"
  minadapters conformance --driver minadapters
"""


def parse_setup(text: str):
    """Parse a composition written as Python-like calls, e.g. "Stack(a, Split(b, c, splits=3))". Spec: API-4.

    Only the block names, bare adapter names / strings and literal keyword values are accepted (no eval)."""
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as e:
        raise ValueError(f"--setup {text!r} is not a valid composition: {e.msg}") from None

    def conv(node):
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in BLOCKS:
            kwargs = {}
            for kw in node.keywords:
                try:
                    kwargs[kw.arg] = ast.literal_eval(kw.value)
                except ValueError:
                    raise ValueError(f"--setup {text!r}: keyword {kw.arg}= must be a literal") from None
            return BLOCKS[node.func.id](*[conv(a) for a in node.args], **kwargs)
        raise ValueError(f"--setup {text!r}: unexpected {ast.unparse(node)!r}; use adapter names and the blocks "
                         f"{', '.join(BLOCKS)}.")
    return conv(tree)


def _tokenize(model_dir: str, texts: list, model):
    path = os.path.join(model_dir, "tokenizer.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No tokenizer.json in {model_dir!r}; the run command tokenizes with it.")
    tok = Tokenizer.from_file(path)
    encs = tok.encode_batch(texts)
    T = max(len(e.ids) for e in encs)
    pad = getattr(model.config, "pad_token_id", 0) or 0
    ids = np.full((len(texts), T), pad, np.int64)
    mask = np.zeros((len(texts), T), np.int64)
    for b, e in enumerate(encs):
        ids[b, :len(e.ids)] = e.ids
        mask[b, :len(e.ids)] = 1
    return ids, mask


def cmd_run(args) -> int:
    model = AutoModel.from_pretrained(args.model, backend=args.backend)
    names = [model.load_adapter(d) for d in args.adapter]
    if args.setup:
        model.active_adapters = parse_setup(args.setup)
    elif names:
        model.active_adapters = Stack(*names)
    ids, mask = _tokenize(args.model, args.text, model)
    t0 = time.perf_counter()
    out = model(input_ids=ids, attention_mask=mask)
    dt = time.perf_counter() - t0
    print(f"model: {args.model} ({model.model_type}, {model.num_layers} layers, hidden {model.hidden_size}, "
          f"backend {model.backend})")
    print(f"adapters: {', '.join(names) or 'none'}; active: {model.active_adapters}")
    print(f"input_ids: {ids.shape}; last_hidden_state: {out.last_hidden_state.shape}")
    vec = out.pooler_output if out.pooler_output is not None else out.last_hidden_state[:, -1]
    for b, text in enumerate(args.text):
        head = " ".join(f"{v:+.4f}" for v in vec[b, :PREVIEW_VALUES])
        print(f"[{b}] {text[:PREVIEW_CHARS]!r}: {'pooled' if out.pooler_output is not None else 'last token'} [{head} ...]")
    print(f"forward time: {dt * 1000:.1f} ms")
    return 0


def cmd_summary(args) -> int:
    if args.model:
        raw = read_json(os.path.join(args.model, "config.json"))
    else:
        if args.arch not in ARCH_PRESETS:
            raise ValueError(f"--arch {args.arch!r} is unknown; presets: {', '.join(ARCH_PRESETS)}")
        raw = ARCH_PRESETS[args.arch]
    model = shell_model(raw)
    for i, cfg in enumerate(args.config):
        model.add_adapter(f"{i}:{cfg}"[:SUMMARY_NAME_CHARS], config=cfg)
    print(model.adapter_summary())
    return 0


def cmd_tiny_model(args) -> int:
    path = write_tiny_model(args.directory, model_type=args.arch, seed=args.seed)
    print(f"model:   {path}")
    if args.adapter:
        print(f"adapter: {write_demo_adapter(path, config=args.adapter, seed=args.seed)}")
    return 0


# Subcommands with their own argument parsers: main() hands them the rest of the command line.
DELEGATES = {"conformance": conformance_cli.main, "bench": bench.main}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minadapters", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command")
    r = sub.add_parser("run", help="tokenize TEXT, run the model with adapters, print a short result")
    r.add_argument("--model", required=True, help="HF model directory (config.json, weights, tokenizer.json)")
    r.add_argument("--adapter", action="append", default=[], help="AdapterHub adapter directory (repeatable)")
    r.add_argument("--setup", help='composition, e.g. "Stack(a, b)" (default: Stack of the loaded adapters)')
    r.add_argument("--backend", default=None, help="numpy (default) or native")
    r.add_argument("text", nargs="+")
    r.set_defaults(fn=cmd_run)
    s = sub.add_parser("summary", help="parameters added per adapter config (like adapters' adapter_summary)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--arch", default="bert-base-uncased", help="architecture preset, e.g. bert-base-uncased, "
                   "roberta-base, gpt2")
    g.add_argument("--model", help="HF model directory (only config.json is read)")
    s.add_argument("--config", nargs="+", required=True, help='adapter configs: identifiers or strings like "lora[r=4]"')
    s.set_defaults(fn=cmd_summary)
    t = sub.add_parser("tiny-model", help="write a small random HF model directory (for trying things out)")
    t.add_argument("directory")
    t.add_argument("--arch", default="bert", choices=["bert", "roberta"])
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--adapter", default="seq_bn|lora[r=4]", help="config of a random demo adapter saved to "
                   "DIR/demo_adapter ('' for none)")
    t.set_defaults(fn=cmd_tiny_model)
    c = sub.add_parser("conformance", help="run the conformance suite against a driver", add_help=False)
    c.set_defaults(fn=None)  # main() hands "conformance ..." to DELEGATES before parsing
    b = sub.add_parser("bench", help="benchmarks (native vs numpy vs adapters+torch)", add_help=False)
    b.set_defaults(fn=None)
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv:
        parser.print_help()
        return 0
    if argv[0] in DELEGATES:  # these parse their own arguments
        return int(DELEGATES[argv[0]](argv[1:]) or 0)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.fn(args)
    except (ValueError, TypeError, KeyError, FileNotFoundError) as e:
        print(f"minadapters {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
