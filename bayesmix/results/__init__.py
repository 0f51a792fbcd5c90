"""Fitted-model objects: public numeric arrays with lme4-named pandas views, the one result builder, variance components, predictions and lme4's summary layout."""

from bayesmix.results.base import MixedModelResult
from bayesmix.results.glmer import GlmerResult
from bayesmix.results.lmer import LmerResult

__all__ = ["GlmerResult", "LmerResult", "MixedModelResult"]
