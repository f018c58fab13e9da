"""Test-time adaptation, one registered class per file, one contract (:class:`TTAMethod`).

``none`` (the source model), ``tent`` (entropy minimisation on LayerNorm), ``sar``
(TENT on reliable samples with a collapse reset) and ``causal`` (radpath's causal TTA:
nuisance directions estimated by interventions and projected out; see
:mod:`radpath.adapt.causal`). Build one with :func:`build_tta`. Each built-in is imported
here by name, which registers it; a new method is one file with one ``@register_tta``
class (its name and settings on the class).
"""

from radpath.adapt import causal, sar, tent  # noqa: F401
from radpath.adapt.base import TTA_METHODS, TTAConfig, TTAMethod, build_tta, register_tta

__all__ = ["TTA_METHODS", "TTAConfig", "TTAMethod", "build_tta", "register_tta"]
