"""The ES ClientApp: report its public profile, answer contract offers, build agent modules.

QUERY ``profile``: the public facts (workload, uplink gain). QUERY ``offer``: the ES picks
the item of the period's menu that maximises its private utility, or declines. TRAIN: the ES
trains the received module for the instructed steps (proportional to the committed f) and
replies with the adapter and the allow-listed metrics. The willingness type never leaves it.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from flwr.app import ConfigRecord, Context, Message, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402

from clients.edge_server import es_profiles, local_examples  # noqa: E402
from fed_agent import latency  # noqa: E402
from fed_agent.contracts import DynamicContract  # noqa: E402
from fed_agent.incentives.decision import choose_item  # noqa: E402
from fed_agent.incentives.profiles import es_market, period_of_round  # noqa: E402
from fed_agent.modules.adapter import AdapterError, agent_module  # noqa: E402
from fed_agent.modules.training import train_locally  # noqa: E402
from fed_agent.protocol import (  # noqa: E402
    ARRAYS,
    CONFIG,
    DECLINE,
    ITEM,
    METRICS,
    OFFER,
    PHASE,
    PROFILE,
    Offer,
    ProtocolError,
    TrainInstruction,
    TrainReply,
)
from fed_agent.seeding import derive_seed  # noqa: E402
from strategies.records import (  # noqa: E402
    adapter_to_record,
    config_from_context,
    record_to_adapter,
    to_metric_record,
)

app = ClientApp()


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Answer a profile request or a contract offer."""
    cfg = config_from_context(context)
    _, public, private = es_profiles(cfg, context.node_config)
    values = dict(msg.content[CONFIG])
    phase = values.get(PHASE)
    if phase == PROFILE:
        return Message(RecordDict({PROFILE: ConfigRecord(public.to_dict())}), reply_to=msg)
    if phase != OFFER:
        raise ProtocolError(
            f"unknown query phase {phase!r}; valid choices: [{PROFILE!r}, {OFFER!r}]"
        )
    offer = Offer.from_dict(values)
    k = cfg.contract.num_types
    contract = DynamicContract(
        offer.f1, offer.r1, [offer.f2[i * k : (i + 1) * k] for i in range(k)],
        [offer.r2[i * k : (i + 1) * k] for i in range(k)],
    )  # fmt: skip
    module = agent_module(cfg.model, cfg.seed)
    market = es_market(cfg.contract, public, module.adapter_bytes, None)
    period_index, _ = period_of_round(offer.server_round, cfg.incentive.rounds_per_period)
    report = None if offer.report == DECLINE else offer.report
    choice = choose_item(
        contract, market, offer.period, private.type_at(market, period_index), report, offer.oracle
    )
    item = DECLINE if choice.item is None else choice.item
    return Message(RecordDict({METRICS: to_metric_record({ITEM: item})}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received agent module for the instructed step budget."""
    cfg = config_from_context(context)
    es, public, private = es_profiles(cfg, context.node_config)
    instruction = TrainInstruction.from_dict(msg.content[CONFIG])
    module = agent_module(cfg.model, cfg.seed)
    if module.base.fingerprint != instruction.base_fingerprint:
        raise AdapterError(
            f"ES {es.partition_id}: base model {module.base.fingerprint[:12]} differs from "
            f"the cloud's {instruction.base_fingerprint[:12]}; same model config and seed needed"
        )
    module.load_adapter(record_to_adapter(msg.content[ARRAYS]))
    examples = local_examples(cfg.data, cfg.seed, es, module.base.is_vision)
    seed = derive_seed(cfg.seed, "local-training", es.partition_id, instruction.server_round)
    report = train_locally(module, examples, cfg.training, instruction.local_steps, seed)
    market = es_market(cfg.contract, public, module.adapter_bytes, None)
    period_index, _ = period_of_round(instruction.server_round, cfg.incentive.rounds_per_period)
    theta = float(market.types[private.type_at(market, period_index)])
    cost = float(latency.energy_cost(instruction.f_ghz, market.workload_gcycles, market.kappa))
    modelled = float(
        latency.construction_latency_s(instruction.f_ghz, market.workload_gcycles, market.upload_s)
    )
    reply = TrainReply(len(examples), report.mean_loss, report.steps, report.wall_s, modelled,
                       instruction.reward - cost / theta)  # fmt: skip
    content = RecordDict(
        {
            ARRAYS: adapter_to_record(module.adapter_state()),
            METRICS: to_metric_record(reply.to_dict()),
        }
    )
    return Message(content, reply_to=msg)
