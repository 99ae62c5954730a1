"""The error-type table of tests/test_error_types.py, run on adapters 1.3.0: each case raises the builtin the table
names there, so `except IndexError` (etc.) written for adapters catches ours too. Spec: API-ERR."""
import types

import pytest

from oracle_utils import adapters, torch

from tests.test_error_types import CASES, IDS


@pytest.mark.spec("API-ERR")
@pytest.mark.parametrize("case,builtin,op", CASES, ids=IDS)
def test_upstream_raises_that_type(case, builtin, op):
    from adapters import composition
    from transformers import BertConfig, BertModel
    torch.manual_seed(0)
    torch.set_num_threads(1)
    m = BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                             vocab_size=50))
    adapters.init(m)
    m.eval()
    for n, c in (("a", "seq_bn"), ("b", "seq_bn"), ("l", "lora")):
        m.add_adapter(n, config=c)
    ids = torch.randint(5, 30, (2, 6))
    names = {k: getattr(adapters, k) for k in dir(adapters) if not k.startswith("_")}
    names.update({k: getattr(composition, k) for k in ("Split", "BatchSplit", "Fuse", "Stack")})
    lib = types.SimpleNamespace(**names)

    class Wrap:      # m(np_ids, **kw) in the table -> torch ids
        def __getattr__(self, k):
            return getattr(m, k)

        def __call__(self, input_ids, **kw):
            return m(torch.as_tensor(input_ids), **kw)

    def fw(setup):
        m.set_active_adapters(setup)
        with torch.no_grad():
            return m(ids)
    with pytest.raises(builtin):
        op(lib, Wrap(), fw)
