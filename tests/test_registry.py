"""The registry: names from the registered object, duplicates refused, settings nested under
each component's name, old flat config keys moved with a deprecation warning."""

from __future__ import annotations

import pytest

from radpath.adapt import TTAConfig
from radpath.algorithms.config import AlgorithmConfig
from radpath.errors import RadpathError
from radpath.registry import Registry


def test_the_name_comes_from_the_object():
    registry: Registry = Registry("widget")

    @registry.register
    class Gear:
        name = "gear"

    @registry.register
    def cog() -> None: ...

    assert registry.names() == ["cog", "gear"] and registry.get("gear") is Gear
    with pytest.raises(RadpathError, match="widget 'cog' is already registered"):
        registry.register(cog)


@pytest.mark.parametrize("old, new, value", [
    ({"coral_weight": 2.5}, ("coral", "weight"), 2.5),
    ({"groupdro_eta": 0.5}, ("groupdro", "eta"), 0.5),
    ({"temperature": 0.2}, ("paper", "temperature"), 0.2),
])
def test_old_algorithm_keys_move_with_a_deprecation_warning(old, new, value):
    with pytest.warns(DeprecationWarning, match=f"write algorithm.{new[0]}.{new[1]}"):
        config = AlgorithmConfig(**old)
    assert getattr(getattr(config, new[0]), new[1]) == value


@pytest.mark.parametrize("old, new, value", [
    ({"e0": 0.3}, ("sar", "e0"), 0.3),
    ({"reset_threshold": 0.1}, ("sar", "reset_threshold"), 0.1),
    ({"n_directions": 2}, ("causal", "n_directions"), 2),
    ({"adapt_norm": True}, ("causal", "adapt_norm"), True),
])
def test_old_tta_keys_move_with_a_deprecation_warning(old, new, value):
    with pytest.warns(DeprecationWarning, match=f"write tta.{new[0]}.{new[1]}"):
        config = TTAConfig(**old)
    assert getattr(getattr(config, new[0]), new[1]) == value


def test_an_old_key_beside_its_new_place_is_refused():
    with pytest.raises(ValueError, match="both the old key 'coral_weight'"):
        AlgorithmConfig(coral_weight=1.0, coral={"weight": 2.0})


def test_every_method_settings_are_present_and_written():
    dumped = AlgorithmConfig().model_dump()
    assert {"irm", "mixstyle", "coral", "groupdro", "paper"} <= dumped.keys()
    assert dumped["coral"] == {"weight": 1.0} and dumped["paper"] == {"temperature": 0.07}
    assert {"sar", "causal"} <= TTAConfig().model_dump().keys()
    assert AlgorithmConfig.model_validate(dumped) == AlgorithmConfig()
