"""The ``minadapters`` command: run, embed, summary, tiny-model, train, conformance, bench. Spec: API-4."""
from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import time

import numpy as np

from . import bench_rows, conformance_cli
from .composition import BLOCKS, Fuse, Parallel, Stack
from .hub import resolve_model_dir
from .io.files import read_json
from .heads.model import AutoAdapterModel
from .heads.predict import prediction_lines
from .outputs import MultiHeadOutput
from .summary import ARCH_PRESETS, SUMMARY_COLUMNS
from .tiny import shell_model, write_demo_adapter, write_tiny_model
from .tokenizer import AutoTokenizer
from .training import fit as training_fit

PREVIEW_VALUES = 6  # `run` prints the first few values of each row's output vector
PREVIEW_CHARS = 40  # ... next to the first characters of its text
# `summary` names each adapter "<i>:<config>", cut to fit the summary table's name column
SUMMARY_NAME_CHARS = SUMMARY_COLUMNS[0][2] - 1

DESCRIPTION = """minadapters: run Hugging Face encoders/decoders with AdapterHub adapters in NumPy, no torch.

examples:
  minadapters tiny-model /tmp/tiny-bert                  # small random BERT (config, weights, tokenizer) + demo adapter
  minadapters run --model /tmp/tiny-bert --adapter /tmp/tiny-bert/demo_adapter "hello adapters"
  minadapters run --model DIR --adapter ADAPTER_DIR --setup "Stack(a, b)" "some text" "more text"
  minadapters run --model DIR --add "x=lora[r=4]" --setup "Parallel(demo, x)" --adapter DIR/demo_adapter "text"
  minadapters embed --model sentence-transformers/all-MiniLM-L6-v2 --input texts.txt --output emb.npy
  minadapters summary --arch bert-base-uncased --config lora seq_bn "prefix_tuning[prefix_length=20]"
  minadapters train --model DIR --config "lora[r=8]" --data rows.jsonl --output DIR/trained   # adapter + head
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


def _load_for_run(args):
    """Model, tokenizer and the active setup from --model/--adapter/--fusion/--add/--setup."""
    model_dir = resolve_model_dir(args.model, revision=args.revision)
    model = AutoAdapterModel.from_pretrained(model_dir, backend=args.backend)   # heads load with the adapters
    names = [model.load_adapter(d) for d in args.adapter]
    for spec in args.add:
        name, sep, config = spec.partition("=")
        if not sep or not name or not config:
            raise ValueError(f"--add {spec!r}: expected NAME=CONFIG, e.g. --add 'x=lora[r=4]'.")
        model.add_adapter(name.strip(), config=config.strip())
        names.append(name.strip())
    fusions = [model.load_adapter_fusion(d) for d in args.fusion]
    for d in args.head:
        model.load_head(d)
    if args.setup:
        model.active_adapters = parse_setup(args.setup)
    elif fusions:
        model.active_adapters = Fuse(*model.adapters_config.fusions[fusions[-1]][1], name=fusions[-1])
    elif names:
        model.active_adapters = Stack(*names)
    return model, AutoTokenizer.from_pretrained(model_dir), names, fusions


def _encode(tok, texts, model):
    """Tokenizer's own ids and attention mask, padded to the longest input (never tokenizer.json's fixed padding),
    truncated to what the model's positions allow."""
    limit = tok.model_max_length
    max_pos = getattr(model.config, "max_position_embeddings", None)
    if max_pos:
        offset = (getattr(model.config, "pad_token_id", 0) or 0) + 1 if model.model_type in (
            "roberta", "xlm-roberta") else 0
        limit = min(limit, max_pos - offset)
    return tok(texts, padding=True, truncation=True, max_length=int(limit))


def _channels(setup, n):
    if isinstance(setup, Parallel) and len(setup.children) == n:
        return [repr(c) if not isinstance(c, str) else c for c in setup.children]
    return [f"channel {i}" for i in range(n)]


def cmd_run(args) -> int:
    model, tok, names, fusions = _load_for_run(args)
    enc = _encode(tok, args.text, model)
    head = model.active_head
    if model.arch.is_encoder_decoder and (head is None or (isinstance(head, str) and
                                                          model.heads[head].head_type == "seq2seq_lm")):
        return _run_seq2seq(model, tok, enc, args, names, fusions)
    t0 = time.perf_counter()
    out = model(**enc)
    dt = time.perf_counter() - t0
    ids, mask = enc["input_ids"], enc["attention_mask"]
    B = ids.shape[0]
    print(f"model: {args.model} ({model.model_type}, {model.num_layers} layers, hidden {model.hidden_size}, "
          f"backend {model.backend})")
    print(f"adapters: {', '.join(names) or 'none'}{'; fusions: ' + ', '.join(fusions) if fusions else ''}; "
          f"active: {model.active_adapters}")
    if model.active_head is not None:                 # predictions of the active head(s), one line per input
        print(f"input_ids: {ids.shape}; active head: {model.active_head!r}")
        for line in prediction_lines(model, out, tok, args.text, ids, mask):
            print(line)
        print(f"forward time: {dt * 1000:.1f} ms")
        if args.output:
            outs = list(out) if isinstance(out, MultiHeadOutput) else [out]
            arrays = {f"head{i}_{k}": v for i, o in enumerate(outs) for k, v in o.items()
                      if isinstance(v, np.ndarray)}
            np.savez(args.output, input_ids=ids, attention_mask=mask, **arrays)
            print(f"saved: {args.output}")
        return 0
    print(f"input_ids: {ids.shape}; last_hidden_state: {out.last_hidden_state.shape}")
    pooled = out.pooler_output is not None
    if pooled:
        vec = out.pooler_output
    else:                                             # decoders: the last real token of each row
        n = out.last_hidden_state.shape[0] // B
        last = np.tile(mask.shape[1] - 1 - np.argmax(mask[:, ::-1] > 0, axis=1), n)
        vec = out.last_hidden_state[np.arange(n * B), last]
    n_ch = vec.shape[0] // B
    labels = _channels(model.active_adapters, n_ch)
    for c in range(n_ch):
        if n_ch > 1:
            print(f"{labels[c]}:")
        for b, text in enumerate(args.text):
            head = " ".join(f"{v:+.4f}" for v in vec[c * B + b, :6])
            print(f"{'  ' if n_ch > 1 else ''}[{b}] {text[:40]!r}: {'pooled' if pooled else 'last token'} [{head} ...]")
    print(f"forward time: {dt * 1000:.1f} ms")
    if args.output:
        np.savez(args.output, input_ids=ids, attention_mask=mask, last_hidden_state=out.last_hidden_state,
                 **({"pooler_output": out.pooler_output} if pooled else {}))
        print(f"saved: {args.output}")
    return 0


def _run_seq2seq(model, tok, enc, args, names, fusions) -> int:
    """Encoder-decoders: greedy generation from each input, printed as text (the checkpoint's LM projection, or an
    active seq2seq_lm head). Spec: ENCDEC-5."""
    ids, mask = enc["input_ids"], enc["attention_mask"]
    n_new = args.max_new_tokens
    t0 = time.perf_counter()
    out = model.generate(ids, max_new_tokens=n_new, attention_mask=mask)
    dt = time.perf_counter() - t0
    layers = "+".join(str(model.arch.num_layers(model.config, s)) for s in model.arch.stacks)
    print(f"model: {args.model} ({model.model_type}, {layers} layers, hidden {model.hidden_size}, "
          f"backend {model.backend})")
    print(f"adapters: {', '.join(names) or 'none'}{'; fusions: ' + ', '.join(fusions) if fusions else ''}; "
          f"active: {model.active_adapters}")
    print(f"input_ids: {ids.shape}; generated: {out.shape} (greedy, at most {n_new} new tokens)")
    for b, text in enumerate(args.text):
        print(f"[{b}] {text[:40]!r} -> {tok.decode(out[b].tolist(), skip_special_tokens=True)!r}")
    print(f"generate time: {dt * 1000:.1f} ms")
    if args.output:
        np.savez(args.output, input_ids=ids, attention_mask=mask, generated=out)
        print(f"saved: {args.output}")
    return 0


def _read_texts(args) -> list:
    texts = list(args.text)
    if args.input:
        f = sys.stdin if args.input == "-" else open(args.input, encoding="utf-8")
        try:
            texts += [line.rstrip("\n") for line in f if line.strip()]
        finally:
            if f is not sys.stdin:
                f.close()
    if not texts:
        raise ValueError("embed: no texts; give them as arguments or with --input FILE (one per line, '-' = stdin).")
    return texts


def cmd_embed(args) -> int:
    """Sentence embeddings (sentence-transformers pooling + normalisation) as JSONL or .npy. Spec: ST-1."""
    texts = _read_texts(args)
    if args.output and not args.output.endswith((".npy", ".jsonl")):
        raise ValueError(f"--output {args.output!r}: expected a .npy or .jsonl file name (default: JSONL on stdout).")
    model, tok, _, _ = _load_for_run(args)
    show = (not args.quiet) and len(texts) > args.batch_size
    emb = model.encode(texts, batch_size=args.batch_size, normalize_embeddings=args.normalize, tokenizer=tok,
                       show_progress_bar=show)
    if args.output and args.output.endswith(".npy"):
        np.save(args.output, emb)
        print(f"saved {emb.shape} float32 embeddings to {args.output}", file=sys.stderr)
        return 0
    f = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        for i, row in enumerate(emb):
            text = texts[i % len(texts)]
            f.write(json.dumps({"index": i, "text": text, "embedding": [float(v) for v in row]}) + "\n")
    finally:
        if f is not sys.stdout:
            f.close()
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


def cmd_train(args) -> int:
    """Fine-tune an adapter + classification head (training/fit.py). Spec: TRAIN-CLI."""
    training_fit.check_positive(args)
    return training_fit.cmd_train(args, AutoAdapterModel, AutoTokenizer, resolve_model_dir)


# Subcommands with their own argument parsers: main() hands them the rest of the command line.
DELEGATES = {"conformance": conformance_cli.main, "bench": bench_rows.main}
def _model_args(p):
    p.add_argument("--model", required=True, help="HF model directory or Hugging Face id (config.json, weights, "
                   "tokenizer.json)")
    p.add_argument("--revision", help="branch, tag or commit of a Hugging Face id (default main)")
    p.add_argument("--adapter", action="append", default=[], help="AdapterHub adapter directory or Hugging Face id "
                   "(repeatable)")
    p.add_argument("--add", action="append", default=[], metavar="NAME=CONFIG",
                   help="add a freshly initialised adapter, e.g. 'x=lora[r=4]' (repeatable)")
    p.add_argument("--head", action="append", default=[], help="prediction head directory (head_config.json + "
                   "weights, from save_head); the last one loaded is active unless an adapter names another")
    p.add_argument("--fusion", action="append", default=[], help="AdapterFusion directory (its adapters must be "
                   "loaded with --adapter); activates Fuse(...) unless --setup is given")
    p.add_argument("--setup", help='composition, e.g. "Stack(a, b)" or "Parallel(a, b)" (default: Stack of the '
                   "loaded adapters)")
    p.add_argument("--backend", default=None, help="numpy or native (default: minadapters.get_backend())")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minadapters", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command")
    r = sub.add_parser("run", help="tokenize TEXT, run the model with adapters, print a short result")
    _model_args(r)
    r.add_argument("--output", help="also save input_ids, attention_mask, last_hidden_state (+ pooler_output) to "
                   "this .npz file")
    r.add_argument("--max-new-tokens", type=int, default=20, help="encoder-decoders: generate at most this many "
                   "tokens (default 20)")
    r.add_argument("text", nargs="+")
    r.set_defaults(fn=cmd_run)
    e = sub.add_parser("embed", help="sentence embeddings (sentence-transformers pooling / normalisation)")
    _model_args(e)
    e.add_argument("--input", help="file with one text per line ('-' = stdin), in addition to TEXT arguments")
    e.add_argument("--batch-size", type=int, default=32, help="texts per forward (default 32)")
    e.add_argument("--normalize", action="store_true", help="L2-normalise even without a Normalize module")
    e.add_argument("--output", help="FILE.npy (float32 array) or FILE.jsonl (default: JSONL on stdout)")
    e.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    e.add_argument("text", nargs="*")
    e.set_defaults(fn=cmd_embed)
    s = sub.add_parser("summary", help="parameters added per adapter config (like adapters' adapter_summary)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--arch", default="bert-base-uncased", help="architecture preset, e.g. bert-base-uncased, "
                   "roberta-base, gpt2")
    g.add_argument("--model", help="HF model directory (only config.json is read)")
    s.add_argument("--config", nargs="+", required=True, help='adapter configs: identifiers or strings like "lora[r=4]"')
    s.set_defaults(fn=cmd_summary)
    t = sub.add_parser("tiny-model", help="write a small random HF model directory (for trying things out)")
    t.add_argument("directory")
    t.add_argument("--arch", default="bert", choices=["bert", "roberta", "bart", "t5", "mt5"])
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--adapter", default="seq_bn|lora[r=4]", help="config of a random demo adapter saved to "
                   "DIR/demo_adapter ('' for none)")
    t.set_defaults(fn=cmd_tiny_model)
    training_fit.add_train_parser(sub)
    sub.choices["train"].set_defaults(fn=cmd_train)
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
