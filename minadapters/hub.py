"""Hugging Face ids: find a model / adapter / fusion in the local HF cache, or download it. Spec: HUB-1.

A name that is an existing directory is used as it is. Anything else that reads as a Hub repo id
(``org/name`` or ``name``) is looked up in the Hugging Face cache laid out by huggingface_hub::

    $HF_HUB_CACHE (else $HF_HOME/hub, else ~/.cache/huggingface/hub)
        models--<org>--<name>/refs/<branch or tag>        -> a commit hash
        models--<org>--<name>/snapshots/<commit>/<files>

When the files a load needs are all in the snapshot of ``revision`` (default "main"), nothing touches
the network. Otherwise, unless ``local_files_only=True`` or HF_HUB_OFFLINE=1, the files are downloaded
with huggingface_hub (endpoint from HF_ENDPOINT) into that cache. A file that is neither cached nor
downloadable raises HubFileNotFoundError (a FileNotFoundError) naming the file and how to get it.

Unlike transformers, a cached revision is used without asking the Hub whether the branch moved; pass a
commit hash or delete the snapshot to pick up a newer one.
"""
from __future__ import annotations

import os
import re

from .errors import HubFileNotFoundError
from .io.files import read_json

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")

MODEL_WEIGHTS = (("model.safetensors",), ("model.safetensors.index.json",), ("pytorch_model.bin",),
                 ("pytorch_model.bin.index.json",))
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
SENTENCE_FILES = ("sentence_bert_config.json", "config_sentence_transformers.json")
ADAPTER_KINDS = {
    "adapter_config.json": ("adapter.safetensors", "pytorch_adapter.bin"),
    "adapter_fusion_config.json": ("model_adapter_fusion.safetensors", "pytorch_model_adapter_fusion.bin"),
}


class _Missing(Exception):
    """A required file is absent from the place looked at (internal; becomes HubFileNotFoundError)."""

    def __init__(self, filename, reason=""):
        super().__init__(filename)
        self.filename, self.reason = filename, reason


def cache_dir() -> str:
    """The Hugging Face hub cache directory, as huggingface_hub computes it (read at call time)."""
    env = os.environ
    if env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE"):
        return os.path.expanduser(env.get("HF_HUB_CACHE") or env["HUGGINGFACE_HUB_CACHE"])
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface")
    return os.path.join(os.path.expanduser(home), "hub")


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def looks_like_repo_id(name: str) -> bool:
    """``org/name`` or ``name`` made of letters, digits, ``_.-``; never a path that starts with / . or ~."""
    return bool(_REPO_ID.match(name)) and ".." not in name and "--" not in name and len(name) <= 96


def snapshot_path(repo_id: str, revision: str | None = None, cache: str | None = None) -> str | None:
    """``snapshots/<commit>`` of ``revision`` (a branch/tag via refs/, or a commit hash), or None if not cached."""
    root = os.path.join(cache or cache_dir(), "models--" + repo_id.replace("/", "--"))
    revision = revision or "main"
    commit = revision
    if not _COMMIT.match(revision):
        ref = os.path.join(root, "refs", revision)
        if not os.path.isfile(ref):
            return None
        with open(ref) as f:
            commit = f.read().strip()
    snap = os.path.join(root, "snapshots", commit)
    return snap if os.path.isdir(snap) else None


# ------------------------------------------------------------------------------------------- file plans
# A plan asks ``get(filename, required)`` for the files one load needs; ``get`` returns a local path or None
# (optional file absent) and raises _Missing for an absent required file.

def model_plan(get) -> None:
    """config.json, one weight layout (plus its shards), tokenizer and sentence-transformers files if present."""
    get("config.json", True)
    for i, (name,) in enumerate(MODEL_WEIGHTS):
        path = get(name, i == len(MODEL_WEIGHTS) - 1 and "one of " + ", ".join(n for (n,) in MODEL_WEIGHTS))
        if path is None:
            continue
        if name.endswith(".index.json"):
            for shard in sorted(set(read_json(path).get("weight_map", {}).values())):
                get(shard, True)
        break
    for name in TOKENIZER_FILES + ("vocab.txt",):
        get(name, False)
    modules = get("modules.json", False)
    if modules is not None:
        for name in SENTENCE_FILES:
            get(name, False)
        for m in read_json(modules):
            if isinstance(m, dict) and m.get("path"):
                get(f"{m['path']}/config.json", False)


def tokenizer_plan(get) -> None:
    get("tokenizer.json", True)
    for name in TOKENIZER_FILES[1:] + ("config.json",):
        get(name, False)


def adapter_plan(config_name: str):
    """adapter_config.json (or the fusion config) and one of its two weight files."""
    st, bin_ = ADAPTER_KINDS[config_name]

    def plan(get):
        get(config_name, True)
        if get(st, False) is None:
            get(bin_, f"{bin_} or {st}")
    return plan


# ------------------------------------------------------------------------------------------- resolution

def _from_snapshot(snap):
    def get(filename, required):
        p = os.path.join(snap, *filename.split("/"))
        if os.path.isfile(p):
            return p
        if required:
            raise _Missing(filename if required is True else required)
        return None
    return get


def _downloader(repo_id, revision, cache, token):
    try:   # deferred: huggingface_hub is slow to import and needed only for a download
        import huggingface_hub
        from huggingface_hub.utils import (EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                           RevisionNotFoundError)
    except ImportError as e:
        raise HubFileNotFoundError(f"{repo_id!r} is not a local directory and not in the Hugging Face cache, and "
                                   f"huggingface_hub (needed to download it) cannot be imported: {e}. "
                                   "`pip install huggingface_hub`, or pass a local directory.") from None
    endpoint = os.environ.get("HF_ENDPOINT") or None
    snap = []

    def get(filename, required):
        try:
            path = huggingface_hub.hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache,
                                                   endpoint=endpoint, token=token)
        except LocalEntryNotFoundError as e:     # (a subclass of EntryNotFoundError) the endpoint was unreachable
            raise _Missing(filename, f"download from {endpoint or 'https://huggingface.co'} failed and the file is "
                                     f"not cached: {str(e).splitlines()[0]}") from None
        except EntryNotFoundError:
            if required:
                raise _Missing(filename if required is True else required, "the repository has no such file")
            return None
        except (RepositoryNotFoundError, RevisionNotFoundError) as e:
            raise _Missing(filename, f"{type(e).__name__}: {str(e).splitlines()[0]}") from None
        except Exception as e:   # connection refused, timeouts, HTTP 5xx: say what happened, keep the type
            raise _Missing(filename, f"download from {endpoint or 'https://huggingface.co'} failed: "
                                     f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
        if not snap:
            snap.append(path[: len(path) - len(filename)].rstrip("/\\"))
        return path
    return get, snap


def resolve(name_or_path, plan, *, what: str, revision: str | None = None, local_files_only: bool = False,
            cache_dir_: str | None = None, token=None) -> str:
    """A local directory with the files ``plan`` needs: ``name_or_path`` itself, a cached snapshot, or a fresh
    download. Spec: HUB-1. Raises HubFileNotFoundError naming the file that could not be found."""
    name = os.fspath(name_or_path)
    if os.path.isdir(name):
        return name
    if not looks_like_repo_id(name):
        hint = ""
        if "@" in name:
            hint = (" AdapterHub index ids such as 'sentiment/sst-2@ukp' are not supported (that index is archived); "
                    "use the adapter's Hugging Face id, e.g. 'AdapterHub/roberta-base-pf-imdb'.")
        raise HubFileNotFoundError(f"{what} {name!r} is not a directory, and not a Hugging Face repo id "
                                   f"('org/name') either.{hint}")
    cache = os.fspath(cache_dir_) if cache_dir_ else cache_dir()
    snap = snapshot_path(name, revision, cache)
    first_missing = None
    if snap is not None:
        try:
            plan(_from_snapshot(snap))
            return snap
        except _Missing as m:
            first_missing = m.filename
    offline = local_files_only or is_offline()
    if offline:
        why = "local_files_only=True" if local_files_only else "HF_HUB_OFFLINE is set"
        rev = revision or "main"
        where = (f"snapshot {snap} lacks {first_missing!r}" if snap else
                 f"the cache {cache} has no snapshot of {name!r} at revision {rev!r}")
        missing = first_missing or _first_file(plan)
        raise HubFileNotFoundError(
            f"{what} {name!r} is not a local directory; as a Hugging Face id, {missing!r} is not available "
            f"offline ({why}); {where}. Get it with "
            f"`hf download {name}{'' if rev == 'main' else ' --revision ' + rev}` "
            "(or huggingface_hub.snapshot_download) "
            "on a machine that is online, point HF_HOME / HF_HUB_CACHE at a cache that has it, or pass a local "
            "directory.")
    get, snaps = _downloader(name, revision, cache, token)
    try:
        plan(get)
    except _Missing as m:
        raise HubFileNotFoundError(
            f"{what} {name!r} is not a local directory; as a Hugging Face id (revision {revision or 'main'!r}) "
            f"could not get {m.filename!r}: "
            f"{m.reason or 'missing'}. "
            f"Check the id and revision; offline, fill the cache with `hf download {name}` or pass a local "
            "directory.") from None
    return snaps[0]


def _first_file(plan) -> str:
    names = []

    def get(filename, required):
        names.append(filename)
        raise _Missing(filename)
    try:
        plan(get)
    except _Missing:
        pass
    return names[0] if names else "?"


def resolve_model_dir(name_or_path, *, revision=None, local_files_only=False, cache_dir=None, token=None) -> str:
    """Model directory (config.json + weights + tokenizer files) for a path or a Hub id. Spec: HUB-1."""
    return resolve(name_or_path, model_plan, what="model", revision=revision, local_files_only=local_files_only,
                   cache_dir_=cache_dir, token=token)


def resolve_tokenizer_dir(name_or_path, *, revision=None, local_files_only=False, cache_dir=None, token=None) -> str:
    return resolve(name_or_path, tokenizer_plan, what="tokenizer", revision=revision,
                   local_files_only=local_files_only, cache_dir_=cache_dir, token=token)


def resolve_adapter_dir(name_or_path, config_name: str = "adapter_config.json", *, version=None, revision=None,
                        local_files_only=False, cache_dir=None, token=None, **_adapters_kwargs) -> str:
    """Adapter (or fusion) directory for a path or a Hub id such as 'AdapterHub/roberta-base-pf-imdb'.

    ``version`` is adapters' name for the revision. Other keyword arguments adapters accepts
    (``source``, ``with_head``, ``model_name``, ...) do not change where files come from and are ignored."""
    return resolve(name_or_path, adapter_plan(config_name), what="adapter" if "fusion" not in config_name else
                   "adapter fusion", revision=revision or version, local_files_only=local_files_only,
                   cache_dir_=cache_dir, token=token)
