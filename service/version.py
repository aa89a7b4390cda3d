"""This release's version: the installed package's (pyproject.toml), "dev" in a bare
checkout that was never installed."""

from importlib.metadata import PackageNotFoundError, version

__all__ = ["VERSION"]

try:
    VERSION = version("unlearnd")
except PackageNotFoundError:
    VERSION = "dev"
