"""The notice a test run prints when ./minadapters has no compiled extension (`pip install .` then pytest)."""
from minadapters.diagnostics import native_build_notice


def test_notice_when_the_tree_lacks_the_extension(tmp_path):
    pkg = tmp_path / "src" / "minadapters"
    pkg.mkdir(parents=True)
    site = tmp_path / "site" / "minadapters"
    site.mkdir(parents=True)
    so = site / "_native.cpython-311-x86_64-linux-gnu.so"
    so.write_bytes(b"")
    msg = native_build_notice(str(pkg), str(so))
    assert msg and "no compiled native extension" in msg and str(site) in msg and "pip install -e ." in msg, msg
    assert "built one into" not in native_build_notice(str(pkg), None)
    (pkg / "_native.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")
    assert native_build_notice(str(pkg), str(so)) is None


def test_extension_under_ops_counts(tmp_path):
    pkg = tmp_path / "minadapters"
    (pkg / "ops").mkdir(parents=True)
    (pkg / "ops" / "_native.abi3.so").write_bytes(b"")
    assert native_build_notice(str(pkg), None) is None
