"""The library's version: the one place it is written (``pyproject.toml`` reads it at build time).

Bump it together with a new section of ``CHANGELOG.md`` (``tests/test_versioning.py`` checks
both agree); ``docs/versioning.md`` says what each part of the number promises.
"""

__version__ = "0.2.0"
