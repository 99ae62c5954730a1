"""Half-precision checkpoints (float16, bfloat16) written by transformers: widened exactly to float32 at load, so our
float32 forward equals transformers' forward of the same checkpoint loaded in float32. Spec: IO-19, IO-7, IO-5."""
import numpy as np
import pytest

from oracle_utils import assert_close, batch, hf_model, perturb_adapter, torch, torch_forward, transformers

import minadapters as ma

pytestmark = [pytest.mark.upstream, pytest.mark.spec("IO-19")]


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
@pytest.mark.parametrize("adapter", [None, "seq_bn"])
def test_half_checkpoint_loads_as_float32(tmp_path, half, adapter):
    src = hf_model("bert", seed=3)
    src.to(getattr(torch, half)).save_pretrained(tmp_path, safe_serialization=True)
    ref = transformers.BertModel.from_pretrained(tmp_path, torch_dtype=torch.float32, attn_implementation="eager")
    ref.eval()
    ours = ma.AutoModel.from_pretrained(tmp_path)
    assert all(v.dtype == np.float32 for v in ours.params.values() if np.issubdtype(v.dtype, np.floating))
    for k, v in ref.state_dict().items():        # exact widening: every weight equals torch's upcast bit for bit
        if k in ours.params:
            np.testing.assert_array_equal(ours.params[k], v.numpy(), err_msg=k)
    if adapter:
        import adapters
        adapters.init(ref)
        ref.add_adapter("a", config=adapter)
        perturb_adapter(ref, "a")
        ref.set_active_adapters("a")
        ref.save_adapter(str(tmp_path / "a"), "a")
        ours.load_adapter(str(tmp_path / "a"), set_active=True)
    ids, mask = batch()
    assert_close(ours(input_ids=ids, attention_mask=mask).last_hidden_state,
                 torch_forward(ref, ids, mask).last_hidden_state.numpy(), what=f"{half} checkpoint")
