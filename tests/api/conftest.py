"""Fixtures for the model-API tests: a tiny random BERT directory (no torch)."""
import pytest

import minadapters as ma
from minadapters.tiny import write_tiny_model


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return write_tiny_model(str(tmp_path_factory.mktemp("tiny_api")), hidden=32, layers=2, heads=4, ffn=37)


@pytest.fixture
def model(tiny_dir):
    return ma.AutoModel.from_pretrained(tiny_dir, seed=0)
