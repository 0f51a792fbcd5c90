"""Every evaluation path of the profiled deviance gives the textbook number.

engine/lmm.py evaluates the same criterion several ways for speed (issue 14): one dense
Cholesky of the whole system for small models (DenseSystem), the blocked factorization
with dense or block-sparse Zrest'WZ1 (BlockColumns) and Λ for vector-valued later terms
applied block by block (BlockLambda); from the second factorization on, a sparse
Zrest'WZ1 enters the Schur complement through a LevelGram (engine/blocked.py) without L21's
rest rows, which are computed only when the solution asks for them.  Each must equal, to round-off, the deviance computed
from its definition with explicit Z, Λ and X (Bates et al. 2015, JSS 67(1), eqs. 34 and 41).
"""

import numpy as np
import pandas as pd
import pytest
import scipy.linalg
import scipy.sparse as sp

from bayesmix.engine import blocked
from bayesmix.engine.blocked import LevelGram
from bayesmix.engine.lmm import DenseSystem, ProfiledDeviance
from bayesmix.spec.model import compile_model


def _textbook_deviance(c, theta, reml: bool) -> float:
    """-2 log L (ML) or the REML criterion from explicit dense matrices."""
    Z = sp.hstack([t.z_matrix() for t in c.terms]).toarray()
    bounds = np.cumsum([0] + [t.ntheta for t in c.terms])
    Lam = sp.block_diag([t.lambda_matrix(theta[a:b]) for t, a, b in zip(c.terms, bounds[:-1], bounds[1:])]).toarray()
    ZL, X, y = Z @ Lam, c.X, c.y
    n, p, q = len(y), X.shape[1], ZL.shape[1]
    A = ZL.T @ ZL + np.eye(q)
    M = np.block([[A, ZL.T @ X], [X.T @ ZL, X.T @ X]])
    rhs = np.concatenate([ZL.T @ y, X.T @ y])
    pwrss = y @ y - rhs @ np.linalg.solve(M, rhs)
    ld_l2 = np.linalg.slogdet(A)[1]
    if reml:
        ld_rx2 = np.linalg.slogdet(M)[1] - ld_l2
        return ld_l2 + ld_rx2 + (n - p) * (1 + np.log(2 * np.pi * pwrss / (n - p)))
    return ld_l2 + n * (1 + np.log(2 * np.pi * pwrss / n))


def _data(n_g1: int, n_g2: int, per: int, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = n_g1 * per
    g1 = np.repeat(np.arange(n_g1), per)
    g2 = rng.integers(0, n_g2, n)
    x, x2 = rng.normal(size=n), rng.normal(size=n)
    y = 1 + 0.5 * x + rng.normal(size=n_g1)[g1] * (1 + 0.4 * x) + rng.normal(size=n_g2)[g2] + rng.normal(size=n)
    return pd.DataFrame({"y": y, "x": x, "x2": x2, "g1": [f"a{i:03d}" for i in g1], "g2": [f"b{i:03d}" for i in g2],
                         "side": np.where(rng.random(n) < 0.5, "L", "R")})


# (formula, data, which paths the deviance call must take)
CASES = {
    # Pixel-like: scalar first term, then a vector-valued one, then a two-level one -> DenseSystem
    "pixel_like": ("y ~ x + I(x^2) + (x | g2) + (1 | side/g2)", _data(10, 12, 8), "dense"),
    # two correlated-slope terms on 20 crossed groups -> DenseSystem
    "two_slopes": ("y ~ 1 + (1 + x | g1) + (1 + x2 | g2)", _data(20, 20, 10), "dense"),
    # crossed slopes, Zrest'WZ1 12% filled -> blocked path with BlockColumns
    "crossed_sparse": ("y ~ x + x2 + (x | g1) + (1 | g2)", _data(100, 50, 6), "block_sparse"),
    # a vector-valued later term on a sparse Zrest'WZ1 -> BlockColumns, then Λ_rest' as CSR
    "vector_rest_sparse": ("y ~ x + (x | g1) + (x2 | g2)", _data(100, 50, 6), "block_sparse"),
    # k = 3 first term, dense Zrest'WZ1 (few rest levels) -> blocked path, batched-matmul products
    "k3_dense_rest": ("y ~ x + (x + x2 | g1) + (1 | g2)", _data(60, 3, 8), "blocked_dense"),
    # k = 3 first term, sparse Zrest'WZ1 -> BlockColumns, LAPACK level blocks, a six-entry LevelGram
    "k3_sparse": ("y ~ x + (x + x2 | g1) + (1 | g2)", _data(100, 50, 6), "block_sparse"),
    # scalar terms, Zrest'WZ1 ~440 x 600 (past the dense limit) -> CSR, then a one-entry LevelGram
    "scalar_sparse": ("y ~ x + (1 | g1) + (1 | g2)", _data(600, 480, 2), "sparse"),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("reml", [True, False])
def test_every_path_equals_the_textbook_deviance(name, reml):
    formula, data, path = CASES[name]
    c = compile_model(formula, data)
    dev = ProfiledDeviance(c.terms, c.X, c.y, c.weights, reml=reml)
    rng = np.random.default_rng(11)
    start = c.theta_start()
    for theta in (start, start * 0.6 + rng.uniform(-0.3, 0.3, len(start)) * (start == 0)):
        expected = _textbook_deviance(c, theta, reml)
        via_call = dev(theta)
        via_blocked = dev.deviance_from(dev.factorize(theta))
        assert via_call == pytest.approx(expected, rel=1e-10)
        assert via_blocked == pytest.approx(expected, rel=1e-10)
    assert (dev._dense is not None) == (path == "dense")
    assert (dev._a_r1_blocks is not None) == (path == "block_sparse")
    assert isinstance(dev._level_gram, LevelGram) == (path in ("block_sparse", "sparse"))


def test_dense_system_matches_the_blocked_factor_at_a_singular_theta():
    """θ with a zero variance (a singular fit's boundary): both paths still agree exactly."""
    formula, data, _ = CASES["two_slopes"]
    c = compile_model(formula, data)
    dev = ProfiledDeviance(c.terms, c.X, c.y, c.weights, reml=True)
    theta = np.array([0.8, 0.2, 0.0, 0.5, 0.0, 0.0])
    assert dev(theta) == pytest.approx(dev.deviance_from(dev.factorize(theta)), rel=1e-12)
    assert dev(theta) == pytest.approx(_textbook_deviance(c, theta, True), rel=1e-10)
    assert isinstance(dev._dense, DenseSystem)


SPARSE = [name for name, (_, _, path) in CASES.items() if path in ("block_sparse", "sparse")]


@pytest.mark.parametrize("name", SPARSE)
@pytest.mark.parametrize("reml", [True, False])
def test_level_gram_path_at_singular_theta_and_its_deferred_solution(name, reml):
    """Zero variances (both terms' boundaries) and the solution from the deferred rest rows of L21.

    The first factorization forms L21's rest rows; later ones go through the LevelGram and
    compute them only for the solution: β and u must agree to round-off.
    """
    formula, data, _ = CASES[name]
    c = compile_model(formula, data)
    dev = ProfiledDeviance(c.terms, c.X, c.y, c.weights, reml=reml)
    start = c.theta_start()
    thetas = [start * 0.7]
    for zero in (0, len(start) - 1, slice(1, len(start))):  # first term's first θ, the last term, all but one
        theta = start * 0.8
        theta[zero] = 0.0
        thetas.append(theta)
    eager = dev.factorize(thetas[0])
    for theta in thetas:
        expected = _textbook_deviance(c, theta, reml)
        assert dev.deviance_from(dev.factorize(theta)) == pytest.approx(expected, rel=1e-10)
        assert dev(theta) == pytest.approx(expected, rel=1e-10)
    assert isinstance(dev._level_gram, LevelGram)
    lazy = dev.factorize(thetas[0])
    assert callable(lazy.rest_rows) and not callable(eager.rest_rows)
    for got, want in zip(dev.solve(lazy), dev.solve(eager)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_level_gram_equals_the_dense_product(monkeypatch):
    """``A blockdiag(m m') A'`` against dense algebra: empty levels, one-block levels, many build chunks."""
    rng = np.random.default_rng(5)
    q2, levels, k = 7, 30, 2
    A = np.zeros((q2, levels * k))
    for level in range(levels):
        rows = rng.choice(q2, size=rng.integers(0, 5), replace=False)  # 0 to 4 blocks per level
        A[np.ix_(rows, range(level * k, level * k + k))] = rng.normal(size=(len(rows), k))
    blocks = blocked.BlockColumns.from_csr(sp.csr_matrix(A), k)
    m = rng.normal(size=(levels, k, k))
    P = scipy.linalg.block_diag(*(m @ m.transpose(0, 2, 1)))
    monkeypatch.setattr(blocked, "_PAIRS_PER_CHUNK", 5)
    pat = blocks.pattern
    gram = LevelGram.from_blocks(blocks.values, pat.block_rows, pat.block_levels, levels, q2)
    np.testing.assert_allclose(gram.gram(m), A @ P @ A.T, rtol=1e-12, atol=1e-12)


def test_sparse_gram_equals_the_dense_product():
    """PIRLS's C_r C_r' on the block pattern (SciPy's numeric kernel, structure found once) against dense algebra,
    for two sets of values on one pattern: rows without entries, levels in one row only."""
    rng = np.random.default_rng(6)
    q2, levels, k = 9, 40, 2
    A = np.zeros((q2, levels * k))
    for level in range(levels):
        rows = rng.choice(q2 - 1, size=rng.integers(0, 4), replace=False)  # the last row stays empty
        A[np.ix_(rows, range(level * k, level * k + k))] = rng.normal(size=(len(rows), k))
    pattern = blocked.BlockColumns.from_csr(sp.csr_matrix(A), k).pattern
    gram = pattern.sparse_gram
    assert gram is not None and pattern.sparse_gram is gram  # built once
    for _ in range(2):
        values = rng.normal(size=len(pattern.indices))
        C = sp.csr_matrix((values, pattern.indices, pattern.indptr), shape=pattern.shape).toarray()
        np.testing.assert_allclose(gram.dense(values), C @ C.T, rtol=1e-12, atol=1e-12)


def test_without_room_for_a_level_gram_the_rest_rows_are_formed(monkeypatch):
    """Past the LevelGram's memory cap the evaluation falls back to L21's rest rows, same deviance."""
    monkeypatch.setattr(blocked, "_LEVEL_GRAM_BYTES", 0)
    formula, data, _ = CASES["crossed_sparse"]
    c = compile_model(formula, data)
    dev = ProfiledDeviance(c.terms, c.X, c.y, c.weights, reml=True)
    theta = c.theta_start() * 0.9
    for _ in range(3):
        assert dev(theta) == pytest.approx(_textbook_deviance(c, theta, True), rel=1e-10)
    assert dev._level_gram is False


@pytest.mark.parametrize("formula, data", [CASES["k3_dense_rest"][:2],
                                           ("y ~ x + x2 + (x | g1) + (1 | g2)", _data(100, 4, 8))])
@pytest.mark.parametrize("reml", [True, False])
def test_a_well_filled_sparse_block_is_made_dense(monkeypatch, formula, data, reml):
    """A sparse Zrest'WZ1 filled enough that dense products beat a LevelGram is made dense once."""
    from bayesmix.engine import lmm

    monkeypatch.setattr(lmm, "_DENSE_LIMIT", 0)  # the cross-products keep it sparse
    c = compile_model(formula, data)
    dev = ProfiledDeviance(c.terms, c.X, c.y, c.weights, reml=reml)
    assert sp.issparse(dev.cross.a_r1)
    start = c.theta_start()
    singular = start * 0.8
    singular[-1] = 0.0
    for theta in (start, start * 0.5, singular):
        expected = _textbook_deviance(c, theta, reml)
        assert dev(theta) == pytest.approx(expected, rel=1e-10)
        assert dev.deviance_from(dev.factorize(theta)) == pytest.approx(expected, rel=1e-10)
    assert isinstance(dev.cross.a_r1, np.ndarray) and dev._level_gram is False


@pytest.mark.parametrize("formula", ["y ~ x + (x | g1)", "y ~ x + (1 | g1)"])
def test_one_term_models_factor_repeatedly(formula):
    """No other terms (Zrest'WZ1 is an empty sparse block): later factorizations need no LevelGram."""
    c = compile_model(formula, _data(30, 5, 4))
    dev = ProfiledDeviance(c.terms, c.X, c.y, c.weights, reml=True)
    for theta in (c.theta_start(), c.theta_start() * 0.5, c.theta_start() * 0.0):
        expected = _textbook_deviance(c, theta, True)
        for _ in range(2):
            assert dev.deviance_from(dev.factorize(theta)) == pytest.approx(expected, rel=1e-10)
    assert dev._level_gram is None


def test_pirls_schur_placed_on_the_pattern_equals_the_dense_assembly(monkeypatch):
    """Scalar terms throughout (PIRLS on grouseticks: observation-level INDEX, BROOD nested in LOCATION):
    the Schur complement's lower triangle placed entry by entry on the rest rows' pair pattern gives the
    factor, solution and log-determinant of the dense assembly, at θ with and without a zero."""
    import bayesmix as bm
    from bayesmix.engine.families import get_family
    from bayesmix.engine.glmm import GlmmObjective

    c = compile_model("TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)",
                      bm.load_dataset("grouseticks"), check_levels_vs_nobs=False)  # as glmer compiles it
    obj = GlmmObjective(c, get_family("poisson"))
    eta = obj.eta_start
    mu = obj.family.link.linkinv(eta)
    for theta in (np.array([0.9, 1.2, 0.6]), np.array([0.9, 0.0, 0.6])):
        # engine.lmm's route (PIRLS itself takes engine.nested's for these nested terms: test_nested_chain.py)
        _, dev, f = obj.weighted_system(theta, eta, mu, general=True)
        assert isinstance(dev.cross.a_r1, blocked.PatternMatrix)  # the path under test
        with monkeypatch.context() as patched:
            patched.setattr(blocked.PatternMatrix, "lower_gram", lambda self: None)  # the dense assembly
            _, dev_dense, f_dense = obj.weighted_system(theta, eta, mu, general=True)
        np.testing.assert_allclose(f.l_s, f_dense.l_s, rtol=1e-12, atol=1e-12)
        assert f.ldL2 == pytest.approx(f_dense.ldL2, rel=1e-13)
        for got, want in zip(dev.solve(f), dev_dense.solve(f_dense)):
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_pirls_sums_zrest_wz1_into_level_blocks_as_the_csr_route_does():
    """A vector-valued first term with a sparse Zrest'WZ1 (crossed slopes): PIRLS's WeightedSystem sums the rows
    straight into BlockColumns' k-wide level blocks; the block values, the factor and the solution are those of
    the CSR matrix built from the data with the same weights."""
    from bayesmix.engine.weighted_system import WeightedSystem
    from bayesmix.engine.lmm import CrossProducts

    c = compile_model("y ~ x + (1 + x | g1) + (1 | g2)", _data(700, 200, 4))  # Zrest'WZ1: 200 x 1400, sparse
    rng = np.random.default_rng(5)
    w, response = rng.uniform(0.2, 2.0, c.n), rng.normal(size=c.n)
    cross = WeightedSystem(c).cross(w, c.X, response)
    assert isinstance(cross.a_r1, blocked.BlockColumns)
    reference = CrossProducts.from_data(c.terms, c.X, response, w)
    assert sp.issparse(reference.a_r1)
    blocks = blocked.BlockColumns.from_csr(reference.a_r1, 2)
    np.testing.assert_array_equal(cross.a_r1.pattern.indices, blocks.pattern.indices)
    np.testing.assert_allclose(cross.a_r1.values, blocks.values, rtol=1e-13, atol=1e-13)
    theta = np.array([0.8, 0.3, 0.5, 1.1])
    ours, theirs = (ProfiledDeviance(c.terms, c.X, None, None, reml=False, cross=cp) for cp in (cross, reference))
    f, g = ours.factorize(theta), theirs.factorize(theta)
    assert f.ldL2 == pytest.approx(g.ldL2, rel=1e-13)
    for got, want in zip(ours.solve(f), theirs.solve(g)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
