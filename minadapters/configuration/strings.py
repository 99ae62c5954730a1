"""Config strings, specifier resolution and the config hash. Spec: CFG-1, CFG-2, CFG-4."""

import ast
import hashlib
import json
import os
import re
from collections.abc import Mapping

from ..errors import ConfigError, ConfigTypeError
from ..jsonio import read_json

# name: anything but brackets, '|' and newlines; then an optional [k=v, ...] part running to the end.
CONFIG_STRING_PATTERN = re.compile(r"^(?P<name>[^\[\]\|\n]+)(?:\[(?P<kvs>.*)\])?$")
_KEY_PATTERN = re.compile(r"(\w+)=")

# Keys dropped from the hash when they hold these values, so v2-era hashes stay stable (adapters
# `ADAPTER_CONFIG_HASH_IGNORE_DEFAULT`; note phm_layer: True, not False).
HASH_IGNORE_DEFAULTS = {
    "phm_layer": True,
    "phm_dim": 4,
    "factorized_phm_W": True,
    "shared_W_phm": False,
    "shared_phm_rule": True,
    "factorized_phm_rule": False,
    "phm_c_init": "normal",
    "phm_init_range": 0.0001,
    "learn_phm": True,
    "hypercomplex_nonlinearity": "glorot-uniform",
    "phm_rank": 1,
    "phm_bias": True,
    "init_weights": "bert",
    "scaling": 1.0,
}


def parse_adapter_config_string(config_string):
    """Split 'name[k=v, ...]|name2[...]' into [(name, kwargs), ...]. Spec: CFG-1.

    Values are Python literals read with ast.literal_eval (never eval). Every `word=` inside the
    brackets becomes `'word':`, also inside quoted values (kept for compatibility).
    """
    if not isinstance(config_string, str):
        raise ConfigTypeError(f"config string: got {type(config_string).__name__}; expected a str.")
    pairs = []
    for chunk in config_string.split("|"):
        match = CONFIG_STRING_PATTERN.match(chunk.strip())
        if not match or not match.group("name"):
            raise ConfigError(
                f"Invalid adapter config string format: chunk {chunk!r} of {config_string!r}. Expected "
                "'name' or 'name[key=value, ...]' (one pair of brackets at the end), chunks joined by '|', "
                "e.g. 'par_bn[reduction_factor=2]|prefix_tuning[bottleneck_size=800]'."
            )
        name, kvs = match.group("name"), match.group("kvs")
        rewritten = _KEY_PATTERN.sub(r"'\1':", kvs) if kvs else ""
        try:
            kwargs = ast.literal_eval("{" + rewritten + "}")
        except Exception as exc:  # literal_eval raises ValueError, SyntaxError, TypeError, ...
            reason = f"syntax error ({exc.msg})" if isinstance(exc, SyntaxError) else "a value is not a Python literal"
            raise ConfigError(
                f"Invalid adapter configuration {kvs!r} in chunk {chunk.strip()!r}: {reason}. "
                "Expected key=value pairs separated by commas, each value a Python literal "
                "(number, True/False/None, quoted string, list, dict), e.g. \"lora[r=4, attn_matrices=['q', 'v']]\"; "
                "an '=' inside a quoted value is not supported."
            ) from None
        if not isinstance(kwargs, dict):
            raise ConfigTypeError(
                f"Invalid adapter configuration {kvs!r} in chunk {chunk.strip()!r}: got a "
                f"{type(kwargs).__name__}, expected key=value pairs."
            )
        pairs.append((name, kwargs))
    return pairs


def resolve_adapter_config(config, local_map=None, kind="adapter", **kwargs):
    """Resolve a specifier to a config object or dict, without overrides. Spec: CFG-2.

    a. a Mapping (dict or config object) is returned as is;
    b. a key of `local_map` gives the shared preset instance;
    c. an existing file is read as JSON (its "config" entry if present, else the whole dict);
    d. otherwise a config string (CFG-1): one chunk gives an object, several a union dict.
    Extra keyword arguments (AdapterHub download options upstream) are accepted and ignored.
    """
    if isinstance(config, Mapping):
        return config
    if not isinstance(config, (str, os.PathLike)):
        raise ConfigTypeError(
            f"{kind} config: got {config!r} ({type(config).__name__}); expected a dict, a config object, "
            "an identifier, a config string or a path to a JSON file."
        )
    if local_map and isinstance(config, str) and config in local_map:
        return local_map[config]
    if os.path.isfile(config):
        return _read_json_config(config, kind)
    if not isinstance(config, str):
        raise ConfigError(f"{kind} config: {os.fspath(config)!r} is not an existing file.")
    configs = []
    for name, overrides in parse_adapter_config_string(config):
        if not (local_map and name in local_map):
            raise ConfigError(_unknown_name_message(name, config, local_map, kind))
        configs.append(local_map[name].replace(**overrides))
    if len(configs) == 1:
        return configs[0]
    return {"architecture": "union", "configs": configs}


def _read_json_config(path, kind):
    try:
        loaded = read_json(path, error=ConfigError)      # size and depth limits (IO-13)
    except (OSError, ConfigError) as exc:
        raise ConfigError(f"{kind} config file {os.fspath(path)!r} could not be read as JSON: {exc}") from None
    if not isinstance(loaded, dict):
        raise ConfigTypeError(
            f"{kind} config file {os.fspath(path)!r} holds a {type(loaded).__name__}; expected a JSON object."
        )
    # an adapter_config.json written with the weights nests the config under "config"
    return loaded["config"] if "config" in loaded else loaded


def _unknown_name_message(name, config, local_map, kind):
    known = ", ".join(sorted(local_map)) if local_map else "(none: the local map is skipped)"
    msg = f"Could not identify {name!r} as a valid {kind} configuration"
    if name != config:
        msg += f" (in {config!r})"
    msg += f". Known identifiers: {known}."
    if name != name.strip():
        msg += " Note: no spaces are allowed between the name and '['."
    elif os.sep in name or name.endswith(".json"):
        msg += " It is not an existing file either."
    return msg


def _minimize_dict(d):
    """Drop falsy values, recursing into mappings (lists are kept as they are)."""
    if isinstance(d, Mapping):
        return {k: _minimize_dict(v) for k, v in d.items() if v}
    return d


def get_adapter_config_hash(config, length=16, ignore_params=()):
    """First `length` hex digits of sha1(json of the minimised config). Spec: CFG-4.

    config: any Mapping (a config dict or object; a union object hashes its "i.key" items).
    """
    ignore = set(ignore_params)
    minimized = _minimize_dict({k: v for k, v in config.items() if k not in ignore})
    for name, default in HASH_IGNORE_DEFAULTS.items():
        if name in minimized and minimized[name] == default:
            del minimized[name]
    text = json.dumps(minimized, sort_keys=True)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:length]
