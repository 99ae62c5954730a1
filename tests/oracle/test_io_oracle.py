"""Oracle: our torch-free file layer against real torch.save / torch.load / adapters 1.3.0.

Spec: IO-1, IO-3..IO-7."""

import collections
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="oracle: torch not installed")

from minadapters.io import (load_safetensors, load_torch_file, read_weights, save_safetensors,  # noqa: E402
                            save_torch_file)

pytestmark = pytest.mark.upstream


def _torch_state():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g)
    sd = collections.OrderedDict()
    sd["contig"] = base
    sd["transposed"] = base.t()                       # shares base's storage, strides (1, 6)
    sd["row_view"] = base[2]                          # storage offset 12
    sd["col_view"] = base[:, 3]                       # stride 6, offset 3
    sd["sliced"] = base[1:3, ::2]                     # offset 6, strides (6, 2)
    sd["expanded"] = base[0, :3].unsqueeze(0).expand(2, 3)   # stride 0
    sd["half"] = torch.randn(3, 5, generator=g).half()
    sd["bf16"] = torch.randn(7, generator=g).bfloat16()
    sd["bf16_t"] = torch.randn(3, 2, generator=g).bfloat16().t()
    sd["int64"] = torch.arange(-5, 5)
    sd["int32"] = torch.arange(6, dtype=torch.int32).reshape(2, 3)
    sd["int8"] = torch.tensor([-128, 0, 127], dtype=torch.int8)
    sd["uint8"] = torch.tensor([0, 255], dtype=torch.uint8)
    sd["bool"] = torch.tensor([True, False, True])
    sd["double"] = torch.randn(2, 2, dtype=torch.float64, generator=g)
    sd["scalar"] = torch.tensor(3.5)
    sd["empty"] = torch.zeros(0, 3)
    sd["param"] = torch.nn.Parameter(torch.randn(2, 3, generator=g))
    return sd


def _expected(t):
    t = t.detach()
    return t.float().numpy() if t.dtype == torch.bfloat16 else t.contiguous().numpy()


def _assert_equal_state(got, sd):
    assert list(got) == list(sd), f"keys {list(got)}, but should be {list(sd)}"
    for k, t in sd.items():
        want = _expected(t)
        g = got[k]
        assert g.dtype == want.dtype and g.shape == want.shape, f"{k}: {g.dtype}{g.shape} vs {want.dtype}{want.shape}"
        assert np.array_equal(g, want), f"{k}: values differ"
        assert g.flags.c_contiguous, k


@pytest.mark.spec("IO-3")
@pytest.mark.spec("IO-4")
@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_read_torch_save(tmp_path, zip_format):
    sd = _torch_state()
    path = tmp_path / "pytorch_model.bin"
    torch.save(sd, path, _use_new_zipfile_serialization=zip_format)
    _assert_equal_state(load_torch_file(path), sd)


@pytest.mark.spec("IO-6")
def test_torch_loads_our_file(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {"w": rng.standard_normal((5, 3)).astype(np.float32),
              "h": rng.standard_normal(4).astype(np.float16), "d": rng.standard_normal((2, 2)),
              "i64": np.arange(-3, 3), "i32": np.arange(4, dtype=np.int32), "i16": np.arange(3, dtype=np.int16),
              "i8": np.array([-1, 2], np.int8), "u8": np.array([0, 200], np.uint8),
              "b": np.array([True, False]), "s": np.array(2.0, np.float32), "e": np.zeros((0, 2), np.float32)}
    path = tmp_path / "pytorch_adapter.bin"
    save_torch_file(path, arrays)
    for mmap in (False, True):
        sd = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        assert isinstance(sd, collections.OrderedDict) and list(sd) == list(arrays)
        for k, a in arrays.items():
            t = sd[k]
            assert t.numpy().dtype == a.dtype and tuple(t.shape) == a.shape, k
            assert np.array_equal(t.numpy(), a), k


@pytest.mark.spec("IO-3")
def test_layout_matches_torch_save(tmp_path):
    torch.save(collections.OrderedDict(a=torch.ones(3), b=torch.zeros(2)), tmp_path / "theirs.bin")
    save_torch_file(tmp_path / "ours.bin", {"a": np.ones(3, np.float32), "b": np.zeros(2, np.float32)})
    with zipfile.ZipFile(tmp_path / "theirs.bin") as a, zipfile.ZipFile(tmp_path / "ours.bin") as b:
        theirs = [n.split("/", 1)[1] for n in a.namelist()]
        ours = [n.split("/", 1)[1] for n in b.namelist()]
        assert ours == theirs, f"records {ours}, but torch writes {theirs}"
        for name in ("version", "byteorder", ".format_version", ".storage_alignment"):
            assert b.read(f"ours/{name}") == a.read(f"theirs/{name}"), name


@pytest.mark.spec("IO-7")
def test_safetensors_against_safetensors_torch(tmp_path):
    from safetensors.torch import load_file, save_file
    sd = {"w": torch.randn(3, 4), "bf": torch.randn(5).bfloat16(), "i": torch.arange(3)}
    save_file(sd, tmp_path / "theirs.safetensors")
    got = load_safetensors(tmp_path / "theirs.safetensors")
    for k, t in sd.items():
        assert np.array_equal(got[k], _expected(t)), k
    save_safetensors(tmp_path / "ours.safetensors", {k: v for k, v in got.items()})
    back = load_file(tmp_path / "ours.safetensors")
    for k in got:
        assert np.array_equal(back[k].numpy(), got[k]), k


def _tiny_bert_with_adapter():
    adapters = pytest.importorskip("adapters", reason="oracle: adapters not installed")
    from transformers import BertConfig, BertModel
    torch.manual_seed(0)
    model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=37, vocab_size=99))
    adapters.init(model)
    model.add_adapter("a", config="seq_bn")
    with torch.no_grad():                              # non-zero up-projections: values matter
        for name, p in model.named_parameters():
            if ".adapters.a." in name:
                p.copy_(torch.randn_like(p))
    return model


@pytest.mark.spec("IO-8")
def test_read_adapters_save_adapter(tmp_path):
    model = _tiny_bert_with_adapter()
    model.save_adapter(str(tmp_path), "a")
    want = {k: v for k, v in model.state_dict().items() if ".adapters.a." in k}
    got = read_weights(tmp_path)
    assert sorted(got) == sorted(want) and len(want) > 0, f"keys {sorted(got)}"
    for k, t in want.items():
        assert np.array_equal(got[k], t.numpy()), k


@pytest.mark.spec("IO-6")
def test_adapters_load_adapter_reads_our_file(tmp_path):
    model = _tiny_bert_with_adapter()
    model.save_adapter(str(tmp_path), "a")
    weights = read_weights(tmp_path)
    shifted = {k: (v + 1.0).astype(v.dtype) for k, v in weights.items()}
    save_torch_file(tmp_path / "pytorch_adapter.bin", shifted)      # replace torch's file with ours
    fresh = _tiny_bert_with_adapter()
    fresh.delete_adapter("a")
    name = fresh.load_adapter(str(tmp_path))
    sd = fresh.state_dict()
    for k, v in shifted.items():
        assert np.array_equal(sd[k].numpy(), v), f"{k} not loaded from our file (adapter {name!r})"


@pytest.mark.spec("IO-9")
@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "bin"])
@pytest.mark.parametrize("shard", [None, "20KB"], ids=["single", "sharded"])
def test_read_model_weights_from_save_pretrained(tmp_path, safe, shard):
    from transformers import BertConfig, BertModel

    from minadapters.io import read_model_weights
    torch.manual_seed(0)
    model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=37, vocab_size=99))
    kw = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(tmp_path, safe_serialization=safe, **kw)
    if shard:
        assert any(p.name.endswith(".index.json") for p in tmp_path.iterdir()), "expected a sharded save"
    got = read_model_weights(tmp_path)
    want = model.state_dict()
    assert sorted(got) == sorted(want), f"missing {sorted(set(want) - set(got))}, extra {sorted(set(got) - set(want))}"
    for k, t in want.items():
        assert np.array_equal(got[k], t.numpy()), k
