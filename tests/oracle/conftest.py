"""Oracle tests compare against adapters 1.3.0 + torch. Each module skips (with the reason shown by -rs) when
they are missing; CI installs them and fails if anything here is skipped."""
import pytest

try:
    import torch
except ImportError:  # the module-level importorskip in each test file reports it
    torch = None


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/oracle" in str(item.fspath):
            item.add_marker(pytest.mark.upstream)


@pytest.fixture(autouse=True)
def _torch_threads():
    if torch is not None:
        torch.set_num_threads(1)
