"""Fits the float erf of the CPU GELU kernels (csrc/cpu/gelu.h) and prints its constants.

    python scripts/fit_erf.py

erf(x) ~ x P(x^2) / Q(x^2) on 0 < x <= 4 (P of degree 6, Q of degree 5 with Q(0) = 1), for the
smallest largest relative error: the rational fit is made linear (Sanathanan-Koerner: divide by
the previous iterate's Q) and pushed towards minimax by Lawson's reweighting. Then the constants
are rounded to float and the approximation evaluated as the kernel does (float Horner steps with
fused multiply-adds, clamp at |x| = 4) against float64 erf. Needs scipy.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf

P_TERMS, Q_TERMS = 7, 6


def fit(iterations: int = 200) -> tuple[np.ndarray, np.ndarray, float]:
    x = np.unique(np.concatenate([np.linspace(0, 4, 20001)[1:], 4 - 4 * np.cos(np.linspace(0, np.pi / 2, 5000)) ** 2]))
    x = x[x > 0]
    f, t = erf(x), x * x
    q_previous, weight = np.ones_like(x), np.ones_like(x)
    for i in range(iterations):
        # x P(t) - f (Q(t) - 1) = f, scaled to relative error and by the previous Q
        columns = np.concatenate([x[:, None] * t[:, None] ** np.arange(P_TERMS),
                                  -f[:, None] * t[:, None] ** np.arange(1, Q_TERMS)], axis=1)
        scale = np.sqrt(weight) / (q_previous * f)
        solution, *_ = np.linalg.lstsq(columns * scale[:, None], f * scale, rcond=None)
        p, q = solution[:P_TERMS], np.concatenate([[1.0], solution[P_TERMS:]])
        q_previous = np.abs(np.polyval(q[::-1], t))
        error = np.abs(x * np.polyval(p[::-1], t) / q_previous / f - 1)
        if i >= 10:
            weight = weight * (error / error.max() + 1e-3)
            weight /= weight.mean()
    return p, q, float(error.max())


def horner_float(coefficients: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Horner in float with exact fused multiply-adds (a float64 product of floats is exact)."""
    acc = np.full_like(t, coefficients[-1])
    for a in coefficients[-2::-1]:
        acc = (acc.astype(np.float64) * t + np.float64(a)).astype(np.float32)
    return acc


def main() -> None:
    p, q, relative = fit()
    p32, q32 = p.astype(np.float32), q.astype(np.float32)
    x = np.linspace(-6, 6, 2_000_001).astype(np.float32)
    c = np.clip(x, np.float32(-4), np.float32(4))
    t = c * c
    approx = (c * horner_float(p32, t)) / horner_float(q32, t)
    error = np.abs(approx.astype(np.float64) - erf(x.astype(np.float64)))
    print(f"fit: largest relative error {relative:.2e} (float64 arithmetic)")
    print(f"float kernel: largest |error| {error.max():.2e} at x = {x[np.argmax(error)]:.4f}")
    print("P, highest degree first:", ", ".join(f"{v:.9e}f" for v in p32[::-1]))
    print("Q, highest degree first:", ", ".join(f"{v:.9e}f" for v in q32[::-1]))


if __name__ == "__main__":
    main()
