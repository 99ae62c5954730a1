"""transformers-style outputs against transformers itself: hidden_states, attentions, return_dict=False,
inputs_embeds, position_ids. Spec: API-2."""
import numpy as np
import pytest

from oracle_utils import OracleEnv, assert_close, torch, torch_forward  # noqa: F401  (torch: importorskip)
import decoder_oracle_utils as du

pytestmark = pytest.mark.upstream


def _ours(tmp_path, model_type):
    if model_type in ("bert", "roberta"):
        env = OracleEnv(model_type, str(tmp_path))
        return env.ours, env.torch_model, env.ids, env.mask
    import minadapters as ma
    tm = du.hf_decoder(model_type)
    tm.save_pretrained(str(tmp_path / "m"), safe_serialization=True)
    ids, mask = du.batch(pad=tm.config.pad_token_id or 0)
    return ma.AutoModel.from_pretrained(str(tmp_path / "m")), tm, ids, mask


@pytest.mark.spec("API-2")
@pytest.mark.parametrize("model_type", ["bert", "roberta", "gpt2", "llama"])
def test_hidden_states_and_attentions_equal_transformers(tmp_path, model_type):
    ours, tm, ids, mask = _ours(tmp_path, model_type)
    out = ours(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    ref = torch_forward(tm, ids, mask, output_hidden_states=True, output_attentions=True)
    L = ours.num_layers
    assert len(out.hidden_states) == L + 1 and len(out.attentions) == L
    for i in range(L + 1):
        assert_close(out.hidden_states[i], ref.hidden_states[i].numpy(), rtol=1e-5, what=f"hidden_states[{i}]")
    rows = mask.astype(bool)
    for i in range(L):                # padded query rows of a causal model hold arbitrary (finite) weights
        a, e = out.attentions[i], ref.attentions[i].numpy()
        assert a.shape == e.shape, f"attentions[{i}].shape={a.shape}, but should be {e.shape}"
        assert_close(a.transpose(0, 2, 1, 3)[rows], e.transpose(0, 2, 1, 3)[rows], rtol=1e-5, what=f"attentions[{i}]")


@pytest.mark.spec("API-2")
@pytest.mark.parametrize("model_type", ["bert", "gpt2"])
def test_tuple_output_inputs_embeds_and_position_ids(tmp_path, model_type):
    ours, tm, ids, mask = _ours(tmp_path, model_type)
    tup = ours(ids, attention_mask=mask, return_dict=False)
    assert isinstance(tup, tuple)
    np.testing.assert_array_equal(tup[0], ours(ids, attention_mask=mask).last_hidden_state)
    emb_key = ours.arch.embed_key
    embeds = ours.params[emb_key][ids]
    pos = np.broadcast_to(np.arange(ids.shape[1])[::-1].copy(), ids.shape)
    kw = dict(attention_mask=mask, position_ids=pos)
    got = ours(inputs_embeds=embeds, **kw).last_hidden_state
    with torch.no_grad():
        ref = tm(inputs_embeds=torch.tensor(embeds), attention_mask=torch.tensor(mask),
                 position_ids=torch.tensor(pos)).last_hidden_state.numpy()
    assert_close(got, ref, rtol=1e-5, what=f"{model_type} inputs_embeds + reversed position_ids")
