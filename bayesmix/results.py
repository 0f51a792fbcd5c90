"""Fitted-model objects: estimates, variance components, random effects, predictions, summaries."""

from __future__ import annotations

import html
from functools import cached_property

import numpy as np
import pandas as pd

from bayesmix.design import DataError, Evaluator, model_matrix
from bayesmix.formula import parse_formula
from bayesmix.model import CompiledModel, grouping_factor
from bayesmix.terms import b_from_u


class MixedModelResult:
    """What lmer and glmer fits share: lme4's accessor names, as properties and methods.

    ``theta`` holds lme4's relative Cholesky parameters, ``beta`` the fixed effects and
    ``b`` the conditional modes of the random effects in Z's column order.
    """

    is_lmm = True
    family_name = "gaussian"
    link_name = "identity"

    def __init__(self, compiled: CompiledModel, theta, beta, b, sigma, vcov_matrix, criterion_value, *, method: str,
                 optimizer_messages=(), converged=True, data_name="df", nAGQ=1):
        self.compiled = compiled
        self._theta = np.asarray(theta, dtype=float)
        self._beta = np.asarray(beta, dtype=float)
        self.b = np.asarray(b, dtype=float)
        self.sigma = float(sigma)
        self._vcov = np.asarray(vcov_matrix, dtype=float)
        self.criterion_value = float(criterion_value)
        self.method = method
        self.nAGQ = nAGQ
        self.optimizer_messages = list(optimizer_messages)
        self.converged = converged
        self.data_name = data_name

    # --- estimates ----------------------------------------------------------------------

    @property
    def fixef(self) -> pd.Series:
        return pd.Series(self._beta, index=self.compiled.fixef_names, name="fixef")

    @property
    def vcov(self) -> pd.DataFrame:
        names = self.compiled.fixef_names
        return pd.DataFrame(self._vcov, index=names, columns=names)

    @property
    def se(self) -> pd.Series:
        return pd.Series(np.sqrt(np.diag(self._vcov)), index=self.compiled.fixef_names, name="Std. Error")

    @property
    def coef_table(self) -> pd.DataFrame:
        est, se = self._beta, np.sqrt(np.diag(self._vcov))
        return pd.DataFrame({"Estimate": est, "Std. Error": se, "t value": est / se}, index=self.compiled.fixef_names)

    @property
    def theta(self) -> pd.Series:
        return pd.Series(self._theta, index=self.compiled.theta_names(), name="theta")

    @property
    def has_scale(self) -> bool:
        return True

    @property
    def singular(self) -> bool:
        """lme4's ``isSingular``: a diagonal θ on (or within 1e-4 of) its zero bound."""
        lower = self.compiled.theta_lower()
        return bool(np.any(self._theta[lower == 0] < 1e-4))

    def term_covariances(self) -> list[np.ndarray]:
        """Σ for each random-effects term: ``σ² T T'``."""
        return [self.sigma**2 * (T @ T.T) for T in self._factors()]

    def _factors(self):
        return [t.factor_matrix(th) for t, th in zip(self.compiled.terms, self.compiled.split_theta(self._theta))]

    @property
    def varcorr(self) -> pd.DataFrame:
        """lme4's ``as.data.frame(VarCorr(m))``: variances, then covariances, per term."""
        rows = []
        for group, term, cov in zip(self.group_labels(), self.compiled.terms, self.term_covariances()):
            sd = np.sqrt(np.diag(cov))
            names = term.column_names
            for i in range(term.k):
                rows.append((group, names[i], "", cov[i, i], sd[i]))
            for i in range(term.k):
                for j in range(i + 1, term.k):
                    corr = cov[i, j] / (sd[i] * sd[j]) if sd[i] > 0 and sd[j] > 0 else np.nan
                    rows.append((group, names[i], names[j], cov[i, j], corr))
        if self.has_scale:
            rows.append(("Residual", "", "", self.sigma**2, self.sigma))
        return pd.DataFrame(rows, columns=["grp", "var1", "var2", "vcov", "sdcor"])

    def group_labels(self) -> list[str]:
        """Group names made unique as R's ``make.unique`` does (``Subject``, ``Subject.1``)."""
        seen: dict[str, int] = {}
        out = []
        for t in self.compiled.terms:
            count = seen.get(t.group, 0)
            out.append(t.group if count == 0 else f"{t.group}.{count}")
            seen[t.group] = count + 1
        return out

    @property
    def ranef(self) -> dict[str, pd.DataFrame]:
        """Conditional modes per grouping factor: levels by term columns."""
        out: dict[str, pd.DataFrame] = {}
        for term, block in zip(self.compiled.terms, self._b_blocks()):
            frame = pd.DataFrame(block, index=pd.Index(term.factor.levels, name=term.group), columns=list(term.column_names))
            out[term.group] = frame if term.group not in out else pd.concat([out[term.group], frame], axis=1)
        return out

    def _b_blocks(self):
        start = 0
        for term in self.compiled.terms:
            yield self.b[start : start + term.q].reshape(term.nlevels, term.k)
            start += term.q

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
        out = np.zeros(self.nobs)
        for term, block in zip(self.compiled.terms, self._b_blocks()):
            out += np.einsum("ij,ij->i", term.columns, block[term.factor.codes])
        return out

    def linear_predictor(self) -> np.ndarray:
        return self.compiled.X @ self._beta + self._z_b + self.compiled.offset

    def fitted(self) -> np.ndarray:
        """Conditional fitted values on the response scale."""
        return self.linear_predictor()

    def predict(self, newdata: pd.DataFrame | None = None, re_form=None, type: str = "response") -> np.ndarray:
        """Predictions as lme4's ``predict``: ``re_form=None`` uses every random term,
        ``re_form="~0"`` (or ``NA``) none, a formula of random terms just those.
        Levels not seen in fitting get the population-level prediction.
        """
        wanted = self._terms_in(re_form)
        if newdata is None:
            eta = self.compiled.X @ self._beta + self.compiled.offset
            for idx, (term, block) in enumerate(zip(self.compiled.terms, self._b_blocks())):
                if idx in wanted:
                    eta = eta + np.einsum("ij,ij->i", term.columns, block[term.factor.codes])
        else:
            eta = self._predict_new(newdata, wanted)
        return self._inverse_link(eta) if type == "response" else eta

    def _inverse_link(self, eta):
        return eta

    def _terms_in(self, re_form) -> set[int]:
        terms = self.compiled.terms
        if re_form is None:
            return set(range(len(terms)))
        if isinstance(re_form, float) and np.isnan(re_form) or str(re_form).replace(" ", "") in ("~0", "NA", "0"):
            return set()
        wanted = parse_formula("zzy " + str(re_form).strip() if str(re_form).strip().startswith("~") else "zzy ~ " + str(re_form)).random
        keys = {(w.expr.replace(" ", ""), w.group) for w in wanted}
        return {i for i, t in enumerate(terms) if (t.expr.replace(" ", ""), t.group) in keys}

    def _predict_new(self, newdata: pd.DataFrame, wanted: set[int]) -> np.ndarray:
        c = self.compiled
        train = c.data
        common = [col for col in train.columns if col in newdata.columns]
        # Building on training + new rows reproduces the training coding of every factor.
        stacked = pd.concat([train[common], newdata[common]], ignore_index=True)
        n_train = len(train)
        fixed_columns = Evaluator(train).referenced_columns(" ".join([c.formula.fixed, *c.formula.offsets]))
        for col in common:
            if isinstance(train[col].dtype, pd.CategoricalDtype):
                known = list(train[col].cat.categories)
                values = stacked[col].astype(object)
                if all(isinstance(k, str) for k in known):  # 308 and "308" name the same level
                    values = values.map(lambda v: v if pd.isna(v) else str(v))
                unseen = [v for v in pd.unique(values[n_train:].dropna()) if v not in set(known)]
                if unseen and col in fixed_columns:
                    raise DataError(f"newdata column {col!r} has level(s) {', '.join(map(repr, unseen))} not seen in "
                                    "fitting; the fixed effects have no coefficient for them")
                # unseen levels of a grouping factor are kept as levels of their own (population prediction)
                stacked[col] = pd.Categorical(values, categories=known + unseen, ordered=train[col].cat.ordered)
        ev = Evaluator(stacked)
        fixed = model_matrix(c.formula.fixed, ev)
        foreign = [name for name in fixed.names if name not in c.fixef_names and name not in c.dropped_fixef]
        if foreign:  # e.g. a new level of a text (non-categorical) column
            raise DataError(f"newdata gives fixed-effect columns the fit does not have: {', '.join(foreign)}")
        cols = [fixed.names.index(name) for name in c.fixef_names]
        X_new = fixed.matrix[n_train:, cols]
        eta = X_new @ self._beta
        for text in c.formula.offsets:
            eta = eta + np.asarray(ev.evaluate(text), dtype=float)[n_train:]
        for idx, (term, block) in enumerate(zip(c.terms, self._b_blocks())):
            if idx not in wanted:
                continue
            factor = grouping_factor(term.group, ev)
            codes = factor.codes[n_train:]  # -1: a missing grouping value, population prediction too
            labels = np.where(codes >= 0, np.asarray(factor.levels, dtype=object)[np.maximum(codes, 0)], None)
            position = {lvl: i for i, lvl in enumerate(term.factor.levels)}
            rows = np.array([position.get(lbl, -1) for lbl in labels])
            z_new = model_matrix(term.expr, ev).matrix[n_train:]
            contrib = np.einsum("ij,ij->i", z_new, block[np.maximum(rows, 0)])
            eta = eta + np.where(rows >= 0, contrib, 0.0)  # unseen levels: population prediction
        return eta

    def residuals(self, type: str = "response", scaled: bool = False) -> np.ndarray:
        y, mu = self.compiled.y, self.fitted()
        if type == "response":
            r = y - mu
        elif type in ("pearson", "deviance", "working"):
            r = (y - mu) * np.sqrt(self.compiled.weights)
        else:
            raise ValueError(f"unknown residual type {type!r}; use 'response', 'pearson', 'deviance' or 'working'")
        return r / self.sigma if scaled else r

    @property
    def scaled_residuals(self) -> np.ndarray:
        return self.residuals(type="pearson", scaled=True)

    # --- display ------------------------------------------------------------------------

    def summary(self, ddf: str | None = None) -> str:
        """lme4's summary; ``ddf="Satterthwaite"`` or ``"Kenward-Roger"`` adds lmerTest's df and p-value columns."""
        if ddf is not None:
            from bayesmix.inference.ddf import format_summary as format_summary_with_ddf

            return format_summary_with_ddf(self, ddf)
        from bayesmix.printing import format_summary

        return format_summary(self)

    # --- inference beyond Wald (bayesmix.inference) -------------------------------------

    def confint(self, parm=None, level: float = 0.95, method: str = "profile", **kwargs):
        """Confidence intervals as lme4's ``confint``: method "profile" (default), "Wald" or "boot"."""
        from bayesmix.inference.profiles import confint

        return confint(self, parm=parm, level=level, method=method, **kwargs)

    def profile(self, which=None, **kwargs):
        """lme4's ``profile``: signed root deviance ζ along each parameter (a DataFrame; ``.confint()``, ``.plot()``)."""
        from bayesmix.inference.profiles import profile

        return profile(self, which=which, **kwargs)

    def simulate(self, nsim: int = 1, seed=None):
        """lme4's ``simulate(use.u = FALSE)``: new responses from the fitted model, one column per simulation."""
        from bayesmix.inference.parametric_bootstrap import simulate

        return simulate(self, nsim=nsim, seed=seed)

    def refit(self, new_response):
        """lme4's ``refit``: this model fitted to a new response vector."""
        from bayesmix.inference.parametric_bootstrap import refit

        return refit(self, new_response)

    def bootstrap(self, func, nsim: int = 500, seed=None, **kwargs):
        """lme4's ``bootMer``: ``func(fit)`` on refits to ``nsim`` simulated responses (all cores by default)."""
        from bayesmix.inference.parametric_bootstrap import bootstrap

        return bootstrap(self, func, nsim=nsim, seed=seed, **kwargs)

    def anova_table(self, ddf: str = "Satterthwaite", type: str = "III"):
        """lmerTest's ``anova(m)``: type III F tests of the fixed-effect terms with Satterthwaite or Kenward-Roger df."""
        from bayesmix.inference.ddf import anova_table

        return anova_table(self, ddf=ddf, type=type)

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        kind = "lmer" if self.is_lmm else "glmer"
        return f"<{kind} fit by {self.method}: {self.formula_display}, {self.nobs} obs>"

    def _repr_html_(self) -> str:
        return "<pre>" + html.escape(self.summary()) + "</pre>"

    # --- the Bayesian model (bayesmix.pymc_model, bayesmix.bayes) -------------------------

    @cached_property
    def pymc_model(self):
        """This model in PyMC with bayesmix's default priors, for users to inspect or extend."""
        from bayesmix.pymc_model import build_pymc_model

        return build_pymc_model(self)

    def sample(self, draws: int = 1000, tune: int = 1000, chains: int = 4, random_seed=None, sampler: str = "nutpie",
               progressbar: bool = True, priors: dict | None = None, collapse: bool | None = None,
               target_accept: float = 0.9):
        """Posterior draws of this model under near-flat priors (or ``priors``): an ArviZ ``DataTree``.

        See :func:`bayesmix.bayes.sample`; ``bm.compare(m, post)`` sets them beside the estimates.
        """
        from bayesmix.bayes import sample

        return sample(self, draws=draws, tune=tune, chains=chains, random_seed=random_seed, sampler=sampler,
                      progressbar=progressbar, priors=priors, collapse=collapse, target_accept=target_accept)


class LmerResult(MixedModelResult):
    """A linear mixed model fitted by REML or ML (lme4's ``lmerMod``)."""

    def __init__(self, *args, deviance_obj=None, factorization=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._deviance_obj = deviance_obj
        self._factorization = factorization

    @property
    def REML(self) -> bool:
        return self.method == "REML"

    @property
    def reml_criterion(self) -> float | None:
        return self.criterion_value if self.REML else None

    @property
    def deviance(self) -> float:
        """-2 log-likelihood at the estimates (for a REML fit: the ML deviance at the REML θ, profiled over σ)."""
        if not self.REML:
            return self.criterion_value
        f, dev = self._factorization, self._deviance_obj
        n = dev.n
        return f.ldL2 + n * (1.0 + np.log(2.0 * np.pi * f.pwrss / n)) - dev.cross.sum_log_weights

    def ranef_condvar(self) -> dict[str, np.ndarray]:
        """Conditional variances of the random effects given θ and β (lme4's ``condVar``).

        Keyed by term (``group_labels()``), each an array (levels, k, k).
        """
        f = self._factorization
        q1 = f.l1.shape[0] * f.l1.shape[1]
        k1 = f.l1.shape[1]
        l1_inv = np.linalg.inv(f.l1)  # (levels, k, k)
        blocks_u1 = np.einsum("lji,ljk->lik", l1_inv, l1_inv)
        out_u = []
        if f.q2:
            l_rr = f.l_s[: f.q2, : f.q2]
            c_r = f.c_r.toarray() if hasattr(f.c_r, "toarray") else np.asarray(f.c_r)
            c_r_l1inv = np.einsum("rla,lab->rlb", c_r.reshape(f.q2, -1, k1), l1_inv).reshape(f.q2, q1)
            import scipy.linalg as la

            w = la.solve_triangular(l_rr, c_r_l1inv, lower=True)
            wb = w.reshape(f.q2, -1, k1)
            blocks_u1 = blocks_u1 + np.einsum("rla,rlb->lab", wb, wb)
            l_rr_inv = la.solve_triangular(l_rr, np.eye(f.q2), lower=True)
            m_rr = l_rr_inv.T @ l_rr_inv
            start = 0
            for term in self.compiled.terms[1:]:
                idx = start + np.arange(term.q).reshape(term.nlevels, term.k)
                out_u.append(m_rr[idx[:, :, None], idx[:, None, :]])
                start += term.q
        return {
            label: self.sigma**2 * np.einsum("ab,lbc,dc->lad", T, vu, T)
            for label, T, vu in zip(self.group_labels(), self._factors(), [blocks_u1] + out_u)
        }


class GlmerResult(MixedModelResult):
    """A generalized linear mixed model fitted by Laplace or adaptive Gauss-Hermite quadrature (lme4's ``glmerMod``)."""

    is_lmm = False

    def __init__(self, *args, family=None, fit=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.family = family
        self._fit = fit

    @classmethod
    def from_fit(cls, compiled, family, fit, data_name="df"):
        sigma = 1.0
        if family.has_scale:
            # lme4's sigmaML for GLMMs: sqrt(pwrss / n), pwrss = Pearson RSS + ||u||^2
            state = fit.state
            pearson = (compiled.y - state.mu) ** 2 * compiled.weights / family.variance(state.mu)
            sigma = float(np.sqrt((pearson.sum() + state.u @ state.u) / compiled.n))
        b = b_from_u(compiled.terms, fit.theta, fit.state.u)
        method = "Laplace" if fit.objective.nAGQ == 1 else "AGQ"
        # the RX fallback is unscaled: lme4's vcov is sigma² (RX'RX)⁻¹ then, as vcov_rx() gives
        vcov = fit.vcov * sigma**2 if fit.vcov_source == "RX" else fit.vcov
        return cls(compiled, fit.theta, fit.beta, b, sigma, vcov, fit.criterion, method=method,
                   optimizer_messages=list(fit.messages), converged=fit.converged, data_name=data_name,
                   nAGQ=fit.objective.nAGQ, family=family, fit=fit)

    @property
    def family_name(self) -> str:
        return self.family.name

    @property
    def link_name(self) -> str:
        return self.family.link.name

    @property
    def has_scale(self) -> bool:
        return bool(self.family.has_scale)

    def term_covariances(self) -> list[np.ndarray]:
        scale2 = self.sigma**2 if self.has_scale else 1.0
        return [scale2 * (T @ T.T) for T in self._factors()]

    @property
    def coef_table(self) -> pd.DataFrame:
        from scipy.stats import norm

        est, se = self._beta, np.sqrt(np.diag(self._vcov))
        stat = est / se
        label = "t value" if self.has_scale else "z value"
        return pd.DataFrame({"Estimate": est, "Std. Error": se, label: stat, "Pr(>|z|)": 2 * norm.sf(np.abs(stat))},
                            index=self.compiled.fixef_names)

    @property
    def deviance(self) -> float:
        """lme4's ``deviance()`` for a GLMM: the conditional deviance, the sum of squared deviance residuals."""
        return float(np.sum(self.residuals(type="deviance") ** 2))

    @property
    def vcov_source(self) -> str:
        """"hessian" (lme4's default, from the finite-difference Hessian in θ and β) or "RX"."""
        return self._fit.vcov_source

    def vcov_rx(self) -> pd.DataFrame:
        """The Cholesky-based covariance of β (lme4's ``vcov(m, use.hessian = FALSE)``)."""
        from bayesmix.glmm import rx_vcov

        v = rx_vcov(self._fit.objective, self._fit.state) * (self.sigma**2 if self.has_scale else 1.0)
        return pd.DataFrame(v, index=self.compiled.fixef_names, columns=self.compiled.fixef_names)

    def _inverse_link(self, eta):
        return self.family.link.linkinv(eta)

    def fitted(self) -> np.ndarray:
        return self.family.link.linkinv(self.linear_predictor())

    def residuals(self, type: str = "deviance", scaled: bool = False) -> np.ndarray:
        y, mu, wt = self.compiled.y, self.fitted(), self.compiled.weights
        if type == "response":
            r = y - mu
        elif type == "pearson":
            r = (y - mu) * np.sqrt(wt) / np.sqrt(self.family.variance(mu))
        elif type == "deviance":
            r = np.sign(y - mu) * np.sqrt(np.maximum(self.family.dev_resids(y, mu, wt), 0.0))
        elif type == "working":
            r = (y - mu) / self.family.link.mu_eta(self.linear_predictor())
        else:
            raise ValueError(f"unknown residual type {type!r}; use 'deviance', 'pearson', 'response' or 'working'")
        return r / self.sigma if scaled else r
