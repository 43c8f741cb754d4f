"""The ES ClientApp: decode each message, ask the ES (``clients.edge_server``), encode the reply.

QUERY ``public-facts``: the ES's public facts (workload, uplink gain). QUERY ``offer``: the
item of the period's menu the ES takes, or a decline. TRAIN: the trained adapter and the
allow-listed metrics. The willingness type never leaves the ES.

The Flower record wrapping is done here and in ``strategies/records.py`` on the server; the
payloads and their keys are the framework-free codecs of ``fed_agent.protocol``, so neither app
imports the other.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.edge_server import EdgeServer
from fed_agent.config import config_from_run_config
from fed_agent.protocol import (
    ARRAYS,
    CONFIG,
    ITEM,
    METRICS,
    OFFER,
    PHASE,
    PHASES,
    PUBLIC_FACTS,
    Offer,
    ProtocolError,
    TrainInstruction,
)

app = ClientApp()


def _edge_server(context: Context) -> EdgeServer:
    return EdgeServer.from_node_config(
        config_from_run_config(context.run_config), context.node_config
    )


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Report the public facts or answer a contract offer."""
    es = _edge_server(context)
    values = dict(msg.content[CONFIG])
    phase = values.get(PHASE)
    if phase == PUBLIC_FACTS:
        return Message(RecordDict({PUBLIC_FACTS: ConfigRecord(es.facts.to_dict())}), reply_to=msg)
    if phase == OFFER:
        item = es.answer_offer(Offer.from_dict(values))
        return Message(RecordDict({METRICS: MetricRecord({ITEM: item})}), reply_to=msg)
    raise ProtocolError(f"unknown query phase {phase!r}; valid choices: {list(PHASES)}")


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received agent module for the instructed step budget."""
    es = _edge_server(context)
    received = {k: array.numpy() for k, array in msg.content[ARRAYS].items()}
    adapter, reply = es.train(TrainInstruction.from_dict(msg.content[CONFIG]), received)
    arrays = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in adapter.items()})
    content = RecordDict({ARRAYS: arrays, METRICS: MetricRecord(reply.to_dict())})
    return Message(content, reply_to=msg)
