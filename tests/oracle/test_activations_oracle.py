"""Oracle: every activation name adapters accepts computes what transformers' ACT2FN computes. Spec: ACT-1."""
import numpy as np
import pytest

from minadapters.functional.activations import ACTIVATIONS, PARAMETRIC, get_activation

torch = pytest.importorskip("torch", reason="oracle: needs torch (pip install -e .[oracle])")
pytest.importorskip("transformers", reason="oracle: needs transformers")


@pytest.mark.spec("ACT-1")
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_matches_transformers(name):
    from transformers.activations import ACT2FN
    x = np.linspace(-12, 12, 2001, dtype=np.float32)
    if name == "leakyrelu":
        want = torch.nn.functional.leaky_relu(torch.tensor(x)).numpy()
    else:
        want = ACT2FN[name](torch.tensor(x)).numpy()
    got = get_activation(name)(x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6, err_msg=name)


def test_every_transformers_name_is_handled():
    from transformers.activations import ACT2FN
    missing = [n for n in ACT2FN if n not in ACTIVATIONS and n not in PARAMETRIC]
    assert not missing, f"activations transformers offers that we neither implement nor reject: {missing}"
    for n in PARAMETRIC:
        with pytest.raises(ValueError, match="trainable parameters"):
            get_activation(n)
