"""Hugging Face ids: the local HF cache layout, revisions, offline errors, and downloads from a loopback stand-in
for the Hub (HF_ENDPOINT). Spec: HUB-1."""
import os
import shutil

import numpy as np
import pytest

import minadapters as ma
from minadapters import hub
from minadapters.tiny import write_demo_adapter, write_tiny_model

from hub_server import FakeHub

SHA_A = "a" * 40
SHA_B = "b" * 40


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Two tiny BERTs (different seeds), a demo adapter and a fusion over two adapters, as plain directories."""
    root = tmp_path_factory.mktemp("hubsrc")
    a = write_tiny_model(str(root / "a"), seed=1)
    b = write_tiny_model(str(root / "b"), seed=2)
    adapter = write_demo_adapter(a, name="demo", config="seq_bn", seed=3)
    m = ma.AutoModel.from_pretrained(a, seed=0)
    m.add_adapter("f1", config="seq_bn")
    m.add_adapter("f2", config="seq_bn")
    m.add_adapter_fusion(["f1", "f2"])
    for n in ("f1", "f2"):
        m.save_adapter(str(root / n), n)
    m.save_adapter_fusion(str(root / "fusion"), ["f1", "f2"])
    return {"a": a, "b": b, "adapter": adapter, "f1": str(root / "f1"), "f2": str(root / "f2"),
            "fusion": str(root / "fusion")}


def _put(cache, repo_id, sha, src, refs=("main",)):
    root = os.path.join(cache, "models--" + repo_id.replace("/", "--"))
    snap = os.path.join(root, "snapshots", sha)
    shutil.copytree(src, snap, ignore=shutil.ignore_patterns("*_adapter"))
    os.makedirs(os.path.join(root, "refs"), exist_ok=True)
    for r in refs:
        with open(os.path.join(root, "refs", r), "w") as f:
            f.write(sha)
    return snap


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    cache = str(tmp_path / "hf" / "hub")
    os.makedirs(cache)
    monkeypatch.setenv("HF_HUB_CACHE", cache)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def _hidden(model, seed=0):
    ids = np.random.default_rng(seed).integers(5, 30, (2, 7))
    return model(input_ids=ids).last_hidden_state


def test_cache_dir_follows_hf_env(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub.cache_dir() == str(tmp_path / "home" / "hub")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "c"))
    assert hub.cache_dir() == str(tmp_path / "c")


@pytest.mark.spec("HUB-1")
def test_model_from_cache_by_id_and_revision(sources, offline_cache):
    _put(offline_cache, "org/tiny", SHA_A, sources["a"])
    _put(offline_cache, "org/tiny", SHA_B, sources["b"], refs=("v2",))
    want_a = _hidden(ma.AutoModel.from_pretrained(sources["a"]))
    want_b = _hidden(ma.AutoModel.from_pretrained(sources["b"]))
    for kw, want in (({}, want_a), ({"revision": "main"}, want_a), ({"revision": "v2"}, want_b),
                     ({"revision": SHA_B}, want_b)):
        got = _hidden(ma.AutoModel.from_pretrained("org/tiny", **kw))
        np.testing.assert_array_equal(got, want, err_msg=f"from_pretrained('org/tiny', {kw})")
    tok = ma.AutoTokenizer.from_pretrained("org/tiny", revision="v2")
    assert tok(["hello adapters"])["input_ids"].shape == (1, 4)


@pytest.mark.spec("HUB-1")
def test_hf_home_layout_and_local_files_only(sources, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    _put(str(tmp_path / "home" / "hub"), "org/tiny", SHA_A, sources["a"])
    m = ma.AutoModel.from_pretrained("org/tiny", local_files_only=True)
    np.testing.assert_array_equal(_hidden(m), _hidden(ma.AutoModel.from_pretrained(sources["a"])))
    with pytest.raises(FileNotFoundError, match=r"'config\.json'.*local_files_only=True.*hf download org/other"):
        ma.AutoModel.from_pretrained("org/other", local_files_only=True)


@pytest.mark.spec("HUB-1")
def test_offline_errors_name_the_missing_file(sources, offline_cache):
    with pytest.raises(ma.HubFileNotFoundError) as e:
        ma.AutoModel.from_pretrained("org/absent")
    msg = str(e.value)
    assert isinstance(e.value, FileNotFoundError)
    assert "'config.json'" in msg and "HF_HUB_OFFLINE" in msg and "hf download org/absent" in msg, msg
    assert offline_cache in msg, msg
    snap = _put(offline_cache, "org/noweights", SHA_A, sources["a"])
    os.remove(os.path.join(snap, "model.safetensors"))
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors.*pytorch_model\.bin.*hf download org/noweights"):
        ma.AutoModel.from_pretrained("org/noweights")
    with pytest.raises(FileNotFoundError, match=r"revision 'v9'"):
        ma.AutoModel.from_pretrained("org/noweights", revision="v9")


def test_paths_that_are_not_ids(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory, and not a Hugging Face repo id"):
        ma.AutoModel.from_pretrained(str(tmp_path / "nope"))
    m = ma.AutoModel.from_pretrained(write_tiny_model(str(tmp_path / "m")))
    with pytest.raises(FileNotFoundError, match="AdapterHub index ids .* not supported"):
        m.load_adapter("sentiment/sst-2@ukp")


@pytest.mark.spec("HUB-1")
def test_adapter_and_fusion_from_cache(sources, offline_cache):
    _put(offline_cache, "AdapterHub/demo", SHA_A, sources["adapter"])
    _put(offline_cache, "AdapterHub/f1", SHA_A, sources["f1"])
    _put(offline_cache, "AdapterHub/f2", SHA_A, sources["f2"])
    _put(offline_cache, "AdapterHub/fusion", SHA_A, sources["fusion"])
    m = ma.AutoModel.from_pretrained(sources["a"])
    ref = ma.AutoModel.from_pretrained(sources["a"])
    assert m.load_adapter("AdapterHub/demo", set_active=True) == "demo"
    ref.load_adapter(sources["adapter"], set_active=True)
    np.testing.assert_array_equal(_hidden(m), _hidden(ref))
    for n in ("f1", "f2"):
        m.load_adapter(f"AdapterHub/{n}")
        ref.load_adapter(sources[n])
    assert m.load_adapter_fusion("AdapterHub/fusion", set_active=True) == "f1,f2"
    ref.load_adapter_fusion(sources["fusion"], set_active=True)
    np.testing.assert_array_equal(_hidden(m), _hidden(ref))
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        m.load_adapter("AdapterHub/missing", version="main")


def _repo(src, sha, extra_refs=()):
    files = {}
    for dirpath, _, names in os.walk(src):
        for n in names:
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, src).replace(os.sep, "/")
            if not rel.startswith("demo_adapter"):
                with open(p, "rb") as f:
                    files[rel] = f.read()
    return {"commit": sha, "refs": {"main": sha, **{r: sha for r in extra_refs}}, "files": files}


@pytest.mark.spec("HUB-1")
def test_download_from_loopback_hub_then_offline(sources, tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub", reason="huggingface_hub (installed with tokenizers) is needed to download")
    cache = str(tmp_path / "cache")
    monkeypatch.setenv("HF_HUB_CACHE", cache)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    repos = {"org/tiny": _repo(sources["a"], SHA_A, extra_refs=("v1",)),
             "AdapterHub/demo": _repo(sources["adapter"], SHA_B)}
    with FakeHub(repos, max_requests=100, lifetime_s=60) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        m = ma.AutoModel.from_pretrained("org/tiny", revision="v1")
        assert m.load_adapter("AdapterHub/demo", set_active=True) == "demo"
        tok = ma.AutoTokenizer.from_pretrained("org/tiny")
        fetched = {p.split("/resolve/", 1)[1] for _, p in server.requests if "/resolve/" in p}   # hub 1.x+ also calls /api
        assert f"v1/config.json" in fetched and "v1/model.safetensors" in fetched, fetched
        assert "main/pytorch_adapter.bin" in fetched or "main/adapter.safetensors" in fetched, fetched
        with pytest.raises(ma.HubFileNotFoundError, match=r"org/missing.*RepositoryNotFoundError"):
            ma.AutoModel.from_pretrained("org/missing")
        n_requests = len(server.requests)
    assert os.path.isfile(os.path.join(cache, "models--org--tiny", "refs", "v1"))
    ref = ma.AutoModel.from_pretrained(sources["a"])
    ref.load_adapter(sources["adapter"], set_active=True)
    np.testing.assert_array_equal(_hidden(m), _hidden(ref))
    np.testing.assert_array_equal(tok(["hello"])["input_ids"], ma.AutoTokenizer.from_pretrained(sources["a"])(
        ["hello"])["input_ids"])
    # the server is gone: the cache alone serves the same ids now
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    m2 = ma.AutoModel.from_pretrained("org/tiny", revision="v1")
    m2.load_adapter("AdapterHub/demo", set_active=True)
    np.testing.assert_array_equal(_hidden(m2), _hidden(ref))
    assert len(server.requests) == n_requests


def test_failing_endpoint_is_a_file_not_found(tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with FakeHub({}, lifetime_s=30, fail_status=418) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        with pytest.raises(FileNotFoundError, match=r"'config\.json'.*(download from http://127\.0\.0\.1|HTTPError)"):
            ma.AutoModel.from_pretrained("org/tiny")
