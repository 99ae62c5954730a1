"""conformance/LAYOUT.md is generated from the registry (conformance/layout.py) and cannot drift from it."""
from pathlib import Path

from conformance import layout

PAGE = Path(layout.PAGE)


def test_layout_page_is_what_the_registry_gives():
    """Regenerates the page from minadapters.models.FAMILIES; a changed record, hook path, key or shape fails
    here until `python -m conformance.layout` is run again."""
    assert PAGE.read_text(encoding="utf-8") == layout.generate(), \
        "conformance/LAYOUT.md differs from the registry; run: python -m conformance.layout"


def test_layout_names_what_maintainers_asked_for():
    """The cases the issue named: LLaMA's intermediate is down_proj and output up_proj, GPT-2's q/k/v are one
    fused c_attn, every family of the registry has a section, VeRA's shared A/B are model-level keys."""
    text = PAGE.read_text(encoding="utf-8")
    assert "| lora | intermediate | `layers.0.mlp.down_proj` |" in text
    assert "| lora | output | `layers.0.mlp.up_proj` |" in text
    assert "| lora | selfattn.qkv | `h.0.attn.c_attn` | `h.0.attn.c_attn.loras.a.lora_B` | 60×8 |" in text
    for family in layout.FAMILIES:
        assert f"## {family.name} (model types:" in text
    assert "| vera | model | `-` | `shared_parameters.a.lora_A`" in text
