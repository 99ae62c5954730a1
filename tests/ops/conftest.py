import pytest

from minadapters.errors import BackendUnavailableError
from minadapters.ops import get_ops


@pytest.fixture(scope="session")
def native():
    try:
        return get_ops("native")
    except BackendUnavailableError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def ref():
    return get_ops("numpy")
