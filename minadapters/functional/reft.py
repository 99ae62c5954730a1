"""ReFT equations: the intervention unit, torch's orthogonal parametrization, intervention positions.

Spec: REFT-1 (unit), REFT-2 (orthogonal map), REFT-3 (positions), REFT-4 (gather/scatter).
All functions are pure NumPy.
"""
from __future__ import annotations

import numpy as np

from .activations import activation_backward, get_activation
from .linalg import mm

from ..errors import ShapeError


def reft_unit(h, W, b, R, act, subtract_projection: bool):
    """Φ(h) = h + (act(h Wᵀ + b) − [subtract]·h Rᵀ) R. Spec: REFT-1.

        h: (B, P, D), W: (r, D), b: (r,), R: (r, D) -> (B, P, D)"""
    s = act(mm(h, W.T) + b)
    if subtract_projection:
        s = s - mm(h, R.T)
    return h + mm(s, R)


# ---- orthogonal parametrization (torch.nn.utils.parametrizations.orthogonal, use_trivialization=True) --------

def householder_product(A, tau):
    """First k columns of H_0 H_1 … H_{k-1}, H_i = I − τ_i v_i v_iᵀ, v_i = (0…0, 1, A[i+1:, i]). Spec: REFT-2.

    Same contract as LAPACK orgqr / torch.linalg.householder_product.  A: (n, k), tau: (k,) -> (n, k)"""
    n, k = A.shape
    M = np.eye(n, k, dtype=np.float64)
    for i in range(k - 1, -1, -1):
        v = np.zeros(n, np.float64)
        v[i] = 1.0
        v[i + 1:] = A[i + 1:, i]
        M = M - tau[i] * np.outer(v, v @ M)
    return M


def expm_skew(A):
    """exp(A) for a real skew-symmetric A, via the eigen-decomposition of the Hermitian −iA. Spec: REFT-2."""
    lam, V = np.linalg.eigh(-1j * A)
    return ((V * np.exp(1j * lam)) @ V.conj().T).real


def orthogonal_weight(original, base):
    """The weight torch's orthogonal parametrization materialises from ``original`` and ``base``. Spec: REFT-2.

    original: (r, D) ("parametrizations.weight.original"), base: (max(r,D),)*2 ("parametrizations.weight.0.base").
    Computed in float64, returned in original's dtype."""
    X = np.asarray(original, np.float64)
    if X.ndim != 2:
        raise ShapeError(f"orthogonal parametrization: 'original' must be a matrix; got shape {X.shape}.")
    transposed = X.shape[0] < X.shape[1]
    if transposed:
        X = X.T
    n, k = X.shape
    if base.shape != (n, n):
        raise ShapeError(f"orthogonal parametrization: 'base' has shape {tuple(base.shape)}; 'original' of shape "
                         f"{tuple(original.shape)} needs ({n}, {n}).")
    if n == k:   # square: torch's default map is the matrix exponential of the skew part of tril(X)
        L = np.tril(X)
        Q = expm_skew(L - L.T)
    else:        # tall: Householder reflectors below the diagonal, τ making each an exact reflector
        A = np.tril(X, -1)
        tau = 2.0 / (1.0 + (A * A).sum(axis=0))
        Q = householder_product(A, tau)
        Q = Q * np.trunc(np.diagonal(X))[None, :]     # torch: X.diagonal().int() (truncation toward zero)
    Q = np.asarray(base, np.float64) @ Q
    if transposed:
        Q = Q.T
    return Q.astype(np.asarray(original).dtype)


def make_orthogonal(M):
    """Q of M = QR with diag(R) ≥ 0 (torch's _make_orthogonal). M: (n, n)."""
    Q, Rm = np.linalg.qr(M)
    sign = np.sign(np.diagonal(Rm))
    sign[sign == 0] = 1.0
    return Q * sign[None, :]


def orthogonal_init(weight, rng):
    """(original, base) as torch's right_inverse stores them for a fresh parametrized weight. Spec: REFT-2.

    original = −I (shaped like the weight); base = an orthogonal completion of the weight's rows, so that
    orthogonal_weight(original, base) = the orthonormalised weight (rows orthonormal for r ≤ D)."""
    W = np.asarray(weight, np.float64)
    r, D = W.shape
    Qt = W.T if r < D else W                       # tall or square (n, k)
    n, k = Qt.shape
    if n == k:
        base = make_orthogonal(Qt)
    else:
        base = make_orthogonal(np.concatenate([Qt, rng.standard_normal((n, n - k))], axis=1))
    original = np.zeros((r, D), np.float64)
    np.fill_diagonal(original, -1.0)
    return original.astype(weight.dtype), base.astype(weight.dtype)


# ---- positions -------------------------------------------------------------------------------------

def reft_positions(mask, B: int, T: int, prefix: int, suffix: int):
    """Row-wise gather indices (pref (B, p'), suff (B, s')) with p' = min(p, T), s' = min(s, T). Spec: REFT-3.

    mask: (B, T0) 0/1 as passed to the model, or None (offset 0, length T). Indices outside [0, T) raise
    (torch's gather raises too)."""
    if mask is None:
        offset = np.zeros(B, np.int64)
        end = np.full(B, T, np.int64)
    else:
        mask = np.asarray(mask)
        if mask.ndim != 2 or mask.shape[0] != B:
            raise ShapeError(f"ReFT: attention_mask of shape {mask.shape} does not fit hidden states with {B} rows.")
        offset = np.argmax(mask, axis=1).astype(np.int64)
        end = offset + (mask == 1).sum(axis=1)
    pref = offset[:, None] + np.arange(min(prefix, T))[None, :]
    suff = end[:, None] + np.arange(-min(suffix, T), 0)[None, :]
    for what, idx in (("prefix", pref), ("suffix", suff)):
        if idx.size and (idx.min() < 0 or idx.max() >= T):
            row = int(np.nonzero((idx < 0).any(1) | (idx >= T).any(1))[0][0])
            raise ShapeError(f"ReFT: {what} positions of batch row {row} fall outside the sequence "
                             f"(indices {idx[row].tolist()}, sequence length {T}; offset {int(offset[row])}, "
                             f"{int(end[row] - offset[row])} unpadded tokens). Use fewer prefix_positions/"
                             "suffix_positions or longer inputs.")
    return pref, suff


def gather_rows(x, idx):
    """x[b, idx[b, j]]  (B, T, D), (B, P) -> (B, P, D)."""
    return np.take_along_axis(x, idx[:, :, None], axis=1)


def scatter_rows(x, idx, src):
    """Copy of x with x[b, idx[b, j]] = src[b, j] (later j wins on repeated indices, like torch on CPU)."""
    out = x.copy()
    rows = np.broadcast_to(np.arange(x.shape[0])[:, None], idx.shape)
    out[rows, idx] = src
    return out


# ---- backward (training). Spec: GRAD-REFT (spec/training.md) -----------------------------------------------------
def reft_unit_backward(dout, h, W, b, R, act_name, subtract_projection: bool):
    """Gradients of Φ(h) = h + (act(h Wᵀ + b) − [subtract]·h Rᵀ) R (REFT-1). Spec: GRAD-REFT.

        s = act(z) − [sub] h Rᵀ;   ds = dout Rᵀ;   dR = sᵀ dout − [sub] dsᵀ h
        dz = act'(z) ⊙ ds;   dW = dzᵀ h;   db = Σ dz;   dh = dout + dz W − [sub] ds R
    -> dh (B, P, D), dW (r, D), db (r,), dR (r, D)"""
    z = mm(h, W.T) + b
    s = get_activation(act_name)(z)
    if subtract_projection:
        s = s - mm(h, R.T)
    ds = mm(dout, R.T)                                                # (B, P, r)
    rows = lambda a: a.reshape(-1, a.shape[-1])  # noqa: E731
    dR = rows(s).T @ rows(dout)
    dz = activation_backward(act_name, z, ds)
    dh = dout + mm(dz, W)
    if subtract_projection:
        dR = dR - rows(ds).T @ rows(h)
        dh = dh - mm(ds, R)
    return dh, rows(dz).T @ rows(h), rows(dz).sum(0), dR


def gather_rows_backward(dg, idx, T):
    """Adjoint of gather_rows: dg (B, P, D) summed into a (B, T, D) zero array at idx. Spec: GRAD-REFT."""
    out = np.zeros((dg.shape[0], T, dg.shape[2]), dg.dtype)
    rows = np.broadcast_to(np.arange(dg.shape[0])[:, None], idx.shape)
    np.add.at(out, (rows, idx), dg)
    return out


def scatter_owner(B, T, writes):
    """Which write lands last at each position: ``writes`` a list of (B, n) index arrays applied in order; returns
    (owner (B, T) of write number or -1, slot (B, T) of the column inside that write). Spec: GRAD-REFT."""
    owner = np.full((B, T), -1, np.int64)
    slot = np.zeros((B, T), np.int64)
    for w, idx in enumerate(writes):
        for j in range(idx.shape[1]):
            owner[np.arange(B), idx[:, j]] = w
            slot[np.arange(B), idx[:, j]] = j
    return owner, slot


def orthogonal_weight_backward(dR, original, base):
    """Gradient of orthogonal_weight (REFT-2) with respect to ``original`` for r < D (torch's Householder map;
    ``base`` is a frozen buffer; the sign factor trunc(diag X) is a constant, as torch's ``.int()``). Spec: GRAD-REFT.

        R = (base · (M ⊙ sign))ᵀ,  M = H_0 ⋯ H_{k−1} I[:, :k],  H_i = I − τ_i v_i v_iᵀ,  τ_i = 2 / (1 + ‖A[i+1:, i]‖²)
    Each step M' = M − τ v wᵀ, w = Mᵀ v, run backwards: dM += v dwᵀ + dM'; dv = −τ dM' w + M dw; dτ = −vᵀ dM' w,
    dw = −τ dM'ᵀ v; then dA[j, i] = dv[j] − 4 dτ A[j, i] / (1 + s_i)² for j > i.  dR (r, D) -> d original (r, D)"""
    X = np.asarray(original, np.float64).T                           # (n, k) = (D, r), tall
    n, k = X.shape
    if n == k:
        raise ValueError("training: LoReFT with r == hidden size (the matrix-exponential map) has no backward in "
                         "minadapters yet; use r < hidden size.")
    A = np.tril(X, -1)
    s = (A * A).sum(axis=0)
    tau = 2.0 / (1.0 + s)
    Ms = [np.eye(n, k)]
    vs = {}
    for i in range(k - 1, -1, -1):                                    # forward, keeping every M
        v = np.zeros(n)
        v[i] = 1.0
        v[i + 1:] = A[i + 1:, i]
        vs[i] = v
        Ms.append(Ms[-1] - tau[i] * np.outer(v, v @ Ms[-1]))
    sign = np.trunc(np.diagonal(X))
    dQ2 = np.asarray(dR, np.float64).T                               # R = Q2ᵀ
    dM = (np.asarray(base, np.float64).T @ dQ2) * sign[None, :]       # Q2 = base (M ⊙ sign)
    dA = np.zeros_like(A)
    for step, i in enumerate(range(k)):                               # reverse order of the forward loop
        M_before = Ms[k - 1 - step]
        v = vs[i]
        w = M_before.T @ v
        dw = -tau[i] * (dM.T @ v)
        dv = -tau[i] * (dM @ w) + M_before @ dw
        dtau = -(v @ dM @ w)
        dM = dM + np.outer(v, dw)
        dA[i + 1:, i] += dv[i + 1:] - 4.0 * dtau * A[i + 1:, i] / (1.0 + s[i]) ** 2
    return dA.T.astype(np.asarray(original).dtype)
