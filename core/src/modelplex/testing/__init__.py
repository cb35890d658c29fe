"""Test helpers for modelplex and for third-party plugin authors.

* :class:`ProviderConformanceTests`: the base class every provider's test suite subclasses.
* The pytest plugin (:mod:`modelplex.testing.pytest_plugin`, loaded automatically when
  modelplex is installed) provides the ``modelplex_plugins`` and ``register_plugin`` fixtures.
"""

from __future__ import annotations

from modelplex.testing.conformance import ProviderConformanceTests

__all__ = ["ProviderConformanceTests"]
