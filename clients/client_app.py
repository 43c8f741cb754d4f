"""The ES ClientApp: receive the global agent module, train it on local data, reply."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from flwr.app import Context, Message, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402

from clients.edge_server import EdgeServerProfile, local_examples  # noqa: E402
from fed_agent.modules.adapter import AdapterError, agent_module  # noqa: E402
from fed_agent.modules.training import train_locally  # noqa: E402
from fed_agent.protocol import ARRAYS, CONFIG, METRICS, TrainInstruction, TrainReply  # noqa: E402
from fed_agent.seeding import derive_seed  # noqa: E402
from strategies.records import (  # noqa: E402
    adapter_to_record,
    config_from_context,
    record_to_adapter,
    to_metric_record,
)

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received agent module on this ES's data for the instructed step budget."""
    cfg = config_from_context(context)
    profile = EdgeServerProfile.from_node_config(context.node_config)
    instruction = TrainInstruction.from_dict(msg.content[CONFIG])
    module = agent_module(cfg.model, cfg.seed)
    if module.base.fingerprint != instruction.base_fingerprint:
        raise AdapterError(
            f"ES {profile.partition_id}: base model {module.base.fingerprint[:12]} differs from "
            f"the cloud's {instruction.base_fingerprint[:12]}; same model config and seed needed"
        )
    module.load_adapter(record_to_adapter(msg.content[ARRAYS]))
    examples = local_examples(cfg.data, cfg.seed, profile, module.base.is_vision)
    seed = derive_seed(cfg.seed, "local-training", profile.partition_id, instruction.server_round)
    report = train_locally(module, examples, cfg.training, instruction.local_steps, seed)
    reply = TrainReply(len(examples), report.mean_loss, report.steps, report.wall_s)
    content = RecordDict(
        {
            ARRAYS: adapter_to_record(module.adapter_state()),
            METRICS: to_metric_record(reply.to_dict()),
        }
    )
    return Message(content, reply_to=msg)
