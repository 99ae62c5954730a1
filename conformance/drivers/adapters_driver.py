"""Driver for AdapterHub adapters 1.3.0 on transformers + torch (CPU, eval mode, eager attention).

Imports torch, transformers and adapters only when constructed; if they are missing the suite reports one
visible skip reason ("driver 'adapters' unavailable: ...").
"""
from __future__ import annotations

import numpy as np

CONTAINERS = ("adapters", "prefix_tunings", "prefix_gates", "loras", "shared_parameters", "refts", "prompt_tunings",
              "invertible_adapters")
BLOCKS = ("Stack", "Fuse", "Split", "BatchSplit", "Parallel", "MultiTask", "Average")


class AdaptersDriver:
    name = "adapters"
    precision = "float32"

    def __init__(self):
        import adapters
        import torch
        import transformers
        self._torch, self._tf, self._ad = torch, transformers, adapters
        torch.set_num_threads(1)   # tiny models: threads only add OpenMP barriers (slow when cores are shared)
        self.version = f"adapters {adapters.__version__}, transformers {transformers.__version__}, torch {torch.__version__}"
        methods = ("bottleneck", "compacter", "invertible", "lora", "ia3", "vera", "dora", "dvora", "mtl_lora",
                   "prefix_tuning", "prompt_tuning", "reft", "union", "mam", "unipelt")
        self.capabilities = frozenset(
            {"arch:bert", "arch:roberta", "arch:gpt2", "arch:llama", "arch:distilbert", "arch:mistral", "arch:qwen2",
             "arch:deberta-v2", "arch:bart", "arch:t5",
             "io:save", "io:load", "op:merge", "op:reset",
             "op:eject", "op:fusion", "op:task_ids", "config:strings", "op:heads",
             # known upstream crashes (bare BertModel): Parallel over LoRA-family adapters does not replicate the
             # attention mask / unadapted projections -> RuntimeError
             "quirk:lora-parallel-crash"} | {f"method:{m}" for m in methods} | {f"block:{b}" for b in BLOCKS})

    def load_model(self, model_dir):
        m = self._tf.AutoModel.from_pretrained(model_dir, attn_implementation="eager")
        m.eval()
        self._ad.init(m)
        return m

    def add_adapter(self, model, name, config):
        model.add_adapter(name, config=self._ad.AdapterConfig.load(config))
        model.eval()

    def _sd(self, model):
        sd = model.state_dict(keep_vars=True)
        if hasattr(model, "heads"):        # AdapterModel classes: bare-model keys (the base prefix stripped)
            p = model.base_model_prefix + "."
            sd = {(k[len(p):] if k.startswith(p) else k): v for k, v in sd.items()}
        return sd

    def get_adapter_weights(self, model, name):
        # each prefix-tuning layer re-registers the model-level pool: skip those alias keys
        keys = [k for k in self._sd(model) if ".prefix_tuning.pool." not in k
                and any(f"{c}.{name}." in k or k.startswith(f"{c}.{name}.") for c in CONTAINERS)]
        sd = self._sd(model)
        return {k: sd[k].detach().cpu().numpy().astype(np.float32).copy() for k in keys}

    def set_adapter_weights(self, model, name, tensors):
        sd = self._sd(model)
        with self._torch.no_grad():
            for k, v in tensors.items():
                if k not in sd:
                    raise KeyError(f"adapter {name!r}: unknown weight key {k!r}")
                if tuple(sd[k].shape) != tuple(np.shape(v)):
                    raise ValueError(f"{k} has shape {np.shape(v)}, but should be {tuple(sd[k].shape)}")
                sd[k].copy_(self._torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)))

    def get_fusion_weights(self, model, fusion_name):
        sd = self._sd(model)
        return {k: sd[k].detach().numpy().copy() for k in sd if f"adapter_fusion_layer.{fusion_name}." in k}

    def set_fusion_weights(self, model, fusion_name, tensors):
        self.set_adapter_weights(model, fusion_name, tensors)

    def _block(self, d):
        if d["type"] == "single":
            return d["children"][0]
        cls = getattr(self._ad.composition, d["type"])
        return cls(*[self._block(c) for c in d["children"]], **d.get("kwargs", {}))

    def set_active(self, model, setup):
        model.set_active_adapters(None if setup is None else self._block(setup))

    def forward(self, model, input_ids, attention_mask, **kw):
        t = self._torch
        if "task_ids" in kw and not isinstance(kw["task_ids"], list):
            kw["task_ids"] = t.tensor(np.asarray(kw["task_ids"]))
        if model.config.model_type == "t5" and "decoder_input_ids" not in kw:
            # the bare T5Model does not shift input_ids itself (BartModel and T5AdapterModel do): protocol, README
            kw["decoder_input_ids"] = model._shift_right(t.tensor(np.asarray(input_ids)))
        with t.no_grad():
            out = model(input_ids=t.tensor(np.asarray(input_ids)), attention_mask=t.tensor(np.asarray(attention_mask)),
                        **kw)
        return out.last_hidden_state.numpy()

    def save_adapter(self, model, name, directory):
        import os
        os.makedirs(directory, exist_ok=True)     # adapters' save uses mkdir (no parents)
        model.save_adapter(directory, name)

    def load_adapter(self, model, directory, load_as=None):
        name = model.load_adapter(directory, load_as=load_as)
        model.eval()
        return name

    def add_fusion(self, model, names, config=None):
        fuse = self._ad.composition.Fuse(*names)
        model.add_adapter_fusion(fuse, config) if config is not None else model.add_adapter_fusion(fuse)
        model.eval()
        return fuse.name

    def merge(self, model, name):
        model.merge_adapter(name)

    def reset(self, model):
        model.reset_adapter()

    def eject(self, model, name):
        model.eject_prefix_tuning(name)

    # ---- prediction heads (capability op:heads) ----------------------------------------------------
    def load_head_model(self, model_dir):
        m = self._ad.AutoAdapterModel.from_pretrained(model_dir, attn_implementation="eager")
        m.eval()
        return m

    def add_head(self, model, name, config):
        model.add_prediction_head_from_config(name, dict(config), overwrite_ok=True, set_active=True)
        model.eval()

    def get_head_weights(self, model, name):
        sd = self._sd(model)
        return {k: sd[k].detach().numpy().astype(np.float32).copy() for k in sd if k.startswith(f"heads.{name}.")}

    def set_head_weights(self, model, name, tensors):
        self.set_adapter_weights(model, name, tensors)

    def set_active_head(self, model, heads):
        model.active_head = heads

    def forward_heads(self, model, input_ids, attention_mask, **kw):
        t = self._torch
        with t.no_grad():
            out = model(input_ids=t.tensor(np.asarray(input_ids)), attention_mask=t.tensor(np.asarray(attention_mask)),
                        **kw)
        outs = list(out) if isinstance(out, self._ad.heads.MultiHeadOutput) else [out]
        return [{k: v.numpy() for k, v in o.items() if t.is_tensor(v)} for o in outs]


def make_driver():
    return AdaptersDriver()
