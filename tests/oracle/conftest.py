import pytest

torch = pytest.importorskip("torch", reason="oracle tests need torch==2.13.0 (pip install -e .[oracle])")
pytest.importorskip("adapters", reason="oracle tests need adapters==1.3.0 (pip install -e .[oracle])")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/oracle" in str(item.fspath):
            item.add_marker(pytest.mark.upstream)


@pytest.fixture(autouse=True)
def _torch_threads():
    torch.set_num_threads(1)
