"""Names a package exports lazily (``integrator.lazy_exports``)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from integrator import lazy_exports


def test_a_name_is_read_from_its_module() -> None:
    getattr_ = lazy_exports("pkg", {"Fraction": "fractions"})
    from fractions import Fraction

    assert getattr_("Fraction") is Fraction


def test_an_unknown_name_is_an_attribute_error_naming_the_package() -> None:
    getattr_ = lazy_exports("pkg", {"Fraction": "fractions"})
    with pytest.raises(AttributeError, match="module 'pkg' has no attribute 'Missing'"):
        getattr_("Missing")


def test_a_plugin_package_imports_its_components_only_when_asked() -> None:
    code = (
        "import sys, integrator_redis; before = 'integrator_redis.sink' in sys.modules; "
        "integrator_redis.RedisStreamSink; print(before, 'integrator_redis.sink' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]
