"""Training adapters without torch: explicit backward functions, the training API, AdamW. Spec: spec/training.md."""
from .optim import AdamW, LinearSchedule, clip_grad_norm_, get_linear_schedule_with_warmup

__all__ = ["AdamW", "LinearSchedule", "clip_grad_norm_", "get_linear_schedule_with_warmup"]
