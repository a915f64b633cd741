"""Few-shot latency predictors for an unseen target device, all behind one interface:

    p = make("ridge", "nb201", seed=0)
    p.fit(sources)       # {source device: {canonical arch: ms}}: what is known beforehand
    p.adapt(samples)     # {canonical arch: ms}: the k target measurements, nothing else
    mean, lo, hi = p.predict(archs)   # arrays in ms, lo <= mean <= hi

Methods (names as in the `halo-coord predict --method` contract):
* `flops`: MACs-rank baseline. latency = a*MACs + b on the k samples, or log latency =
  a*log(1 + MMACs) + b, whichever has the smaller leave-one-out (LOO) error on log latency.
* `ridge`: ridge regression of log latency on standardised architecture features (nb201: op
  counts, connected, live convs, dead-branch ops, MMACs; fbnet: one-hot + block counts) fitted
  on the k samples; alpha by exact LOO over a small grid.
* `nnls`: non-negative combination of the source devices' latencies (plus a free-sign
  intercept as +1/-1 columns) fitted on the k samples with scipy.optimize.nnls; a query arch
  must be measured on every source that gets a non-zero weight.
* `adaproxy`: AdaProxy/OneProxy. The source whose latencies rank the k samples best
  (Spearman) is the proxy; its linear one-hot model of log latency (fitted on all its data) is
  transferred: log target = c + a * proxy_model + onehot . delta, with delta strongly
  L2-penalised (lambda by LOO).
* `auto`: the mean of help, nnls and flops (and lut when a table is given) in log latency,
  each weighted by the inverse of its LOO MSE of log latency on the k samples (see `Auto`).
* `help`: HELP's few-shot setting, meta-learned across the sources as a Bayesian low-rank
  model (see `Help`); its intervals widen with the posterior variance per arch.
* `lut`: Single-Path NAS / FBNet per-layer lookup table. The table (op arch -> ms, the
  single-block models of `lut.table` measured on the target itself) gives each arch the sum of
  its layers' entries s; the k samples fit the stem/head constant, y = s + c, or y = a*s + c
  when that has the smaller LOO error (isolated blocks lose the cache and overlap they have in
  the network). fbnet only; it ignores the sources.

Intervals: every method keeps its LOO residuals of log latency on the k samples; with
s = their RMS, lo/hi = mean * exp(-/+ 1.645 s), a nominal 90 % band for a log-normal error
(LOO residuals of k points understate the error on unseen archs a little).

Everything is deterministic: no method draws random numbers (`seed` is kept for methods that
will, e.g. HELP).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from coordinator.analysis import features as feat
from coordinator.errors import UserError
from coordinator.zoo import lut
from coordinator.zoo.spaces import fbnet
from coordinator.zoo.spaces.common import ArchError

Z90 = 1.645
MIN_SAMPLES = 3
RIDGE_ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
ADAPROXY_LAMBDAS = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0)
PROXY_ALPHA = 1e-3  # the proxy's one-hot model is fitted on thousands of archs
BASELINES = ("flops", "ridge", "nnls")
ALL_METHODS = ("auto", "help", "ridge", "nnls", "adaproxy", "lut", "flops")


def _ridge(z: np.ndarray, y: np.ndarray, penalty: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Generalised ridge: argmin |y - Z w|^2 + sum penalty_j w_j^2. Returns (w, exact LOO
    residuals from the hat matrix)."""
    a = z.T @ z + np.diag(penalty)
    inv_zt = np.linalg.solve(a + 1e-12 * np.eye(len(a)), z.T)
    w = inv_zt @ y
    h = np.einsum("ij,ji->i", z, inv_zt)
    loo = (y - z @ w) / np.maximum(1.0 - h, 1e-6)
    return w, loo


def _rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(values)))) if len(values) else math.inf


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho = stats.spearmanr(x, y).statistic
    return -1.0 if math.isnan(rho) else float(rho)


class Predictor:
    """Base class. Subclasses implement `_adapt(archs, y_ms) -> LOO residuals of log ms` and
    `_mean_log(archs) -> log ms`; `fit` may be overridden to digest the sources."""

    name = "base"

    def __init__(self, space: str, seed: int = 0):
        feat.check_space(space)
        self.space = space
        self.seed = seed
        self.sources: dict[str, dict[str, float]] = {}
        self.loo: np.ndarray | None = None

    # -- interface ---------------------------------------------------------------------------
    def fit(self, sources: Mapping[str, Mapping[str, float]]) -> Predictor:
        self.sources = {
            dev: {a: float(v) for a, v in lat.items() if math.isfinite(v) and v > 0}
            for dev, lat in sources.items()
        }
        return self

    def adapt(self, samples: Mapping[str, float]) -> Predictor:
        archs = list(samples)
        y = np.array([samples[a] for a in archs], float)
        if len(archs) < MIN_SAMPLES:
            raise UserError(
                f"{self.name}: {len(archs)} target samples; at least {MIN_SAMPLES} are needed"
            )
        if not np.all(np.isfinite(y)) or np.any(y <= 0):
            raise UserError(f"{self.name}: target latencies must be finite and positive")
        self.loo = np.asarray(self._adapt(archs, y), float)
        return self

    @property
    def loo_rmse(self) -> float:
        """RMS of the LOO residuals of log latency on the k samples (inf before adapt)."""
        return math.inf if self.loo is None else _rms(self.loo)

    def predict(self, archs: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.loo is None:
            raise UserError(f"{self.name}: adapt() with target samples before predict()")
        m = self._mean_log(list(archs))
        s = Z90 * self.loo_rmse
        return np.exp(m), np.exp(m - s), np.exp(m + s)

    # -- to implement ------------------------------------------------------------------------
    def _adapt(self, archs: list[str], y: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _mean_log(self, archs: list[str]) -> np.ndarray:
        raise NotImplementedError


class Flops(Predictor):
    name = "flops"

    def _adapt(self, archs: list[str], y: np.ndarray) -> np.ndarray:
        x = feat.macs(self.space, archs) / 1e6
        ly = np.log(y)
        ones = np.ones(len(x))
        # log-log: exact LOO from the hat matrix
        zl = np.column_stack([ones, np.log1p(x)])
        wl, loo_log = _ridge(zl, ly, np.array([0.0, 1e-9]))
        # linear: LOO by refitting, scored on log latency
        zn = np.column_stack([ones, x])
        loo_lin = np.empty(len(x))
        for i in range(len(x)):
            keep = np.arange(len(x)) != i
            w, *_ = np.linalg.lstsq(zn[keep], y[keep], rcond=None)
            loo_lin[i] = ly[i] - math.log(max(float(zn[i] @ w), self._floor(y)))
        self.w_lin, *_ = np.linalg.lstsq(zn, y, rcond=None)
        self.w_log, self.floor = wl, self._floor(y)
        self.log_space = _rms(loo_log) <= _rms(loo_lin)
        return loo_log if self.log_space else loo_lin

    @staticmethod
    def _floor(y: np.ndarray) -> float:
        return 1e-3 * float(np.min(y))

    def _mean_log(self, archs: list[str]) -> np.ndarray:
        x = feat.macs(self.space, archs) / 1e6
        if self.log_space:
            return self.w_log[0] + self.w_log[1] * np.log1p(x)
        return np.log(np.maximum(self.w_lin[0] + self.w_lin[1] * x, self.floor))


class Ridge(Predictor):
    name = "ridge"

    def _x(self, archs: list[str]) -> np.ndarray:
        x = feat.features(self.space, archs)
        return x[:, 30:] if self.space == "nb201" else x  # nb201: no one-hot (k is small)

    def _adapt(self, archs: list[str], y: np.ndarray) -> np.ndarray:
        x = self._x(archs)
        self.mu = x.mean(axis=0)
        sd = x.std(axis=0)
        self.sd = np.where(sd > 0, sd, 1.0)
        z = np.column_stack([np.ones(len(x)), (x - self.mu) / self.sd])
        ly = np.log(y)
        best = None
        for alpha in RIDGE_ALPHAS:
            penalty = np.r_[0.0, np.full(z.shape[1] - 1, alpha)]
            w, loo = _ridge(z, ly, penalty)
            if best is None or _rms(loo) < _rms(best[2]) - 1e-12:
                best = (alpha, w, loo)
        self.alpha, self.w, loo = best
        return loo

    def _mean_log(self, archs: list[str]) -> np.ndarray:
        x = (self._x(archs) - self.mu) / self.sd
        return self.w[0] + x @ self.w[1:]


class Nnls(Predictor):
    name = "nnls"

    def _matrix(self, devices: list[str], archs: list[str]) -> np.ndarray:
        cols = []
        for d in devices:
            lat = self.sources[d]
            missing = [a for a in archs if a not in lat]
            if missing:
                raise UserError(
                    f"nnls: arch {missing[0]} is not measured on source {d} "
                    f"({len(missing)} query archs are not); nnls needs every arch on every "
                    "source it uses"
                )
            cols.append([lat[a] for a in archs])
        n = len(archs)
        return np.column_stack([*cols, np.ones(n), -np.ones(n)])

    def _adapt(self, archs: list[str], y: np.ndarray) -> np.ndarray:
        from scipy.optimize import nnls

        self.devices = sorted(d for d, lat in self.sources.items() if all(a in lat for a in archs))
        if not self.devices:
            raise UserError("nnls: no source device has measured all the target samples")
        a = self._matrix(self.devices, archs)
        self.floor = 1e-3 * float(np.min(y))
        ly = np.log(y)
        loo = np.empty(len(y))
        for i in range(len(y)):
            keep = np.arange(len(y)) != i
            w, _ = nnls(a[keep], y[keep])
            loo[i] = ly[i] - math.log(max(float(a[i] @ w), self.floor))
        self.w, _ = nnls(a, y)
        self.used = [d for d, wd in zip(self.devices, self.w, strict=False) if wd > 0]
        return loo

    def _mean_log(self, archs: list[str]) -> np.ndarray:
        n_dev = len(self.devices)
        weights = dict(zip(self.devices, self.w[:n_dev], strict=True))
        a = self._matrix(self.used, archs)
        w = np.r_[[weights[d] for d in self.used], self.w[n_dev:]]
        return np.log(np.maximum(a @ w, self.floor))


class AdaProxy(Predictor):
    name = "adaproxy"

    def fit(self, sources: Mapping[str, Mapping[str, float]]) -> Predictor:
        super().fit(sources)
        if not self.sources:
            raise UserError("adaproxy: no source device given")
        self.models: dict[str, np.ndarray] = {}
        for dev, lat in self.sources.items():
            archs = list(lat)
            z = np.column_stack([np.ones(len(archs)), feat.onehot(self.space, archs)])
            ly = np.log(np.array([lat[a] for a in archs]))
            penalty = np.r_[0.0, np.full(z.shape[1] - 1, PROXY_ALPHA)]
            a = z.T @ z + np.diag(penalty)
            self.models[dev] = np.linalg.solve(a, z.T @ ly)
        return self

    def _proxy_log(self, onehot: np.ndarray) -> np.ndarray:
        w = self.models[self.proxy]
        return w[0] + onehot @ w[1:]

    def _adapt(self, archs: list[str], y: np.ndarray) -> np.ndarray:
        oh = feat.onehot(self.space, archs)
        scores = {}
        for dev in sorted(self.sources):
            lat = self.sources[dev]
            if all(a in lat for a in archs):
                proxy = np.array([lat[a] for a in archs])
            else:  # not measured there: rank by the source's model instead
                w = self.models[dev]
                proxy = w[0] + oh @ w[1:]
            scores[dev] = _spearman(proxy, y)
        self.proxy = max(sorted(scores), key=lambda d: scores[d])
        self.proxy_spearman = scores[self.proxy]
        z = np.column_stack([np.ones(len(y)), self._proxy_log(oh), oh])
        ly = np.log(y)
        best = None
        for lam in ADAPROXY_LAMBDAS:
            penalty = np.r_[0.0, 0.0, np.full(oh.shape[1], lam)]
            w, loo = _ridge(z, ly, penalty)
            if best is None or _rms(loo) < _rms(best[2]) - 1e-12:
                best = (lam, w, loo)
        self.lam, self.w, loo = best
        return loo

    def _mean_log(self, archs: list[str]) -> np.ndarray:
        oh = feat.onehot(self.space, archs)
        return self.w[0] + self.w[1] * self._proxy_log(oh) + oh @ self.w[2:]


class Help(Predictor):
    """HELP's setting, meta-learned as a Bayesian low-rank model with a mixture prior.

    HELP describes a device by its latencies on a few architectures (its hardware embedding)
    and meta-trains, across source devices, a predictor that such an embedding adapts. Here the
    meta-training is an SVD of the sources' centred log latencies: every arch gets factors Z
    (the architecture encoder, learned from how the sources disagree about it) and every
    source device a coefficient vector. An unseen device's coefficients get a mixture prior,
    one Gaussian per source centred on that source's coefficients, with the sources' spread
    (times 1/lambda) as covariance: a new board tends to resemble some known board more than
    the average of them (a GPU at another batch size, a phone of the same generation). The k
    target samples -- HELP's 10 reference archs, or any others -- weigh the components by
    their marginal likelihood (noise variance integrated out) and give each a closed-form
    posterior; the prediction is their weighted mean. Architecture features (op counts,
    connectivity, dead-branch ops, MACs) are extra regressors with a ridge penalty, for what no
    source shows (e.g. TFLite folding disconnected cells). lambda is chosen by leave-one-out
    on the samples.

    This is not HELP's MAML-trained MLP; it needs no deep-learning framework, adapts in
    closed form, and gives a posterior variance per arch (wider far from the samples), which
    is what active sampling needs.
    """

    name = "help"
    LAMBDAS = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
    FEATURE_PENALTY = 3.0

    def fit(self, sources: Mapping[str, Mapping[str, float]]) -> Predictor:
        super().fit(sources)
        devices = sorted(self.sources)
        if len(devices) < 2:
            raise UserError("help: needs at least 2 source devices")
        common = set.intersection(*(set(lat) for lat in self.sources.values()))
        self.archs = sorted(common)
        if len(self.archs) < 2 * len(devices):
            raise UserError(
                f"help: the {len(devices)} sources share only {len(self.archs)} archs; give "
                "sources measured on the same architectures (or fewer of them)"
            )
        self.row = {a: i for i, a in enumerate(self.archs)}
        y = np.log(np.array([[self.sources[d][a] for d in devices] for a in self.archs]))
        offsets = y.mean(axis=0)
        u, sv, vt = np.linalg.svd(y - offsets, full_matrices=False)
        rank = len(devices) - 1  # centring removes one dimension
        n = len(devices)
        self.z = u[:, :rank] * sv[:rank] / math.sqrt(n)
        coef = vt[:rank].T * math.sqrt(n)  # one row per source device
        self.prior_precision = np.linalg.inv(np.cov(coef.T).reshape(rank, rank)
                                             + 1e-6 * np.eye(rank))  # fmt: skip
        f = self._features(self.archs)
        self.f_mu, sd = f.mean(axis=0), f.std(axis=0)
        self.f_sd = np.where(sd > 0, sd, 1.0)
        # component means over (intercept, factors, features): each source as it is
        self.means = np.column_stack([offsets, coef, np.zeros((n, f.shape[1]))])
        return self

    def _penalty(self, lam: float) -> np.ndarray:
        d, rank = self.means.shape[1], self.z.shape[1]
        p = np.zeros((d, d))
        p[0, 0] = 1e-6  # the intercept is all but free
        p[1 : rank + 1, 1 : rank + 1] = lam * self.prior_precision
        p[rank + 1 :, rank + 1 :] = self.FEATURE_PENALTY * np.eye(d - 1 - rank)
        return p

    def _posterior(
        self, x: np.ndarray, ly: np.ndarray, penalty: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(the mixture's posterior mean weights, A = X'X + penalty). Each component j has
        posterior mean m_j + A^-1 X'(y - X m_j) and marginal likelihood proportional to
        (r_j' C^-1 r_j)^(-k/2), r_j = y - X m_j, C = I + X penalty^-1 X' (Jeffreys prior on the
        noise variance; |C| is the same for every component)."""
        a = x.T @ x + penalty
        r = ly[None, :] - self.means @ x.T
        c = np.eye(len(ly)) + x @ np.linalg.solve(penalty, x.T)
        quad = np.einsum("jk,kj->j", r, np.linalg.solve(c, r.T))
        logw = -0.5 * len(ly) * np.log(np.maximum(quad, 1e-300))
        weights = np.exp(logw - logw.max())
        weights /= weights.sum()
        post = self.means + np.linalg.solve(a, x.T @ r.T).T
        return weights @ post, a

    def _adapt(self, archs: list[str], y: np.ndarray) -> np.ndarray:
        x, ly = self._x(archs), np.log(y)
        best = None
        for lam in self.LAMBDAS:
            penalty = self._penalty(lam)
            loo = np.empty(len(ly))
            for i in range(len(ly)):  # k is small: refit per left-out sample
                keep = np.arange(len(ly)) != i
                w, _ = self._posterior(x[keep], ly[keep], penalty)
                loo[i] = ly[i] - x[i] @ w
            if best is None or _rms(loo) < _rms(best[1]) - 1e-12:
                best = (lam, loo)
        self.lam, loo = best
        self.w, self.a = self._posterior(x, ly, self._penalty(self.lam))
        return loo

    def _features(self, archs: list[str]) -> np.ndarray:
        x = feat.features(self.space, archs)
        return x[:, 30:] if self.space == "nb201" else x[:, fbnet.N_LAYERS * len(fbnet.BLOCKS) :]

    def _x(self, archs: list[str]) -> np.ndarray:
        missing = [a for a in archs if a not in self.row]
        if missing:
            raise UserError(
                f"help: arch {missing[0]} is not measured on every source ({len(missing)} "
                "archs are not); help works on the archs all sources share"
            )
        rows = [self.row[a] for a in archs]
        f = (self._features(archs) - self.f_mu) / self.f_sd
        return np.column_stack([np.ones(len(rows)), self.z[rows], f])

    def _mean_log(self, archs: list[str]) -> np.ndarray:
        return self._x(archs) @ self.w

    def spread(self, archs: Sequence[str]) -> np.ndarray:
        """x' A^-1 x per arch: how much the posterior is unsure there, in units of the noise
        variance (0 at a perfectly pinned arch). Measuring the arch with the largest value
        shrinks the intervals most."""
        x = self._x(list(archs))
        return np.einsum("ij,ji->i", x, np.linalg.solve(self.a, x.T))

    def suggest(self, candidates: Sequence[str], n: int) -> list[str]:
        """The n candidates to measure next (active sampling): greedily the arch where the
        posterior is least sure, each pick counted as measured before the next (a rank-1
        update), so the picks spread over what the samples leave unknown."""
        if self.loo is None:
            raise UserError("help: adapt() with target samples before suggest()")
        x = self._x(list(candidates))
        a_inv = np.linalg.inv(self.a)
        picked: list[int] = []
        for _ in range(min(n, len(x))):
            v = np.einsum("ij,ji->i", x, a_inv @ x.T)
            v[picked] = -np.inf
            i = int(np.argmax(v))
            picked.append(i)
            u = a_inv @ x[i]
            a_inv -= np.outer(u, u) / (1.0 + x[i] @ u)
        return [candidates[i] for i in picked]

    def predict(self, archs: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.loo is None:
            raise UserError(f"{self.name}: adapt() with target samples before predict()")
        m = self._mean_log(list(archs))
        s = Z90 * self.loo_rmse * np.sqrt(1.0 + self.spread(archs))
        return np.exp(m), np.exp(m - s), np.exp(m + s)


class Lut(Predictor):
    name = "lut"

    def __init__(self, space: str, seed: int = 0, table: Mapping[str, float] | None = None):
        super().__init__(space, seed)
        lut.check_space(space)
        if not table:
            raise UserError(
                "method lut needs the target's per-layer table: --lut DATASET, the single-block "
                f"models of `halo-coord zoo lut --space {space}` measured on the target"
            )
        self.dataset = lut.covered_dataset(space, table)
        self.entries = lut.entry_matrix(space, self.dataset, table)

    def sums(self, archs: Sequence[str]) -> np.ndarray:
        try:
            return lut.layer_sums(self.entries, self.space, archs)
        except ArchError as exc:
            raise UserError(str(exc)) from None

    def _adapt(self, archs: list[str], y: np.ndarray) -> np.ndarray:
        s = self.sums(archs)
        self.floor = 1e-3 * float(np.min(y))
        ly = np.log(y)
        best = None
        for scaled in (False, True):
            loo = np.empty(len(y))
            for i in range(len(y)):  # k is small: refit per left-out sample
                keep = np.arange(len(y)) != i
                w = self._fit(s[keep], y[keep], scaled)
                loo[i] = ly[i] - math.log(max(float(self._line(w, s[i])), self.floor))
            if best is None or _rms(loo) < _rms(best[1]) - 1e-12:
                best = (self._fit(s, y, scaled), loo)
        self.w, loo = best
        return loo

    @staticmethod
    def _fit(s: np.ndarray, y: np.ndarray, scaled: bool) -> np.ndarray:
        """(c,) of y = s + c, or (c, a) of y = c + a*s, by least squares."""
        if not scaled:
            return np.array([float(np.mean(y - s))])
        w, *_ = np.linalg.lstsq(np.column_stack([np.ones_like(s), s]), y, rcond=None)
        return w

    @staticmethod
    def _line(w: np.ndarray, s: np.ndarray) -> np.ndarray:
        return w[0] + (s if len(w) == 1 else w[1] * s)

    def _mean_log(self, archs: list[str]) -> np.ndarray:
        return np.log(np.maximum(self._line(self.w, self.sums(archs)), self.floor))


class Auto(Predictor):
    """An ensemble: the log-latency predictions of help, nnls and flops (and lut when a
    per-layer table is given), weighted by the inverse of each one's leave-one-out MSE on the
    samples.

    help and nnls are the best single methods across boards but err differently (help through
    its low-rank factors and features, nnls through a non-negative mix of whole source
    columns), so their mean ranks better than either. flops joins them for the boards no
    source resembles, where latency simply follows MACs (phones running fbnet: MACs rank
    0.95 on pixel3 where help and nnls reach 0.88); on the GPUs, where MACs rank poorly, its
    leave-one-out error keeps its weight small. Over leave-one-device-out on HELP's tables at
    k = 10 (benchmarks/predictors.py) the three-way mean gains over the best member on
    average and most on the boards where single methods fail. When none of the members can
    run, the candidate with the smallest leave-one-out error among the others stands in."""

    name = "auto"
    MEMBERS = ("help", "nnls", "flops", "lut")
    FALLBACKS = ("ridge", "adaproxy")

    def __init__(self, space: str, seed: int = 0, table: Mapping[str, float] | None = None):
        super().__init__(space, seed)
        self.table = table

    def fit(self, sources: Mapping[str, Mapping[str, float]]) -> Predictor:
        super().fit(sources)
        self.fitted: dict[str, Predictor] = {}
        for m in (*self.MEMBERS, *self.FALLBACKS):
            if m == "lut" and not self.table:
                continue
            try:
                self.fitted[m] = make(m, self.space, self.seed, self.table).fit(self.sources)
            except UserError:
                continue
        return self

    def _adapt(self, archs: list[str], y: np.ndarray) -> np.ndarray:
        samples = dict(zip(archs, y, strict=True))
        self.scores: dict[str, float] = {}
        for m, p in self.fitted.items():
            try:
                p.adapt(samples)
            except UserError:
                continue
            self.scores[m] = p.loo_rmse
        members = [m for m in self.MEMBERS if m in self.scores]
        if not members:
            if not self.scores:
                raise UserError("auto: no method could be adapted to the target samples")
            members = [min(self.scores, key=lambda m: (self.scores[m], m))]
        mse = np.array([max(self.scores[m] ** 2, 1e-12) for m in members])
        self.weights = dict(zip(members, (1.0 / mse) / np.sum(1.0 / mse), strict=True))
        self.chosen = "+".join(members)
        return sum(w * self.fitted[m].loo for m, w in self.weights.items())

    def _mean_log(self, archs: list[str]) -> np.ndarray:
        return sum(w * self.fitted[m]._mean_log(archs) for m, w in self.weights.items())


METHODS: dict[str, type[Predictor]] = {
    "auto": Auto,
    "help": Help,
    "ridge": Ridge,
    "nnls": Nnls,
    "adaproxy": AdaProxy,
    "flops": Flops,
    "lut": Lut,
}


def make(
    method: str, space: str, seed: int = 0, table: Mapping[str, float] | None = None
) -> Predictor:
    """`table`: the target's per-layer lookup table (op arch -> ms), for lut and auto."""
    if method not in METHODS:
        raise UserError(f"--method: unknown method {method!r} (methods: {'|'.join(ALL_METHODS)})")
    if method in ("lut", "auto"):
        return METHODS[method](space, seed, table)
    return METHODS[method](space, seed)
