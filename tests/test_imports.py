"""Every module of the package imports on its own, first (no import cycle that only works in one order)."""

import pkgutil
import subprocess
import sys

import toymodels

SCRIPT = """
import sys
failed = []
for name in sys.argv[1:]:
    for m in [m for m in sys.modules if m == "toymodels" or m.startswith("toymodels.")]:
        del sys.modules[m]  # forget the package: the next module is imported first, as in a fresh process
    try:
        __import__(name)
    except Exception as e:  # noqa: BLE001
        failed.append(f"{name}: {type(e).__name__}: {e}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_module_imports_first():
    names = [f"toymodels.{m.name}" for m in pkgutil.iter_modules(toymodels.__path__)]
    assert len(names) >= 20
    res = subprocess.run([sys.executable, "-c", SCRIPT, *names], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
