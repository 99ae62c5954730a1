"""``minadapters train``: fine-tune one adapter and a classification head on (text, label) rows, evaluate on a
held-out split, save in AdapterHub layout. Spec: TRAIN-CLI (spec/training.md)."""
from __future__ import annotations

import csv
import json
import os
import sys
import time

import numpy as np

from ..errors import ConfigError
from .optim import AdamW, LinearSchedule, clip_grad_norm_


def read_rows(path: str) -> list:
    """(text, label) pairs from a JSONL file ({"text": ..., "label": ...} per line) or a CSV file with a header
    naming ``text`` and ``label``. ValueError naming the line that lacks them."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--data {path!r}: no such file.")
    rows = []
    if path.endswith(".csv"):
        with open(path, newline="", encoding="utf-8") as f:
            for n, rec in enumerate(csv.DictReader(f), 2):
                if rec.get("text") is None or rec.get("label") in (None, ""):
                    raise ValueError(f"{path}:{n}: a CSV row needs the columns 'text' and 'label'.")
                rows.append((rec["text"], rec["label"]))
    else:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: not JSON ({e.msg}).") from None
                if not isinstance(rec, dict) or "text" not in rec or "label" not in rec:
                    raise ValueError(f"{path}:{n}: each line needs an object with 'text' and 'label'.")
                rows.append((str(rec["text"]), rec["label"]))
    if len(rows) < 2:
        raise ValueError(f"--data {path!r}: {len(rows)} rows; training needs at least 2.")
    return rows


def split_rows(rows, eval_fraction: float, seed: int):
    """A seeded shuffle, then the last ``eval_fraction`` of the rows held out (at least one row each side)."""
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"--eval-fraction={eval_fraction}; expected a number in [0, 1).")
    order = np.random.default_rng(seed).permutation(len(rows))
    n_eval = min(max(int(round(len(rows) * eval_fraction)), 1 if eval_fraction > 0 else 0), len(rows) - 1)
    rows = [rows[i] for i in order]
    return rows[:len(rows) - n_eval], rows[len(rows) - n_eval:]


def accuracy(model, encode, rows, label2id, batch_size: int) -> float:
    """Share of ``rows`` whose argmax logit is their label (inference forward, eval mode)."""
    hits = 0
    for i in range(0, len(rows), batch_size):
        part = rows[i:i + batch_size]
        logits = model(**encode([t for t, _ in part])).logits
        hits += int((logits.argmax(-1) == np.array([label2id[str(y)] for _, y in part])).sum())
    return hits / max(len(rows), 1)


def fit(model, encode, train, label2id, *, name, epochs, batch_size, lr, weight_decay, warmup, max_grad_norm,
        seed, log=None) -> list:
    """AdamW steps over ``train`` for ``epochs`` (seeded shuffles), a progress line per step; returns the losses.
    Spec: TRAIN-CLI."""
    log = sys.stderr if log is None else log
    opt = AdamW(model.trainable_parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * ((len(train) + batch_size - 1) // batch_size)
    sched = LinearSchedule(opt, int(warmup * steps) if warmup < 1 else int(warmup), steps)
    rng = np.random.default_rng(seed)
    losses, seen, t0, step = [], 0, time.perf_counter(), 0
    for _ in range(epochs):
        order = rng.permutation(len(train))
        for i in range(0, len(order), batch_size):
            part = [train[j] for j in order[i:i + batch_size]]
            model.zero_grad()
            out = model.forward_backward(**encode([t for t, _ in part]),
                                         labels=np.array([label2id[str(y)] for _, y in part]))
            if max_grad_norm:
                clip_grad_norm_(model.grads, max_grad_norm)
            opt.step(model.grads)
            sched.step()
            step += 1
            seen += len(part)
            losses.append(float(out.loss))
            rate = seen / max(time.perf_counter() - t0, 1e-9)
            print(f"\r{name}: step {step}/{steps}  loss {losses[-1]:.4f}  lr {opt.lr:.2e}  {rate:.1f} examples/s",
                  end="", file=log, flush=True)
    print(file=log)
    return losses


def cmd_train(args, model_class, tokenizer_class, resolve) -> int:
    """The ``train`` subcommand (classification head). Spec: TRAIN-CLI."""
    if args.head != "classification":
        raise ValueError(f"--head {args.head!r}: this slice trains 'classification' heads only.")
    model_dir = resolve(args.model)
    model = model_class.from_pretrained(model_dir, backend=args.backend, seed=args.seed)
    tok = tokenizer_class.from_pretrained(model_dir)
    rows = read_rows(args.data)
    train, held_out = split_rows(rows, args.eval_fraction, args.seed)
    labels = sorted({str(y) for _, y in rows})
    if len(labels) < 2:
        raise ValueError(f"--data {args.data!r}: one label ({labels[0]!r}); classification needs at least two.")
    label2id = {y: i for i, y in enumerate(labels)}
    model.add_adapter(args.name, config=args.config)
    model.add_classification_head(args.name, num_labels=len(labels), id2label=dict(enumerate(labels)))
    model.train_adapter(args.name)
    model.manual_seed(args.seed)          # train() mode: config.json's dropout with seeded masks (GRAD-DROPOUT)
    limit = min(tok.model_max_length, args.max_length)

    def encode(texts):
        enc = tok(texts, padding=True, truncation=True, max_length=int(limit))
        return {k: enc[k] for k in ("input_ids", "attention_mask")}
    print(f"training {args.name!r} ({args.config}) + classification head ({len(labels)} labels) on {len(train)} rows; "
          f"{len(held_out)} held out", file=sys.stderr)
    losses = fit(model, encode, train, label2id, name=args.name, epochs=args.epochs, batch_size=args.batch_size,
                 lr=args.lr, weight_decay=args.weight_decay, warmup=args.warmup, max_grad_norm=args.max_grad_norm,
                 seed=args.seed)
    result = {"steps": len(losses), "first_loss": losses[0], "last_loss": losses[-1]}
    model.eval()
    if held_out:
        result["eval_accuracy"] = accuracy(model, encode, held_out, label2id, args.batch_size)
    if args.output:
        model.save_adapter(args.output, args.name)
        result["saved"] = args.output
    print(json.dumps(result))
    return 0


def add_train_parser(sub) -> None:
    t = sub.add_parser("train", help="fine-tune an adapter + classification head on (text, label) rows")
    t.add_argument("--model", required=True, help="HF model directory or Hugging Face id")
    t.add_argument("--config", default="seq_bn", help="adapter config, e.g. seq_bn or 'lora[r=8]' (default seq_bn)")
    t.add_argument("--head", default="classification", help="head type (this slice: classification)")
    t.add_argument("--data", required=True, help="FILE.jsonl ({'text', 'label'} per line) or FILE.csv (text,label)")
    t.add_argument("--name", default="adapter", help="adapter and head name (default 'adapter')")
    t.add_argument("--output", help="save the trained adapter + head here (AdapterHub layout)")
    t.add_argument("--epochs", type=int, default=3)
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--warmup", type=float, default=0.1, help="warm-up steps (< 1: a fraction of all steps)")
    t.add_argument("--max-grad-norm", type=float, default=1.0, help="clip gradients to this global norm (0: off)")
    t.add_argument("--eval-fraction", type=float, default=0.2, help="share of rows held out (default 0.2)")
    t.add_argument("--max-length", type=int, default=128, help="tokens per text (truncation)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--backend", default=None, help="numpy or native (default: minadapters.get_backend())")
    t.set_defaults(fn=None)


def check_positive(args) -> None:
    for field in ("epochs", "batch_size"):
        if getattr(args, field) < 1:
            raise ConfigError(f"--{field.replace('_', '-')}={getattr(args, field)}; expected an integer >= 1.")
