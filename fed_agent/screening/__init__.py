"""Screening: judging ES updates before they are paid and merged (numpy only).

``config`` (the ``screening.*`` thresholds), ``judge`` (each update against the cloud's own
reference update and its expected norm), ``robust`` (verdicts, robust centres) and
``aggregation`` (merging the kept updates). The reference update itself is trained by
:mod:`fed_agent.modules.reference`.
"""
