"""Stub for Beam's ``--setup_file`` (Dataflow / portable runners): everything is in pyproject.toml.

Beam builds an sdist of this project on the launcher (``python -m build --sdist`` or, without the
``build`` module, ``python setup.py sdist``), stages it with the job, and the workers ``pip install``
it, so ``pipelines/`` and ``transforms/`` are importable where the DoFns run. With the project's
own SDK container (``Dockerfile``) the package is already installed and ``--setup_file`` is optional.
"""
from setuptools import setup

setup()
