"""What lmer and glmer fits share: public numeric arrays, lme4-named pandas views, predictions, display."""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd

from bayesmix.engine.families import Gaussian
from bayesmix.engine.response import residuals
from bayesmix.errors import ArgumentError
from bayesmix.results import methods
from bayesmix.results.display import DisplayTable
from bayesmix.results.predict import linear_predictor
from bayesmix.results.varcorr import group_labels, term_covariances, varcorr_frame
from bayesmix.spec.model import CompiledModel
from bayesmix.spec.terms import effect_blocks, theta_blocks, z_times

_GAUSSIAN = Gaussian()  # an LMM's response: identity link, unit variance function, σ
_UNSET = object()  # an argument not given (predict's positional and keyword forms differ)


class MixedModelResult:
    """What lmer and glmer fits share: lme4's accessor names, as properties and methods.

    The numbers are public arrays (``theta_values``, ``beta_values``, ``vcov_values``, ``b``,
    ``sigma``, ``criterion_value``, ``optsum``, the optimizer record); the lme4-named
    accessors (``theta``, ``fixef``, ``vcov``, ``ranef``...) add labels on top, as statsmodels' results do.
    """

    is_lmm = True
    family_name = "gaussian"
    link_name = "identity"

    def __init__(self, compiled: CompiledModel, theta, beta, b, sigma, vcov_matrix, criterion_value, *, method: str,
                 optimizer_messages=(), converged=True, data_name="df", nAGQ=1, optsum=None):
        self.compiled = compiled
        self.theta_values = np.asarray(theta, dtype=float)
        self.beta_values = np.asarray(beta, dtype=float)
        self.b = np.asarray(b, dtype=float)
        self.sigma = float(sigma)
        self.vcov_values = np.asarray(vcov_matrix, dtype=float)
        self.criterion_value = float(criterion_value)
        self.method = method
        self.nAGQ = nAGQ
        self.optimizer_messages = list(optimizer_messages)
        self.converged = converged
        self.data_name = data_name
        self.optsum = optsum  # the optimizer record (engine.optimize.OptSummary)

    # --- estimates ----------------------------------------------------------------------

    @property
    def fixef(self) -> pd.Series:
        return pd.Series(self.beta_values, index=self.compiled.fixef_names, name="fixef")

    @property
    def vcov(self) -> pd.DataFrame:
        names = self.compiled.fixef_names
        return pd.DataFrame(self.vcov_values, index=names, columns=names)

    @property
    def se(self) -> pd.Series:
        return pd.Series(np.sqrt(np.diag(self.vcov_values)), index=self.compiled.fixef_names, name="Std. Error")

    @property
    def coef_table(self) -> pd.DataFrame:
        est, se = self.beta_values, np.sqrt(np.diag(self.vcov_values))
        table = pd.DataFrame({"Estimate": est, "Std. Error": se, "t value": est / se}, index=self.compiled.fixef_names)
        return DisplayTable(table)  # shown rounded, numbers kept whole

    @property
    def theta(self) -> pd.Series:
        return pd.Series(self.theta_values, index=self.compiled.theta_names(), name="theta")

    @property
    def has_scale(self) -> bool:
        return True

    @property
    def singular(self) -> bool:
        """lme4's ``isSingular``: a diagonal θ on (or within 1e-4 of) its zero bound."""
        lower = self.compiled.theta_lower()
        return bool(np.any(self.theta_values[lower == 0] < 1e-4))

    def term_covariances(self) -> list[np.ndarray]:
        """Σ for each random-effects term: ``σ² T T'``."""
        return term_covariances(self.compiled.terms, self.theta_values, self.sigma)

    def relative_factors(self) -> list[np.ndarray]:
        """Each term's relative covariance factor T (Σ = σ² T T'), from θ."""
        return [t.factor_matrix(th) for t, th in zip(self.compiled.terms, theta_blocks(self.compiled.terms, self.theta_values))]

    @property
    def varcorr(self) -> pd.DataFrame:
        """lme4's ``as.data.frame(VarCorr(m))``: variances, then covariances, per term."""
        return varcorr_frame(self.compiled.terms, self.term_covariances(), self.sigma if self.has_scale else None)

    def group_labels(self) -> list[str]:
        """Group names made unique as R's ``make.unique`` does (``Subject``, ``Subject.1``)."""
        return group_labels(self.compiled.terms)

    @property
    def ranef(self) -> dict[str, pd.DataFrame]:
        """Conditional modes per grouping factor: levels by term columns."""
        out: dict[str, pd.DataFrame] = {}
        for term, block in zip(self.compiled.terms, effect_blocks(self.compiled.terms, self.b)):
            frame = pd.DataFrame(block, index=pd.Index(term.factor.levels, name=term.group), columns=list(term.column_names))
            out[term.group] = frame if term.group not in out else pd.concat([out[term.group], frame], axis=1)
        return out

    @property
    def coef(self) -> dict[str, pd.DataFrame]:
        """lme4's ``coef()``: fixed effects plus each level's random effects."""
        out = {}
        fe = self.fixef
        for group, re in self.ranef.items():
            frame = pd.DataFrame(np.repeat(fe.to_numpy()[None, :], len(re), axis=0), index=re.index, columns=fe.index)
            for col in re.columns:
                if col in frame:
                    frame[col] = frame[col] + re[col]
                else:
                    frame[col] = re[col]
            out[group] = frame
        return out

    def tidy(self, effects: str = "ran_vals", post=None):
        """broom.mixed's ``tidy(m, effects="ran_vals")``: level, term, estimate, std.error (from
        ``ranef_condvar``); ``effects="fixed"`` for β; with ``post`` the posterior's mean and SD."""
        if post is not None:
            return methods.tidy_posterior(self, post, effects=effects)
        from bayesmix.results.tables import tidy

        return tidy(self, effects=effects)

    def icc(self, post=None):
        """performance's ``icc()``: adjusted and conditional ICC, overall and per grouping factor;
        with ``post``, their posterior draws (see :mod:`bayesmix.results.icc_r2`)."""
        if post is not None:
            return methods.posterior_variance(self, post, "icc")
        from bayesmix.results.icc_r2 import icc

        return icc(self)

    def r2(self, post=None):
        """performance's ``r2_nakagawa()``: marginal and conditional R²; with ``post``, their posterior draws."""
        if post is not None:
            return methods.posterior_variance(self, post, "r2")
        from bayesmix.results.icc_r2 import r2

        return r2(self)

    # --- fit statistics -----------------------------------------------------------------

    @property
    def nobs(self) -> int:
        return self.compiled.n

    @property
    def ngrps(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.compiled.terms:
            out.setdefault(t.group, t.nlevels)
        return out

    @property
    def n_dropped(self) -> int:
        return self.compiled.n_dropped

    @property
    def df(self) -> int:
        """Number of estimated parameters, as ``attr(logLik(m), "df")``."""
        return self.compiled.p + self.compiled.ntheta + int(self.has_scale)

    @property
    def loglik(self) -> float:
        return -0.5 * self.criterion_value

    @property
    def aic(self) -> float:
        return -2.0 * self.loglik + 2.0 * self.df

    @property
    def bic(self) -> float:
        return -2.0 * self.loglik + self.df * np.log(self.nobs)

    @property
    def df_resid(self) -> int:
        return self.nobs - self.df

    @property
    def formula_display(self) -> str:
        return self.compiled.formula.display

    @property
    def weights_name(self) -> str | None:
        return self.compiled.weights_name

    # --- fitted values, residuals, predictions ------------------------------------------

    @cached_property
    def _z_b(self) -> np.ndarray:
        return z_times(self.compiled.terms, self.b)

    def linear_predictor(self) -> np.ndarray:
        return self.compiled.X @ self.beta_values + self._z_b + self.compiled.offset

    def fitted(self) -> np.ndarray:
        """Conditional fitted values on the response scale."""
        return self.linear_predictor()

    def predict(self, source=None, /, newdata=_UNSET, re_form=_UNSET, type=_UNSET, *, kind: str = "mean",
                sample_new_groups: bool = False, interval: str | None = None, level: float = 0.95, nsim: int = 1000,
                random_seed=None):
        """Predictions as lme4's ``predict``: ``m.predict(newdata=None, re_form=None, type="response")``.

        ``re_form=None`` uses every random term, ``re_form="~0"`` (or ``NA``) none, a formula of
        random terms just those.  Levels not seen in fitting, and missing grouping values, get the
        population-level prediction (lme4's ``allow.new.levels = TRUE``).

        * ``interval="confidence"`` or ``"prediction"`` (with ``level``): a DataFrame ``fit``,
          ``lwr``, ``upr`` — Wald from vcov(β), or simulation (``nsim``, ``random_seed``); see
          :mod:`bayesmix.results.intervals`.
        * ``m.predict(post, newdata=None, kind="mean", re_form=None, sample_new_groups=False)``
          with a posterior from :meth:`sample`: draws (chain, draw, obs) as an ``xarray.DataArray``;
          ``kind`` "link", "mean" or "response" (see :func:`bayesmix.bayes.predictive.predict`).
        """
        given = {name: value for name, value in (("newdata", newdata), ("re_form", re_form), ("type", type))
                 if value is not _UNSET}
        if methods.is_posterior(source):
            if "type" in given:
                raise ArgumentError("with a posterior, choose the scale with kind='link', 'mean' or 'response'")
            return methods.posterior_predict(self, source, newdata=given.get("newdata"), kind=kind,
                                             re_form=given.get("re_form"), sample_new_groups=sample_new_groups,
                                             random_seed=random_seed)
        if source is not None:  # m.predict(newdata, re_form, type), positionally as before
            if isinstance(given.get("newdata"), pd.DataFrame):
                raise ArgumentError("give newdata once: m.predict(newdata) or m.predict(newdata=...)")
            if "newdata" in given:
                given["type"] = given.get("re_form", given.get("type", _UNSET))
                given["re_form"] = given.pop("newdata")
            given["newdata"] = source
        newdata, re_form = given.get("newdata"), given.get("re_form")
        type = given.get("type", "response")
        if type is _UNSET:
            type = "response"
        if type not in ("response", "link"):
            raise ArgumentError(f"type must be 'response' or 'link', got {type!r}")
        if interval is not None:
            from bayesmix.results.intervals import predict_interval

            return predict_interval(self, newdata, re_form=re_form, type=type, interval=interval, level=level,
                                    nsim=nsim, seed=random_seed)
        eta = linear_predictor(self, newdata, re_form)
        return self._inverse_link(eta) if type == "response" else eta

    @property
    def response_family(self):
        """The family of the response: an LMM's is the identity-link gaussian (a GLMM's, its own)."""
        return _GAUSSIAN

    def _inverse_link(self, eta):
        return self.response_family.link.linkinv(eta)

    def residuals(self, type: str = "response", scaled: bool = False) -> np.ndarray:
        """lme4's ``residuals(m, type)`` (response by default, as for lmerMod; prior weights enter
        Pearson and deviance residuals, and "working" residuals of an LMM are response residuals)."""
        r = residuals(self.response_family, self.compiled.y, self.fitted(), self.linear_predictor(), self.compiled.weights, type)
        return r / self.sigma if scaled else r

    @property
    def scaled_residuals(self) -> np.ndarray:
        return self.residuals(type="pearson", scaled=True)

    def scaled_residual_quantiles(self) -> np.ndarray:
        """Min, quartiles and max of the scaled residuals, as summary prints them (a Dask fit computes them on the cluster)."""
        return np.quantile(np.asarray(self.scaled_residuals, dtype=float), [0, 0.25, 0.5, 0.75, 1])

    # --- display ------------------------------------------------------------------------

    def summary(self, ddf: str | None = None) -> str:
        """lme4's summary; ``ddf="Satterthwaite"`` or ``"Kenward-Roger"`` adds lmerTest's df and p-value columns."""
        if ddf is not None:
            return methods.summary_with_ddf(self, ddf)
        from bayesmix.results.printing import format_summary

        return format_summary(self)

    # --- inference beyond Wald (bayesmix.inference) -------------------------------------

    def confint(self, parm=None, level: float = 0.95, method: str = "profile", **kwargs):
        """Confidence intervals as lme4's ``confint``: method "profile" (default), "Wald" or "boot"."""
        return methods.confint(self, parm=parm, level=level, method=method, **kwargs)

    def profile(self, which=None, **kwargs):
        """lme4's ``profile``: signed root deviance ζ along each parameter (a DataFrame; ``.confint()``, ``.plot()``)."""
        return methods.profile(self, which=which, **kwargs)

    def simulate(self, nsim: int = 1, seed=None):
        """lme4's ``simulate(use.u = FALSE)``: new responses from the fitted model, one column per simulation."""
        return methods.simulate(self, nsim=nsim, seed=seed)

    def refit(self, new_response):
        """lme4's ``refit``: this model fitted to a new response vector."""
        return methods.refit(self, new_response)

    def bootstrap(self, func, nsim: int = 500, seed=None, **kwargs):
        """lme4's ``bootMer``: ``func(fit)`` on refits to ``nsim`` simulated responses (all cores by default)."""
        return methods.bootstrap(self, func, nsim=nsim, seed=seed, **kwargs)

    def anova_table(self, ddf: str = "Satterthwaite", type: str = "III"):
        """lmerTest's ``anova(m)``: type III F tests of the fixed-effect terms with Satterthwaite or Kenward-Roger df."""
        return methods.anova_table(self, ddf=ddf, type=type)

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        kind = "lmer" if self.is_lmm else "glmer"
        return f"<{kind} fit by {self.method}: {self.formula_display}, {self.nobs} obs>"

    def _repr_html_(self) -> str:
        """Jupyter's view: fit statistics, random and fixed effects as tables; lme4's text in a ``<details>``."""
        from bayesmix.results.display import fit_html

        return fit_html(self, self.summary())

    # --- the Bayesian model (bayesmix.bayes.pymc_model, bayesmix.bayes.sampling) -------------------------

    @property
    def pymc_model(self):
        """This model in PyMC with bayesmix's default priors: a new ``pymc.Model`` at every access
        (see :meth:`to_pymc`)."""
        return methods.pymc_model(self)

    def to_pymc(self, priors: dict | None = None):
        """This model in PyMC (default priors, or ``priors``), new at every call, to inspect or extend.

        Extending it never changes :meth:`sample`, which builds its own; sample an extended model
        with ``pymc.sample(model=...)``.  It holds the covariates as ``pm.Data`` (``X``, ``offset``,
        ``Z_<term>``, ``idx_<term>``) and names the linear predictor ``eta`` and the mean ``mu``.
        """
        return methods.pymc_model(self, priors=priors)

    def sample(self, draws: int = 1000, tune: int = 1000, chains: int = 4, random_seed=None, sampler: str = "nutpie",
               progressbar: bool = True, priors: dict | None = None, collapse: bool | None = None,
               target_accept: float = 0.9, log_likelihood: bool = False):
        """Posterior draws of this model under near-flat priors (or ``priors``): an ArviZ ``DataTree``.

        See :func:`bayesmix.bayes.sample`; ``bm.compare(m, post)`` sets them beside the estimates.
        The posterior holds every free variable of :meth:`to_pymc`'s model under its PyMC name, so
        ``pm.sample_posterior_predictive(post, model=m.pymc_model)`` resamples only ``y``.
        ``log_likelihood=True`` adds the pointwise log-likelihood (see :meth:`log_likelihood`).
        """
        post = methods.sample(self, draws=draws, tune=tune, chains=chains, random_seed=random_seed, sampler=sampler,
                              progressbar=progressbar, priors=priors, collapse=collapse, target_accept=target_accept)
        return methods.log_likelihood(self, post) if log_likelihood else post

    def log_likelihood(self, post, group: str | None = None):
        """Add the pointwise log-likelihood group to ``post`` (for ``az.loo``, ``az.compare``) and return it.

        One value per observation, conditional on the random effects; ``group="Subject"`` sums them
        per level (leave-one-group-out; see :mod:`bayesmix.bayes.predictive`).
        """
        return methods.log_likelihood(self, post, group=group)

    def sample_prior_predictive(self, draws: int = 500, priors=None, random_seed=None):
        """Prior and prior-predictive draws (``prior``, ``prior_predictive`` groups) under the default
        priors, ``priors`` (a dict) or the preset ``priors="weakly_informative"``."""
        return methods.sample_prior_predictive(self, draws=draws, priors=priors, random_seed=random_seed)

    def sample_posterior_predictive(self, post, random_seed=None):
        """Add a ``posterior_predictive`` group (``y`` per draw and row, as ``observed_data``) to ``post``."""
        return methods.sample_posterior_predictive(self, post, random_seed=random_seed)
