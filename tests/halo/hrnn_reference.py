"""A slow reference of ONE step of HALO's hierarchical RNN optimizer, written element by element
from the equations of reference/halo.md §2.3 (plain Python floats and ``math``), to check the
vectorised ``halo.optim.hrnn`` against. Nothing here is shared with the implementation except
the names of the meta-parameters."""

from __future__ import annotations

import math
from typing import Dict, List

import numpy as np


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def as_lists(meta: Dict[str, np.ndarray]) -> Dict[str, list]:
    """Meta-parameters of one optimizer (population axis dropped) as nested Python lists."""
    return {k: np.asarray(v)[0].tolist() for k, v in meta.items()}


def affine(w: List[List[float]], b: List[float], v: List[float]) -> List[float]:
    """out_k = b_k + sum_i v_i w[i][k]."""
    return [b[k] + sum(v[i] * w[i][k] for i in range(len(v))) for k in range(len(b))]


def gru(meta, prefix: str, x: List[float], h: List[float], injected: List[float]) -> List[float]:
    """r = σ(W_r[x,h] + c_r + b_r); u = σ(W_u[x,h] + c_u + b_u);
    c̃ = tanh(W_c[x, r⊙h] + c_c + b_c); h' = u⊙h + (1−u)⊙c̃."""
    w_ru, w_c = meta[prefix + "/W_ru"], meta[prefix + "/W_c"]
    b_ru, b_c = meta[prefix + "/b_ru"], meta[prefix + "/b_c"]
    n_in, n_h = len(x), len(h)
    xh = x + h
    r, u = [], []
    for k in range(n_h):
        pre_r = sum(xh[i] * w_ru[i][k] for i in range(n_in + n_h)) + b_ru[k] + injected[k]
        pre_u = sum(xh[i] * w_ru[i][n_h + k] for i in range(n_in + n_h))
        pre_u += b_ru[n_h + k] + injected[n_h + k]
        r.append(sigmoid(pre_r))
        u.append(sigmoid(pre_u))
    xrh = x + [r[i] * h[i] for i in range(n_h)]
    out = []
    for k in range(n_h):
        pre_c = sum(xrh[i] * w_c[i][k] for i in range(n_in + n_h)) + b_c[k] + injected[2 * n_h + k]
        out.append(u[k] * h[k] + (1.0 - u[k]) * math.tanh(pre_c))
    return out


def reference_step(
    meta, params, grads, state, mask, num_scales=4, global_input="last", max_log_lr=33.0
):
    """One step. ``params``/``grads``: list of flat lists per tensor; ``state``: dict with
    ``tensors`` (per tensor: h0 [N][H0], gbar [N][S], ms [N][S], beta [N], gamma [N], ll [N],
    h1 [H1]) and ``h2`` [H2]; ``mask``: one bool per tensor. Returns new (params, state)."""
    S = num_scales
    all_ll = [v for ts in state["tensors"] for v in ts["ll"]]
    mean_ll = sum(all_ll) / len(all_ll)  # eq. 7: over all coordinates of all tensors
    h2 = state["h2"]
    new_params, new_tensors = [], []
    for j, (theta, g, ts) in enumerate(zip(params, grads, state["tensors"])):
        if not mask[j]:
            new_params.append(list(theta))
            new_tensors.append(ts)
            continue
        n = len(theta)
        # Step 1-3: decays, gradient EMAs, mean squares (gamma treated as 0 when lambda_s is all 0).
        first = [all(ts["ms"][i][s] == 0.0 for i in range(n)) for s in range(S)]
        gbar = [[0.0] * S for _ in range(n)]
        lam = [[0.0] * S for _ in range(n)]
        x = []
        for i in range(n):
            beta0 = ts["beta"][i]
            for s in range(S):
                beta_s = beta0 ** (2.0 ** (-s))
                gbar[i][s] = (1.0 - beta_s) * g[i] + beta_s * ts["gbar"][i][s]
                gam = 0.0 if first[s] else ts["gamma"][i]
                lam[i][s] = (1.0 - gam) * (gbar[i][s] ** 2 + 1e-12) + gam * ts["ms"][i][s]
            # Step 4-5: the 12 features.
            m = [math.asinh(gbar[i][s] / math.sqrt(lam[i][s] + 1e-16)) for s in range(S)]
            logs = [math.log(lam[i][s] + 1e-16) for s in range(S)]
            mean_logs = sum(logs) / S
            feats = m + [m[s] * m[s + 1] for s in range(S - 1)]
            feats += [lv - mean_logs for lv in logs]
            feats.append(ts["ll"][i] - mean_ll)
            x.append(feats)
        # Step 6: per-parameter GRU with bias injected from the tensor and global states.
        b_t = affine(meta["bias0_tensor/W"], meta["bias0_tensor/b"], ts["h1"])
        b_g = affine(meta["bias0_global/W"], meta["bias0_global/b"], h2)
        inj = [a + b for a, b in zip(b_t, b_g)]
        h0 = [gru(meta, "gru0", x[i], ts["h0"][i], inj) for i in range(n)]
        # Step 7: per-tensor GRU on the mean of [h0', x].
        width = len(h0[0]) + len(x[0])
        pooled = [sum((h0[i] + x[i])[k] for i in range(n)) / n for k in range(width)]
        inj1 = affine(meta["bias1_global/W"], meta["bias1_global/b"], h2)
        h1 = gru(meta, "gru1", pooled, ts["h1"], inj1)
        # Step 8: readouts.
        w_u, w_g = meta["readout/w_update"], meta["readout/w_shortcut"]
        d = [
            sum(h0[i][k] * w_u[k] for k in range(len(w_u)))
            + sum(x[i][s] * w_g[s] for s in range(S))
            for i in range(n)
        ]
        rms = math.sqrt(sum(v * v for v in d) / n + 1e-16)
        d = [v / rms for v in d]

        def proj(name, h):
            w = meta["readout/w_" + name]
            return sum(h[k] * w[k] for k in range(len(w))) + meta["readout/b_" + name][0]

        mu = sigmoid(meta["scalar/lr_momentum_logit"][0])
        c_off = meta["scalar/step_offset"][0]
        new_theta, gamma, beta, ll = [], [], [], []
        for i in range(n):
            gamma.append(sigmoid(proj("scl_decay", h0[i])))
            beta.append(sigmoid(proj("inp_decay", h0[i])))
            step_ll = min(max(ts["ll"][i] + proj("lr", h0[i]), -33.0), max_log_lr)
            ll.append(mu * ts["ll"][i] + (1.0 - mu) * step_ll)
            new_theta.append(theta[i] - math.exp(step_ll + c_off) * d[i])
        new_params.append(new_theta)
        new_tensors.append(
            {"h0": h0, "gbar": gbar, "ms": lam, "beta": beta, "gamma": gamma, "ll": ll, "h1": h1}
        )
    # Step 9: global GRU after all tensors, no injected bias.
    h1s = [ts["h1"] for ts in new_tensors]
    if global_input == "last":
        g_in = h1s[-1]
    else:
        g_in = [sum(h[k] for h in h1s) / len(h1s) for k in range(len(h1s[0]))]
    new_h2 = gru(meta, "gru2", g_in, h2, [0.0] * (3 * len(h2)))
    return new_params, {"tensors": new_tensors, "h2": new_h2}


def state_to_lists(state) -> dict:
    """The vectorised ``HRNNState`` (population 1) in the reference's layout."""
    tensors = []
    for ts in state.tensors:
        tensors.append(
            {
                "h0": ts.h0[0].tolist(),
                "gbar": np.stack(ts.gbar, axis=-1)[0].tolist(),
                "ms": np.stack(ts.ms, axis=-1)[0].tolist(),
                "beta": ts.inp_decay[0].tolist(),
                "gamma": ts.scl_decay[0].tolist(),
                "ll": ts.log_lr[0].tolist(),
                "h1": ts.h1[0].tolist(),
            }
        )
    return {"tensors": tensors, "h2": state.h2[0].tolist()}
