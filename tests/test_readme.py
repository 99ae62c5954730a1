"""Every ```python block of README.md runs, in order, as one session (block i runs after blocks 0..i-1), so the
README cannot drift from the code. The Hugging Face ids the README names resolve, offline, to tiny random
stand-ins laid out in a temporary HF cache (HF_HUB_CACHE, HF_HUB_OFFLINE=1): the real models are not needed.
The first ```bash command (tiny-model + run) is run through the CLI too."""
import os
import re
import shlex

import numpy as np
import pytest

from minadapters.cli import main
from minadapters.sentence import write_sentence_config
from minadapters.tiny import write_tiny_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as _f:
    README = _f.read()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)
BASH = re.findall(r"```bash\n(.*?)```", README, flags=re.S)

# Blocks that fail for a known reason owned elsewhere: strict xfail, so the marker must go once it passes.
KNOWN: dict = {}   # README text fragment -> reason its block is expected to fail (none today)
SHA = "0123456789abcdef0123456789abcdef01234567"
GPT2_WORDS = "Adapters are small modules that adapt a frozen model to new tasks".split()


def _snapshot(cache, repo_id):
    root = os.path.join(cache, "models--" + repo_id.replace("/", "--"))
    os.makedirs(os.path.join(root, "refs"), exist_ok=True)
    with open(os.path.join(root, "refs", "main"), "w") as f:
        f.write(SHA)
    return os.path.join(root, "snapshots", SHA)


def _tiny_gpt2(directory):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from minadapters.io import atomic_write_json
    from minadapters.io.safetensors_io import save_safetensors
    from minadapters.models import gpt2
    os.makedirs(directory, exist_ok=True)
    vocab = {w: i for i, w in enumerate(["<|endoftext|>"] + GPT2_WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(os.path.join(directory, "tokenizer.json"))
    raw = dict(model_type="gpt2", n_embd=24, n_layer=2, n_head=4, n_inner=40, vocab_size=len(vocab), n_positions=32,
               bos_token_id=0, eos_token_id=0)
    rng = np.random.default_rng(0)
    weights = {}
    for k, s in gpt2.expected_shapes(gpt2.Config.from_dict(raw)).items():
        w = (rng.standard_normal(s) * 0.5 + (1.0 if k.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")) else 0))
        weights[f"transformer.{k}"] = (w.T if k.split(".", 2)[-1] in gpt2.CONV1D_WEIGHTS else w).astype(np.float32)
    save_safetensors(os.path.join(directory, "model.safetensors"), weights)
    atomic_write_json(os.path.join(directory, "config.json"), raw)


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("readme_hf") / "hub")
    st = write_tiny_model(_snapshot(cache, "sentence-transformers/all-MiniLM-L6-v2"), seed=11)
    write_sentence_config(st, pooling=("mean_tokens",), normalize=True)
    _tiny_gpt2(_snapshot(cache, "openai-community/gpt2"))
    return cache


@pytest.fixture
def session_env(hf_cache, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", hf_cache)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)


def _known(block):
    return next((why for key, why in KNOWN.items() if key in block), None)


def _params():
    out = []
    for i, block in enumerate(BLOCKS):
        first = block.strip().splitlines()[0][:50]
        why = _known(block)
        marks = [pytest.mark.xfail(reason=why, strict=True, raises=ValueError)] if why else []
        out.append(pytest.param(i, id=f"block{i}: {first}", marks=marks))
    return out


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 4, f"README.md has {len(BLOCKS)} ```python blocks, but should show the API in several"


@pytest.mark.parametrize("i", _params())
def test_readme_block_runs(i, session_env, capsys):
    ns = {"__name__": "__readme__"}
    for j in range(i):                       # the session so far
        try:
            exec(compile(BLOCKS[j], f"README.md block {j}", "exec"), ns)
        except Exception:
            if not _known(BLOCKS[j]):
                raise
            # a known-failing earlier block: its lines up to the failure have run; the later blocks go on
    exec(compile(BLOCKS[i], f"README.md block {i}", "exec"), ns)
    for name in re.findall(r"^(\w+) = ", BLOCKS[i], flags=re.M):
        assert name in ns, f"README block {i} should define {name!r}"


def test_readme_first_command_runs(tmp_path, capsys, monkeypatch):
    """The first bash block: `pip install . && minadapters tiny-model DIR && minadapters run ...` (pip skipped)."""
    monkeypatch.chdir(tmp_path)
    cmds = [shlex.split(c.strip()) for c in BASH[0].split("&&")]
    assert cmds[0][:2] == ["pip", "install"], cmds[0]
    ran = 0
    for argv in cmds[1:]:
        assert argv[0] == "minadapters", argv
        argv = [a.replace("/tmp/tiny-bert", str(tmp_path / "tiny-bert")) for a in argv[1:]]
        assert main(argv) == 0, argv
        ran += 1
    out = capsys.readouterr().out
    assert ran == 2 and "active: Stack('demo')" in out, out
    # the printed vectors are the model's: each text alone (no padding), with the demo adapter
    import minadapters as ma
    d = str(tmp_path / "tiny-bert")
    model = ma.AutoModel.from_pretrained(d)
    model.load_adapter(f"{d}/demo_adapter", set_active=True)
    tok = ma.AutoTokenizer.from_pretrained(d)
    texts = cmds[-1][-2:]
    for b, text in enumerate(texts):
        pooled = model(**tok([text])).pooler_output[0]
        head = " ".join(f"{v:+.4f}" for v in pooled[:6])
        assert f"[{b}] {text!r}: pooled [{head}" in out, f"{text!r}: expected [{head} ...] in\n{out}"
