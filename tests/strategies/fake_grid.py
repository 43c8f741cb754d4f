"""A Grid stand-in that routes QUERY messages to the real ClientApp handlers in-process.

Train offers (the offer riding on a TRAIN message) are answered by the real ES's choice too:
:func:`choose_item` asks the ES of the most recently made grid.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from flwr.app import Context, Message, MessageType, RecordDict

from benchmarks.in_process import metadata, set_task_identity
from clients.client_app import query
from clients.edge_server import EdgeServer
from fed_agent.config import config_from_run_config
from fed_agent.protocol import CONFIG, TrainOffer


class FakeGrid:
    """Nodes ``node_ids[i]`` hold partition i; QUERYs are answered by clients.client_app."""

    def __init__(self, node_ids: list[int], experiment: str, overrides: str = "") -> None:
        self.node_ids = node_ids
        self.contexts = {
            n: Context(
                run_id=1,
                node_id=n,
                state=RecordDict(),
                node_config={"partition-id": i, "num-partitions": len(node_ids)},
                run_config={"experiment": experiment, "overrides": overrides},
            )
            for i, n in enumerate(node_ids)
        }
        self.sent: list[Message] = []
        FakeGrid.current = self

    def get_node_ids(self) -> list[int]:
        return list(self.node_ids)

    def get_nodes(self) -> list[SimpleNamespace]:
        """Flower's NodeInfo as the ServerApp's grid reads it: node i registered i-th."""
        start = datetime(2026, 1, 1, tzinfo=UTC)
        return [
            SimpleNamespace(node_id=n, registered_at=(start + timedelta(seconds=i)).isoformat())
            for i, n in enumerate(self.node_ids)
        ]

    def send_and_receive(self, messages, timeout=None) -> list[Message]:
        replies = []
        for i, message in enumerate(messages):
            self.sent.append(message)
            dst = message.metadata.dst_node_id
            addressed = Message(
                content=message.content,
                metadata=metadata(0, dst, message.metadata.message_type, f"m{len(self.sent)}-{i}"),
            )
            if message.metadata.message_type != MessageType.QUERY:
                raise NotImplementedError("the fake grid only answers QUERY messages")
            set_task_identity(dst)
            try:
                replies.append(query(addressed, self.contexts[dst]))
            finally:
                set_task_identity(0)
        return replies


def choose_item(message: Message) -> int:
    """The item (or DECLINE) the destination ES of a train offer picks, as the ClientApp would."""
    context = FakeGrid.current.contexts[message.metadata.dst_node_id]
    es = EdgeServer.from_node_config(
        config_from_run_config(context.run_config), context.node_config
    )
    return es.answer_offer(TrainOffer.from_dict(message.content[CONFIG]).offer)


class HandlerGrid(FakeGrid):
    """A whole federation in-process: every message (QUERY, TRAIN, EVALUATE) is answered by
    the real ClientApp handler of its destination at push time; nodes in ``stock`` behave like
    a stock Flower ClientApp (no query handler: an error reply, as Flower makes one)."""

    def __init__(self, node_ids, experiment, overrides="", stock=()) -> None:
        super().__init__(node_ids, experiment, overrides)
        self.stock = set(stock)
        self._replies: dict[str, Message] = {}

    def _answer(self, message: Message, message_id: str) -> Message:
        from flwr.app.error import Error
        from flwr.common.constant import ErrorCode

        from clients.client_app import evaluate, train

        dst, kind = message.metadata.dst_node_id, message.metadata.message_type
        addressed = Message(content=message.content, metadata=metadata(0, dst, kind, message_id))
        if dst in self.stock and kind == MessageType.QUERY:
            reason = "ValueError: No query function registered with name 'default'"
            error = Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason)
            return Message(error=error, metadata=metadata(dst, 0, kind, f"r-{message_id}"))
        handler = {MessageType.QUERY: query, MessageType.TRAIN: train}.get(kind, evaluate)
        set_task_identity(dst)
        try:
            return handler(addressed, self.contexts[dst])
        finally:
            set_task_identity(0)

    def push_messages(self, messages) -> list[str]:
        ids = []
        for message in messages:
            self.sent.append(message)
            message_id = f"m{len(self.sent)}"
            reply = self._answer(message, message_id)
            reply.metadata.__dict__["_reply_to_message_id"] = message_id
            self._replies[message_id] = reply
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids) -> list[Message]:
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

    def send_and_receive(self, messages, timeout=None) -> list[Message]:
        return self.pull_messages(self.push_messages(messages))
