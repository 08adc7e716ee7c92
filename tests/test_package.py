"""The package's public names: imported lazily, and each the object its module defines."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import attnexplain
import attnexplain.benchmark


@pytest.mark.parametrize("package", [attnexplain, attnexplain.benchmark])
def test_every_public_name_is_its_modules_object(package) -> None:
    for name in package.__all__:
        module = importlib.import_module(package._EXPORTS[name])
        assert getattr(package, name) is getattr(module, name)
        assert name in dir(package)
    with pytest.raises(AttributeError, match="has no attribute 'NoSuchName'"):
        package.NoSuchName  # noqa: B018


def test_importing_the_package_imports_no_torch() -> None:
    code = "import sys, attnexplain, attnexplain.benchmark; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr
