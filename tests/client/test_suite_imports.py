"""The suite is a client written from the spec: it may import the `protocol` package (the
tables the spec is generated from), the standard library, pytest and its own helpers
(`tests.client`, the broker fixture) - never the device's code (bms, hil, bms_emu), not
even through what it imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SUITE = Path(__file__).parent
ROOT = SUITE.parent.parent
ALLOWED_ROOTS = {"protocol", "pytest", "__future__"} | set(sys.stdlib_module_names)
ALLOWED_TEST_HELPERS = {"tests.client", "tests.support.mqtt_broker"}
DEVICE_CODE = ("bms", "hil", "bms_emu")


def imported_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
    return names


def suite_modules() -> list[str]:
    return [f"tests.client.{p.stem}" for p in sorted(SUITE.glob("*.py")) if p.stem != "__init__"]


def test_the_suite_imports_only_the_protocol_stdlib_and_pytest() -> None:
    bad = {}
    for path in sorted(SUITE.glob("*.py")):
        for name in imported_names(path):
            if name.startswith("tests."):
                ok = any(name == h or name.startswith(h + ".") for h in ALLOWED_TEST_HELPERS)
            else:
                ok = name.split(".")[0] in ALLOWED_ROOTS
            if not ok:
                bad.setdefault(path.name, []).append(name)
    assert not bad, f"imports outside protocol, stdlib and pytest: {bad}"


def test_nothing_the_suite_imports_brings_in_the_device() -> None:
    """Every module of the suite imported in a fresh interpreter: no module of the device's
    packages is loaded by them, directly or through another."""
    code = ("import sys\n"
            + "".join(f"import {m}\n" for m in suite_modules())
            + f"print(sorted(m for m in sys.modules if m.split('.')[0] in {DEVICE_CODE!r}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout
