"""The Bayesian model of a fitted lmer/glmer in PyMC: priors (defaults, validation, user overrides) and the model graph.

The model is lme4's, with priors added.  Random effects are non-centred through the
relative Cholesky factors lme4 estimates: for each term and level ``b = L u`` with
``u ~ N(0, I)`` and ``L = diag(sd) · chol(corr)``; for models with a residual scale this
is lme4's ``b = σ Λ(θ) u`` with ``Λ(θ)``'s blocks ``T = L / σ`` (the deterministic
``theta`` holds T's entries under lme4's names).  The linear predictor is
``offset + X β + Z b``; the family and link are the fit's; prior weights scale the
precision (gaussian, Gamma, inverse Gaussian) or count trials (binomial) as in lme4.

Default priors (near-flat, scaled to the data so that results do not depend on units):

* fixed effect ``j``: ``Normal(0, 100·S_j)`` with ``S_j = s_y / sd(X_j)`` for a varying
  column and ``S_j = |ȳ| + s_y`` for a constant one (the intercept);
* each random-effect SD (term column ``j``): ``HalfNormal(100·s_y / sd(Z_j))``, or
  ``HalfNormal(100·s_y)`` for a constant column;
* residual SD σ: ``HalfNormal(100·s_y)``;
* each correlation matrix: ``LKJCorr(eta=1)``, uniform over correlation matrices;
* parameters of the family that the fit estimated, e.g. the negative-binomial shape
  ``nb_theta`` of a ``glmer_nb`` fit: the family's default, ``Gamma(alpha=0.01, beta=0.01)``
  for ``nb_theta`` (brms's; proper, nearly flat in log θ).  A shape given in the family
  (``negative.binomial(theta = 2)``) stays fixed.

Here ``ȳ`` and ``s_y`` are the mean and SD of the response less its offset for
identity-link models; for other links ``s_y = 1`` (one unit on the link scale) and
``ȳ = g(mean(y))``.  ``default_priors(result)`` lists them; every posterior records
the priors it used in its ``attrs["priors"]``.

Priors are replaced with ``priors={name: Prior(...)}``; names, from general to specific
(the most specific wins): ``"beta"``, ``"beta[Days]"``, ``"sigma"``, ``"sd"``,
``"sd_Subject"``, ``"sd_Subject[Days]"``, ``"corr"``, ``"corr_Subject"``, and the family's
parameters (``"nb_theta"``).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

import numpy as np

from bayesmix.errors import PriorError


class Prior:
    """A prior: a PyMC distribution's name and its parameters, e.g. ``Prior("HalfNormal", sigma=10)``."""

    def __init__(self, dist: str, **params):
        if not isinstance(dist, str) or not dist:
            raise PriorError(f"a prior needs a PyMC distribution name such as 'Normal', got {dist!r}")
        self.dist = dist
        self.params = {k: _as_number(v, dist, k) for k, v in params.items()}

    @classmethod
    def coerce(cls, value, name: str) -> Prior:
        if isinstance(value, Prior):
            return value
        if isinstance(value, dict) and "dist" in value:
            rest = {k: v for k, v in value.items() if k != "dist"}
            return cls(value["dist"], **rest)
        raise PriorError(f"prior {name!r}: give a bayesmix.Prior (e.g. Prior('HalfNormal', sigma=10)) or a dict "
                         f"{{'dist': 'HalfNormal', 'sigma': 10}}, not {value!r}")

    def __eq__(self, other):
        return isinstance(other, Prior) and (self.dist, self.params) == (other.dist, other.params)

    def __hash__(self):
        return hash((self.dist, tuple(sorted(self.params.items()))))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={_fmt(v)}" for k, v in self.params.items())
        return f"{self.dist}({args})"


def _as_number(value, dist, key):
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise PriorError(f"{dist}: parameter {key}={value!r} is not a number") from None
    if not math.isfinite(out):
        raise PriorError(f"{dist}: parameter {key}={value!r} is not finite")
    return out


def _fmt(value: float) -> str:
    return f"{value:.6g}"


# --- the distributions bayesmix evaluates itself (fast sampler); others go through PyMC --------

@dataclass(frozen=True)
class Family:
    """A distribution's parameters (with PyMC's defaults), which must be positive, and its support."""

    params: dict  # name -> default (None: required)
    positive: tuple[str, ...]
    support: str  # "real" or "positive"


FAST_FAMILIES: dict[str, Family] = {
    "Normal": Family({"mu": 0.0, "sigma": 1.0}, ("sigma",), "real"),
    "StudentT": Family({"nu": None, "mu": 0.0, "sigma": 1.0}, ("nu", "sigma"), "real"),
    "Cauchy": Family({"alpha": None, "beta": None}, ("beta",), "real"),
    "Flat": Family({}, (), "real"),
    "HalfNormal": Family({"sigma": 1.0}, ("sigma",), "positive"),
    "HalfCauchy": Family({"beta": None}, ("beta",), "positive"),
    "HalfStudentT": Family({"nu": 1.0, "sigma": 1.0}, ("nu", "sigma"), "positive"),
    "Exponential": Family({"lam": None}, ("lam",), "positive"),
    "Gamma": Family({"alpha": None, "beta": None}, ("alpha", "beta"), "positive"),
    "InverseGamma": Family({"alpha": None, "beta": None}, ("alpha", "beta"), "positive"),
    "LogNormal": Family({"mu": 0.0, "sigma": 1.0}, ("sigma",), "positive"),
    "HalfFlat": Family({}, (), "positive"),
    "LKJCorr": Family({"eta": 1.0}, ("eta",), "corr"),
}


def is_fast(prior: Prior) -> bool:
    """Whether bayesmix's own sampler evaluates this prior (else the PyMC model is sampled)."""
    family = FAST_FAMILIES.get(prior.dist)
    return family is not None and set(prior.params) <= set(family.params)


def filled_params(prior: Prior) -> dict:
    """The prior's parameters with PyMC's defaults filled in (fast families only)."""
    family = FAST_FAMILIES[prior.dist]
    return {k: prior.params.get(k, default) for k, default in family.params.items()}


def _check_fast(prior: Prior, name: str, support: str) -> None:
    family = FAST_FAMILIES[prior.dist]
    unknown = set(prior.params) - set(family.params)
    if unknown:
        raise PriorError(f"prior {name!r}: {prior.dist} has no parameter {', '.join(sorted(unknown))} "
                         f"(it takes {', '.join(family.params) or 'none'})")
    params = filled_params(prior)
    missing = [k for k, v in params.items() if v is None]
    if missing:
        raise PriorError(f"prior {name!r}: {prior.dist} needs {', '.join(missing)}")
    bad = [f"{k}={_fmt(params[k])}" for k in family.positive if params[k] <= 0]
    if bad:
        raise PriorError(f"prior {name!r}: impossible parameters {prior!r}: {', '.join(bad)} must be positive")
    if support == "positive" and family.support != "positive":
        raise PriorError(f"prior {name!r}: {prior!r} puts mass on negative values; a standard deviation needs a "
                         "distribution on (0, ∞) such as HalfNormal, HalfStudentT, Exponential or Gamma")
    if support == "corr" and family.support != "corr":
        raise PriorError(f"prior {name!r}: correlation priors are LKJCorr(eta=...), got {prior!r}")
    if support != "corr" and family.support == "corr":
        raise PriorError(f"prior {name!r}: LKJCorr is a prior for correlation matrices ('corr' names) only")


def _check_with_pymc(prior: Prior, name: str, support: str) -> None:
    """Distributions bayesmix does not evaluate itself: let PyMC build one and evaluate it."""
    import pymc as pm

    cls = getattr(pm, prior.dist, None)
    if not (isinstance(cls, type) and issubclass(cls, pm.Distribution)):
        raise PriorError(f"prior {name!r}: {prior.dist!r} is not a PyMC distribution")
    if support == "corr":
        raise PriorError(f"prior {name!r}: correlation priors are LKJCorr(eta=...), got {prior!r}")
    try:
        dist = cls.dist(**prior.params)
        point = 1.0 if support == "positive" else 0.0
        logp_point = float(pm.logp(dist, point).eval())
        logp_negative = float(pm.logp(dist, -1.0).eval()) if support == "positive" else -np.inf
    except TypeError as exc:
        raise PriorError(f"prior {name!r}: {prior!r}: {exc}") from None
    except Exception as exc:  # PyMC's ParameterValueError and friends
        raise PriorError(f"prior {name!r}: impossible parameters {prior!r} ({exc})") from None
    if np.isnan(logp_point):
        raise PriorError(f"prior {name!r}: impossible parameters {prior!r}")
    if np.isfinite(logp_negative):
        raise PriorError(f"prior {name!r}: {prior!r} puts mass on negative values; a standard deviation needs a "
                         "distribution on (0, ∞)")


def check_prior(prior: Prior, name: str, support: str) -> None:
    """Raise PriorError for a prior that cannot serve parameter ``name`` (support "real", "positive", "corr")."""
    if prior.dist in FAST_FAMILIES:
        _check_fast(prior, name, support)
    else:
        _check_with_pymc(prior, name, support)


# --- which parameters a model has, and their priors ---------------------------------------------

@dataclass
class TermInfo:
    """A random-effects term as the Bayesian model names it."""

    label: str  # unique term name (lme4's make.unique of the group names): "Subject", "Subject.1"
    group: str  # the grouping factor, also the dimension of its levels
    levels: list[str]
    columns: list[str]
    index: int  # position among compiled.terms

    @property
    def k(self) -> int:
        return len(self.columns)

    @property
    def coef_dim(self) -> str:
        return f"{self.label}_coef"

    @property
    def pair_dim(self) -> str:
        return f"{self.label}_pair"

    # Each variable gets dimension names of its own where ArviZ would otherwise mix them up:
    # arviz-stats' summary mislabels the rows of b_Subject (Subject, Subject_coef) when sd_Subject
    # shares its Subject_coef dimension.  u and b share both dimensions in the same order, which is safe.
    @property
    def sd_dim(self) -> str:
        return f"sd_{self.label}_coef"

    @property
    def chol_dims(self) -> tuple[str, str]:
        return f"corr_chol_{self.label}_row", f"corr_chol_{self.label}_col"

    @property
    def pairs(self) -> list[str]:
        return [f"{self.columns[i]}:{self.columns[j]}" for i in range(self.k) for j in range(i + 1, self.k)]


def term_infos(result) -> list[TermInfo]:
    labels = result.group_labels()
    return [TermInfo(label, t.group, [str(v) for v in t.factor.levels], list(t.column_names), i)
            for i, (label, t) in enumerate(zip(labels, result.compiled.terms))]


@dataclass
class ModelPriors:
    """The prior of every parameter: one per fixed effect, per term column SD, per correlation matrix, σ."""

    beta: list[Prior]
    sd: dict[str, list[Prior]]
    corr: dict[str, Prior]
    sigma: Prior | None
    user: dict = field(default_factory=dict)
    family: dict[str, Prior] = field(default_factory=dict)  # the family's parameters (nb_theta), all positive

    def all_fast(self) -> bool:
        priors = [*self.beta, *[p for ps in self.sd.values() for p in ps], *self.corr.values(), *self.family.values()]
        if self.sigma is not None:
            priors.append(self.sigma)
        return all(is_fast(p) for p in priors) and all(FAST_FAMILIES[p.dist].support == "real" for p in self.beta)

    def describe(self, result) -> dict[str, str]:
        """Parameter name -> prior, as written in posterior attrs and docs."""
        out = {f"beta[{n}]": repr(p) for n, p in zip(result.compiled.fixef_names, self.beta)}
        for info in term_infos(result):
            out.update({f"sd_{info.label}[{c}]": repr(p) for c, p in zip(info.columns, self.sd[info.label])})
            if info.label in self.corr:
                out[f"corr_{info.label}"] = repr(self.corr[info.label])
        if self.sigma is not None:
            out["sigma"] = repr(self.sigma)
        out.update({name: repr(p) for name, p in self.family.items()})
        return out

    def to_json(self, result) -> str:
        return json.dumps(self.describe(result))


def response_scale(result) -> tuple[float, float]:
    """(ȳ, s_y): the response's location and scale on the link scale, the unit of the default priors."""
    family = result.response_family
    centre, spread, mean = _response_summary(result.compiled)
    if family.link.identity:
        return abs(centre), spread
    if family.response_is_probability:
        mean = min(max(mean, 1e-3), 1 - 1e-3)
    else:
        mean = max(mean, 1e-3)
    return float(abs(family.link.linkfun(np.array([mean]))[0])), 1.0


def _response_summary(c) -> tuple[float, float, float]:
    """(mean of y - offset, its SD (n - 1; 1 for one row), mean of y): from the rows, or from the
    row moments of a fit whose rows are elsewhere (bayesmix.distributed)."""
    moments = getattr(c, "row_moments", None)
    if moments is not None:
        r = moments.response
        return float(r.mean[0]), float(r.sd()[0]) if r.n > 1 else 1.0, float(r.mean[1])
    y = c.y - c.offset
    return float(np.mean(y)), float(np.std(y, ddof=1)) if len(y) > 1 else 1.0, float(np.mean(c.y))


def _column_scales(c, term: int | None = None) -> np.ndarray:
    """SDs of X's columns (or of a term's), 0 for a constant column; from a rowless fit's row moments too."""
    moments = getattr(c, "row_moments", None)
    if moments is not None:
        m = moments.x if term is None else moments.z[term]
        sd, size = (m.sd() if m.n > 1 else np.zeros(len(m.mean))), m.absmax
    else:
        matrix = c.X if term is None else c.terms[term].columns
        sd = np.std(matrix, axis=0, ddof=1) if matrix.shape[0] > 1 else np.zeros(matrix.shape[1])
        size = np.abs(matrix).max(axis=0)
    return np.where(sd > 1e-12 * (1 + size), sd, 0.0)


def default_priors(result) -> ModelPriors:
    """The near-flat default priors (see the module docstring for the exact rule)."""
    c = result.compiled
    ybar, sy = response_scale(result)
    sx = _column_scales(c)
    beta = [Prior("Normal", mu=0.0, sigma=100.0 * (sy / s if s > 0 else ybar + sy)) for s in sx]
    sd, corr = {}, {}
    for info in term_infos(result):
        sz = _column_scales(c, info.index)
        sd[info.label] = [Prior("HalfNormal", sigma=100.0 * (sy / s if s > 0 else sy)) for s in sz]
        if info.k > 1:
            corr[info.label] = Prior("LKJCorr", eta=1.0)
    sigma = Prior("HalfNormal", sigma=100.0 * sy) if result.has_scale else None
    family = {name: Prior(dist, **params) for name, (dist, params) in result.response_family.bayes_parameters().items()}
    return ModelPriors(beta, sd, corr, sigma, family=family)


def prior_names(result) -> list[str]:
    """Every name ``priors=`` accepts for this model."""
    names = ["beta", *[f"beta[{n}]" for n in result.compiled.fixef_names]]
    if result.has_scale:
        names.append("sigma")
    names.append("sd")
    infos = term_infos(result)
    for info in infos:
        names += [f"sd_{info.label}", *[f"sd_{info.label}[{c}]" for c in info.columns]]
    if any(info.k > 1 for info in infos):
        names.append("corr")
        names += [f"corr_{info.label}" for info in infos if info.k > 1]
    return names + list(result.response_family.bayes_parameters())


_KEY = re.compile(r"^(?P<base>[^\[]+?)(?:\[(?P<item>.*)\])?$")


PRESETS = ("weakly_informative",)


def weakly_informative_priors(result) -> ModelPriors:
    """rstanarm/brms-style priors scaled to the data (``priors="weakly_informative"``).

    Slopes ``Normal(0, 2.5·s_y/sd(X_j))``; the intercept ``Normal(m_y, 2.5·s_y)`` with ``m_y`` the
    response's mean on the link scale (the intercept is not centred, so its prior is centred on the
    data instead); each random-effect SD ``Exponential(1/(s_y/sd(Z_j)))`` (rate 1/s_y for a constant
    column); σ ``Exponential(1/s_y)``; correlations ``LKJCorr(eta=1)``.  Unlike the near-flat
    defaults the posterior mode no longer equals lme4's estimate: the priors pull, gently.
    """
    c = result.compiled
    _, sy = response_scale(result)
    family = result.response_family
    centre, _, mean = _response_summary(c)
    if not family.link.identity:
        mean = float(np.clip(mean, 1e-3, 1 - 1e-3 if family.response_is_probability else np.inf))
        centre = float(family.link.linkfun(np.array([mean]))[0])
    sx = _column_scales(c)
    beta = [Prior("Normal", mu=0.0, sigma=2.5 * sy / s) if s > 0 else Prior("Normal", mu=centre, sigma=2.5 * sy)
            for s in sx]
    sd, corr = {}, {}
    for info in term_infos(result):
        sz = _column_scales(c, info.index)
        sd[info.label] = [Prior("Exponential", lam=(s / sy if s > 0 else 1.0 / sy)) for s in sz]
        if info.k > 1:
            corr[info.label] = Prior("LKJCorr", eta=1.0)
    sigma = Prior("Exponential", lam=1.0 / sy) if result.has_scale else None
    family = {name: Prior(dist, **params) for name, (dist, params) in result.response_family.bayes_parameters().items()}
    return ModelPriors(beta, sd, corr, sigma, user={"preset": "weakly_informative"}, family=family)


def resolve_priors(result, priors: dict | str | None) -> ModelPriors:
    """Defaults overridden by ``priors`` (most specific name wins), every name and prior checked;
    ``priors="weakly_informative"`` takes :func:`weakly_informative_priors` instead."""
    if isinstance(priors, str):
        if priors not in PRESETS:
            raise PriorError(f"unknown prior preset {priors!r}; presets: {', '.join(map(repr, PRESETS))}")
        return weakly_informative_priors(result)
    if priors is not None and not isinstance(priors, dict):
        raise PriorError(f"priors must be a dict of name -> Prior or a preset name, got {type(priors).__name__}")
    out = default_priors(result)
    priors = dict(priors or {})
    if not isinstance(priors, dict):
        raise PriorError(f"priors must be a dict of name -> Prior, got {type(priors).__name__}")
    valid = prior_names(result)
    unknown = [k for k in priors if k not in valid]
    if unknown:
        raise PriorError(f"unknown prior name{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                         f"this model's names are: {', '.join(valid)}")
    given = {k: Prior.coerce(v, k) for k, v in priors.items()}
    family_names = set(result.response_family.bayes_parameters())
    for name, prior in given.items():
        positive = name.startswith(("sd", "sigma")) or name in family_names
        support = "corr" if name.startswith("corr") else ("positive" if positive else "real")
        check_prior(prior, name, support)
    # apply from general to specific
    for name in sorted(given, key=_specificity):
        _apply(out, result, name, given[name])
    out.user = {k: repr(v) for k, v in given.items()}
    return out


def _specificity(name: str) -> int:
    if name in ("beta", "sigma", "sd", "corr"):
        return 0
    return 2 if name.endswith("]") else 1


def _apply(out: ModelPriors, result, name: str, prior: Prior) -> None:
    fixef = result.compiled.fixef_names
    infos = {i.label: i for i in term_infos(result)}
    if name == "beta":
        out.beta = [prior] * len(fixef)
    elif name.startswith("beta["):
        out.beta[fixef.index(name[5:-1])] = prior
    elif name == "sigma":
        out.sigma = prior
    elif name in out.family:
        out.family[name] = prior
    elif name == "sd":
        out.sd = {label: [prior] * info.k for label, info in infos.items()}
    elif name == "corr":
        out.corr = {label: prior for label in out.corr}
    elif name.startswith("corr_"):
        out.corr[name[5:]] = prior
    else:  # sd_<label> or sd_<label>[col]
        match = _KEY.match(name[3:])
        info = infos[match.group("base")]
        if match.group("item") is None:
            out.sd[info.label] = [prior] * info.k
        else:
            out.sd[info.label][info.columns.index(match.group("item"))] = prior


# --- the PyMC model -----------------------------------------------------------------------------

def model_coords(result) -> dict[str, list]:
    coords: dict[str, list] = {"fixef": list(result.compiled.fixef_names)}
    for info in term_infos(result):
        coords[info.group] = info.levels
        coords[info.coef_dim] = info.columns
        coords[info.sd_dim] = info.columns
        if info.k > 1:
            coords[info.pair_dim] = info.pairs
            coords.update(dict.fromkeys(info.chol_dims, info.columns))
    coords["theta_name"] = list(result.compiled.theta_names())
    return coords


def data_arrays(result) -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
    """The model's covariates as named arrays: X, the offset, and per term its Z columns and level indices.

    The PyMC model holds them as ``pm.Data`` containers (``pm.set_data`` swaps them) and the
    posterior's ``constant_data`` group records them under the same names.
    """
    c = result.compiled
    out = {"X": (("obs", "fixef"), c.X), "offset": (("obs",), c.offset)}
    for info in term_infos(result):
        term = c.terms[info.index]
        out[f"Z_{info.label}"] = (("obs", info.coef_dim), np.asarray(term.columns, dtype=float))
        out[f"idx_{info.label}"] = (("obs",), np.asarray(term.factor.codes, dtype=np.int32))  # PyMC stores indices as int32
    return out


def build_pymc_model(result, priors: dict | ModelPriors | None = None):
    """The fitted model as a new ``pymc.Model`` (see the module docstring), with named coordinates.

    Every call builds a new model, so extending one (adding a variable, ``pm.set_data``) never
    changes what ``result.sample()`` samples.  The covariates are ``pm.Data`` containers
    (``X``, ``offset``, ``Z_<term>``, ``idx_<term>``: see :func:`data_arrays`), and the linear
    predictor ``eta`` and the mean ``mu`` are named deterministics over the ``obs`` dimension.
    """
    import pymc as pm
    import pytensor.tensor as pt

    spec = priors if isinstance(priors, ModelPriors) else resolve_priors(result, priors)
    infos = term_infos(result)
    coords = {**model_coords(result), "obs": np.arange(result.nobs)}
    with pm.Model(coords=coords) as model:
        data = {name: pm.Data(name, value, dims=dims) for name, (dims, value) in data_arrays(result).items()}
        beta = _vector_rv("beta", spec.beta, "fixef", result.compiled.fixef_names)
        sigma = _scalar_rv("sigma", spec.sigma) if spec.sigma is not None else None
        eta = pt.dot(data["X"], beta) + data["offset"]
        factors = []
        for info in infos:
            L = _term_factor(info, spec)
            u = pm.Normal(f"u_{info.label}", 0.0, 1.0, dims=(info.group, info.coef_dim))
            b = pm.Deterministic(f"b_{info.label}", pt.dot(u, L.T), dims=(info.group, info.coef_dim))
            eta = eta + pt.sum(data[f"Z_{info.label}"] * b[data[f"idx_{info.label}"]], axis=1)
            factors.append(L)
        theta_parts = []
        for info, L in zip(infos, factors):
            T = L / sigma if sigma is not None else L
            cols, rows = np.triu_indices(info.k)  # lower triangle, column-major: lme4's θ order
            theta_parts.append(T[rows, cols])
        pm.Deterministic("theta", pt.concatenate(theta_parts), dims="theta_name")
        family_rvs = {name: _scalar_rv(name, prior) for name, prior in spec.family.items()}
        eta = pm.Deterministic("eta", eta, dims="obs")
        pm.Deterministic("mu", result.response_family.link.pytensor_inverse(pt, eta), dims="obs")
        _likelihood(result, eta, sigma, family_rvs)
    if "y" in model.named_vars and np.all(result.compiled.weights > 0):
        model.named_vars_to_dims["y"] = ("obs",)  # one observed value per row: label it as eta and mu
    model.bayesmix_priors = spec
    return model


def _term_factor(info: TermInfo, spec: ModelPriors):
    """L = diag(sd) chol(corr) for one term, with its sd_ and corr_chol_/corr_ variables."""
    import pymc as pm
    import pytensor.tensor as pt

    sd = _vector_rv(f"sd_{info.label}", spec.sd[info.label], info.sd_dim, info.columns)
    if info.k == 1:
        return pt.reshape(sd, (1, 1))
    chol = pm.LKJCorr(f"corr_chol_{info.label}", n=info.k, **filled_params(spec.corr[info.label]),
                      dims=info.chol_dims, default_transform=_corr_transform(info.k))
    corr = chol @ chol.T
    rows, cols = np.triu_indices(info.k, 1)
    pm.Deterministic(f"corr_{info.label}", corr[rows, cols], dims=info.pair_dim)
    return sd[:, None] * chol


def _corr_transform(n: int):
    """PyMC's Cholesky-correlation transform under a name without "_".

    PyMC strips a transform's name from the value variable's name after the last "_"; its own
    "cholesky_corr" leaves "corr_chol_Subject_cholesky", and ``pm.compute_log_likelihood`` then
    fails with a KeyError on every model with an LKJ prior.
    """
    from pymc.distributions.transforms import CholeskyCorrTransform

    class _Transform(CholeskyCorrTransform):
        name = "choleskycorr"

    return _Transform(n=n, upper=False)


def _scalar_rv(name: str, prior: Prior):
    import pymc as pm

    return getattr(pm, prior.dist)(name, **prior.params)


def _vector_rv(name: str, priors: list[Prior], dim: str, labels: list[str]):
    """One vector RV when every element's prior is of one kind, else one RV per element stacked."""
    import pymc as pm
    import pytensor.tensor as pt

    kinds = {(p.dist, tuple(sorted(p.params))) for p in priors}
    if len(kinds) == 1:
        first = priors[0]
        params = {k: np.array([p.params[k] for p in priors]) for k in first.params}
        return getattr(pm, first.dist)(name, **params, dims=dim)
    parts = [getattr(pm, p.dist)(f"{name}[{label}]", **p.params) for p, label in zip(priors, labels)]
    return pm.Deterministic(name, pt.stack(parts), dims=dim)


def _likelihood(result, eta, sigma, family_rvs: dict) -> None:
    """The response's distribution given the linear predictor, with lme4's use of prior weights (the family's)."""
    import pymc as pm
    import pytensor.tensor as pt

    c = result.compiled
    keep = c.weights > 0  # lme4 drops zero-weight observations from the likelihood
    y, w = c.y[keep], c.weights[keep]
    eta = eta[np.flatnonzero(keep)] if not keep.all() else eta
    family = result.response_family
    mu = family.link.pytensor_inverse(pt, eta)
    family.pymc_likelihood(pm, pt, "y", mu, y, w, sigma if sigma is not None else 1.0, family_rvs)
