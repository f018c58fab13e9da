"""Empirical risk minimisation: the supervised multi-task loss alone (the baseline)."""

from radpath.algorithms.base import Algorithm, register_algorithm


@register_algorithm
class ERM(Algorithm):
    """Pools all domains and minimises the average loss."""

    name = "erm"
