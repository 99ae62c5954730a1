"""minadapters: a NumPy reference implementation of AdapterHub adapters 1.3.0.

    import minadapters as ma
    model = ma.AutoModel.from_pretrained("path/to/hf-model")
    model.add_adapter("a", config="lora[r=8]")
    model.active_adapters = ma.Stack("a")
    out = model(input_ids=ids, attention_mask=mask)
"""
__version__ = "0.1.0"

from .composition import (ALLOWED_NESTINGS, AdapterCompositionBlock, Average, BatchSplit, Fuse, MultiTask,  # noqa
                          Parallel, Split, Stack, parse_composition)
from .configuration import *  # noqa: F401,F403  (every config class and map, as adapters names them)
from .configuration import __all__ as _config_all
from .context import AdapterSetup, ForwardState  # noqa: F401
from .errors import (AdapterError, AdapterNotFoundError, BackendUnavailableError, CompositionError,  # noqa: F401
                     CompositionIndexError, ConfigError, ConfigKeyError, ConfigTypeError, FusionNotFoundError,
                     HubFileNotFoundError, ShapeError, UnsafePickleError, WeightsError)
from .model import AdapterModel, AutoModel  # noqa: F401
from .heads import (AutoAdapterModel, BertAdapterModel, GPT2AdapterModel, LlamaAdapterModel,  # noqa: F401
                    RobertaAdapterModel, XLMRobertaAdapterModel)
from .outputs import ModelOutput, MultiHeadOutput  # noqa: F401
from .ops import get_backend, set_backend  # noqa: F401
from .tokenizer import AutoTokenizer, BatchEncoding, Tokenizer  # noqa: F401
from .training import AdamW, LinearSchedule, clip_grad_norm_, get_linear_schedule_with_warmup  # noqa: F401

__all__ = ["AutoModel", "AutoTokenizer", "Tokenizer", "BatchEncoding", "set_backend", "get_backend", "AdapterModel",
           "ModelOutput", "MultiHeadOutput", "AutoAdapterModel", "BertAdapterModel", "RobertaAdapterModel",
           "XLMRobertaAdapterModel", "GPT2AdapterModel", "LlamaAdapterModel", "AdapterSetup", "ForwardState", "Stack", "Fuse", "Split",
           "BatchSplit", "Parallel", "MultiTask", "Average", "AdapterCompositionBlock", "ALLOWED_NESTINGS",
           "parse_composition", "AdapterError", "AdapterNotFoundError", "BackendUnavailableError",
           "CompositionError", "CompositionIndexError", "ConfigError", "ConfigKeyError", "FusionNotFoundError",
           "HubFileNotFoundError", "ConfigTypeError", "ShapeError", "UnsafePickleError", "WeightsError",
           "AdamW", "LinearSchedule", "clip_grad_norm_", "get_linear_schedule_with_warmup", *_config_all]
