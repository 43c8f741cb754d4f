"""The ServerApp's Flower record wrapping of an adapter.

The payloads and their keys are the framework-free codecs of ``fed_agent.protocol``; the
ClientApp wraps its adapter itself (``clients/client_app.py``), so neither app imports the
other.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord

from fed_agent.protocol import AdapterState


def adapter_to_record(state: Mapping[str, np.ndarray]) -> ArrayRecord:
    """Adapter state -> ArrayRecord (key order kept)."""
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in state.items()})


def record_to_adapter(record: ArrayRecord) -> AdapterState:
    """ArrayRecord -> adapter state."""
    return {k: array.numpy() for k, array in record.items()}
