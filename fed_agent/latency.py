"""Latency and energy of building an agent module on an edge server (numpy only).

The model of docs/contract-model.md: construction latency ``T = W / f + S / r``, energy cost
``c(f) = kappa * W * f**2`` and the Shannon uplink rate ``r = B log2(1 + p h / N0)``. Units are
fixed at this boundary: workload in Gcycles, computing resource in GHz (so ``W / f`` is in
seconds), module size in bytes (sent as ``8 * S`` bits), powers in dBm.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

BITS_PER_BYTE = 8.0


def dbm_to_watts(power_dbm: ArrayLike) -> np.ndarray:
    """Convert a power in dBm to watts: ``10 ** ((dBm - 30) / 10)``."""
    return np.power(10.0, (np.asarray(power_dbm, dtype=float) - 30.0) / 10.0)


def uplink_rate_bps(
    bandwidth_hz: float, tx_power_dbm: float, channel_gain: float, noise_dbm: float
) -> float:
    """Shannon uplink rate ``r = B log2(1 + p h / N0)`` in bit/s.

    ``noise_dbm`` is the total noise power over the band (not a density), so the
    signal-to-noise ratio is ``p h / N0`` with both powers in watts.
    """
    snr = dbm_to_watts(tx_power_dbm) * channel_gain / dbm_to_watts(noise_dbm)
    return float(bandwidth_hz * np.log2(1.0 + snr))


def upload_latency_s(module_bytes: float, rate_bps: float) -> float:
    """Seconds to send a module of ``module_bytes`` bytes at ``rate_bps``: ``8 S / r``."""
    return float(BITS_PER_BYTE * module_bytes / rate_bps)


def construction_latency_s(
    f_ghz: ArrayLike, workload_gcycles: float, upload_s: float
) -> np.ndarray:
    """Construction latency ``T(f) = W / f + S / r`` in seconds (element-wise in ``f_ghz``)."""
    return workload_gcycles / np.asarray(f_ghz, dtype=float) + upload_s


def construction_cost(f_ghz: ArrayLike, workload_gcycles: float, kappa: float) -> np.ndarray:
    """Energy cost ``c(f) = kappa * W * f**2`` of one period's construction (element-wise)."""
    f = np.asarray(f_ghz, dtype=float)
    return kappa * workload_gcycles * f * f


def frequency_for_cost(cost: ArrayLike, workload_gcycles: float, kappa: float) -> np.ndarray:
    """Inverse of :func:`construction_cost`: the computing resource ``f`` whose cost is ``cost``."""
    return np.sqrt(np.maximum(np.asarray(cost, dtype=float), 0.0) / (kappa * workload_gcycles))


def round_latency_s(latencies_s: ArrayLike) -> float:
    """Latency of a synchronous round: the slowest participant (0 when nobody takes part)."""
    values = np.asarray(latencies_s, dtype=float)
    return float(values.max()) if values.size else 0.0
