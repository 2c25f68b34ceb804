"""C++ extension build (the packed-bit kernels); metadata lives in pyproject.toml."""
from setuptools import setup

setup()
