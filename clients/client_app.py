"""The ES ClientApp: decode each message, ask the ES (``clients.edge_server``), encode the reply.

QUERY ``public-facts``: the ES's public facts (workload, uplink gain). QUERY ``offer``: the
item of the period's menu the ES takes, or a decline. TRAIN, one of (``protocol.train_request``):
an instruction (the item was chosen before), an offer to train (the ES picks its item and
trains in the same message; a decline replies without arrays), or a plain TRAIN message
without contract keys, as Flower's own strategies send (``training.local_steps``, unknown
config keys logged). EVALUATE: the received module's quality on the ES's local split. The
willingness type never leaves the ES.

Queries never import the torch stack: in a deployment each message is a fresh process.

The Flower record wrapping is done here and in ``strategies/records.py`` on the server; the
payloads and their keys are the framework-free codecs of ``fed_agent.protocol``, so neither app
imports the other.
"""

from __future__ import annotations

import logging

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from clients.edge_server import EdgeServer
from clients.warm_trainer import TrainerUnavailable, train_remotely
from fed_agent.config import config_from_run_config
from fed_agent.console import show_project_logs
from fed_agent.es_keys import IdentityKeyError
from fed_agent.protocol import (
    ARRAYS,
    CONFIG,
    DATA_DECLINE,
    IDENTITY_CHALLENGE,
    IDENTITY_KEY,
    ITEM,
    METRICS,
    OFFER,
    PHASE,
    PHASES,
    PUBLIC_FACTS,
    WARM_TRAINER,
    Offer,
    ProtocolError,
    train_request,
)

log = logging.getLogger(__name__)
app = ClientApp()
show_project_logs()


def _edge_server(context: Context) -> EdgeServer:
    return EdgeServer.from_node_config(
        config_from_run_config(context.run_config), context.node_config
    )


def _config(msg: Message) -> dict:
    """The message's config record (an empty one when it has none)."""
    return dict(msg.content[CONFIG]) if CONFIG in msg.content.config_records else {}


def _received_adapter(msg: Message) -> dict[str, np.ndarray]:
    if ARRAYS not in msg.content.array_records:
        raise ProtocolError(f"the message has no '{ARRAYS}' ArrayRecord")
    return {k: array.numpy() for k, array in msg.content[ARRAYS].items()}


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Report the public facts or answer a contract offer."""
    es = _edge_server(context)
    values = _config(msg)
    phase = values.get(PHASE)
    if phase == PUBLIC_FACTS and es.data_problem is not None:
        # an ES with unusable data takes no part; the reason (file and line, not the folder's
        # path) goes to the cloud, whose ledger records it; the ES never trains or is paid
        reason = f"{DATA_DECLINE}: {es.data_problem}"
        return Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason), reply_to=msg)
    if phase == PUBLIC_FACTS:
        return _public_facts(es, str(values.get(IDENTITY_CHALLENGE, "")), msg)
    if phase == OFFER:
        item = es.answer_offer(Offer.from_dict(values))
        return Message(RecordDict({METRICS: MetricRecord({ITEM: item})}), reply_to=msg)
    raise ProtocolError(f"unknown query phase {phase!r}; valid choices: {list(PHASES)}")


def _public_facts(es: EdgeServer, challenge: str, msg: Message) -> Message:
    """The public-facts reply; an identity key the node config names but that cannot be used
    is a node config problem: one error line here, and an error reply whose reason (without
    the file's path) the cloud records once before it stops asking this node."""
    try:
        facts = es.public_facts(challenge)
    except IdentityKeyError as err:
        log.error("ES %d cannot prove its identity: node config %s", es.partition_id, err)
        reason = f"node config {IDENTITY_KEY}: {err.problem}"
        return Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason), reply_to=msg)
    return Message(RecordDict({PUBLIC_FACTS: ConfigRecord(facts)}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received agent module (see the module docstring for the three kinds); on a
    SuperNode with a warm trainer (``clients/warm_trainer.py``), there."""
    es = _edge_server(context)
    config = _config(msg)
    request = train_request(config)
    received = _received_adapter(msg)
    trainer = context.node_config.get(WARM_TRAINER)
    answer = None
    if trainer:
        try:
            answer = train_remotely(
                str(trainer), context.run_config, context.node_config, config, received
            )
        except TrainerUnavailable as err:
            log.warning("ES %d trains in this process: %s", es.partition_id, err)
    if answer is None:
        adapter, reply = es.respond(request, received)
        answer = (adapter, reply.to_dict())
    adapter, reply_dict = answer
    content = RecordDict({METRICS: MetricRecord(reply_dict)})
    if adapter is not None:
        content[ARRAYS] = ArrayRecord(
            {k: Array(np.ascontiguousarray(v)) for k, v in adapter.items()}
        )
    return Message(content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """The received module's quality on this ES's local split."""
    es = _edge_server(context)
    metrics = es.evaluate(_received_adapter(msg))
    return Message(RecordDict({METRICS: MetricRecord(metrics)}), reply_to=msg)
