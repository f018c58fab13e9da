"""Test-time adaptation, one registered class per file, one contract (:class:`TestTimeAdapter`).

``none`` (the source model), ``tent`` (entropy minimisation on LayerNorm), ``sar``
(TENT on reliable samples with a collapse reset) and ``causal`` (radpath's causal TTA:
nuisance directions estimated by interventions and projected out; see
:mod:`radpath.adapt.causal`). Build one with :func:`build_tta`.
"""

from importlib import import_module

from radpath.adapt.base import (
    ADAPTERS_TTA,
    TestTimeAdapter,
    TTAConfig,
    build_tta,
    register_tta,
)

for _module in ("tent", "sar", "causal"):
    import_module(f"radpath.adapt.{_module}")

__all__ = ["ADAPTERS_TTA", "TTAConfig", "TestTimeAdapter", "build_tta", "register_tta"]
