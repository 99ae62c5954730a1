"""Suite-wide report: say loudly when the imported minadapters lacks its compiled native extension."""
import os

import minadapters
from minadapters.diagnostics import installed_native_copy, native_build_notice

_NOTICE = native_build_notice(os.path.dirname(os.path.abspath(minadapters.__file__)), installed_native_copy())


def pytest_report_header(config):
    return [f"WARNING: {_NOTICE}"] if _NOTICE else []


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _NOTICE:
        terminalreporter.section("native extension")
        terminalreporter.write_line(f"WARNING: {_NOTICE}", yellow=True, bold=True)
