"""Serving a deployed agent at the edge: an OpenAI-compatible HTTP endpoint over its runtime.

- ``config``: the server's settings and the one home of their defaults;
- ``schemas``: the OpenAI request bodies accepted and the responses written;
- ``engine``: one inference worker over the agent's module chain, with a bounded queue;
- ``app``: the FastAPI application (``/v1/completions``, ``/v1/chat/completions``,
  ``/v1/models``, ``/v1/models/{model}``, ``/health``), its size limit and its error bodies.

``fed-agent serve AGENT_DIR`` runs it with uvicorn; ``fed-agent evaluate --endpoint URL``
measures it under concurrent load (``fed_agent.evaluation.serving``).
"""
