"""Devices and precision on a CPU machine: resolution, refusals, plumbing, resources."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fed_agent.config import load_config
from fed_agent.deploy.launcher import federation_config
from fed_agent.models.base import ModelLoadError
from fed_agent.models.devices import (
    enable_gradient_checkpointing,
    inputs_to,
    model_device,
    resolve_device,
    resolve_dtype,
)


def test_auto_is_the_cpu_here_and_cuda_when_there_is_one(monkeypatch):
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")


def test_a_device_this_machine_lacks_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ModelLoadError, match="model.device=cuda but this machine has no CUDA"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="valid choices"):
        resolve_device("tpu")


def test_auto_dtype_is_bf16_on_a_cuda_that_supports_it_else_float32(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_dtype("auto", cuda) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_dtype("auto", cuda) == torch.float32
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("float16", cuda) == torch.float16
    with pytest.raises(ModelLoadError, match="model.dtype=bfloat16 on the CPU"):
        resolve_dtype("bfloat16", torch.device("cpu"))


def test_the_pre_hook_moves_every_tensor_of_a_call():
    hook = inputs_to(torch.device("meta"))
    args, kwargs = hook(
        torch.nn.Identity(),
        (torch.ones(2),),
        {"input_ids": torch.ones(2, 3), "past": (torch.ones(1), [torch.ones(1)]), "n": 3},
    )
    assert args[0].device.type == "meta" and kwargs["input_ids"].device.type == "meta"
    assert kwargs["past"][0].device.type == "meta" and kwargs["past"][1][0].device.type == "meta"
    assert kwargs["n"] == 3


def test_a_cpu_base_is_float32_on_the_cpu_with_no_device_hook(smoke_module):
    model = smoke_module.base.model
    assert model_device(model) == torch.device("cpu")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert not model._forward_pre_hooks


def test_gradient_checkpointing_trains_a_frozen_base_s_lora(smoke_cfg, tmp_path):
    from fed_agent.data import es_examples
    from fed_agent.models.registry import load_base
    from fed_agent.modules.adapter import AgentModule
    from fed_agent.modules.training import train_locally
    from tests.models.tiny_hf import build_llama

    cfg = dataclasses.replace(
        smoke_cfg.model,
        name="hf",
        path=str(build_llama(tmp_path / "m")),
        gradient_checkpointing=True,
    )
    base = load_base(cfg, 0)
    assert base.model.is_gradient_checkpointing
    module = AgentModule(base, cfg, 0)
    before = module.adapter_state()
    train_locally(module, es_examples(smoke_cfg.data, 0, 0)[:8], smoke_cfg.training, 2, 0)
    after = module.adapter_state()
    assert any(float(abs(after[k] - before[k]).max()) > 0 for k in before if "lora_B" in k)
    with pytest.raises(ModelLoadError, match="does not support it"):
        enable_gradient_checkpointing(torch.nn.Linear(2, 2))


def test_client_gpus_become_flowers_num_gpus():
    fed = load_config("smoke").federation
    assert federation_config(fed) == "num-supernodes=3 client-resources-num-cpus=1"
    fed = load_config("smoke", ["federation.client_gpus=0.25"]).federation
    assert federation_config(fed).endswith("client-resources-num-gpus=0.25")


def test_a_supernode_takes_its_device_from_its_node_config():
    from clients.edge_server import EdgeServer
    from fed_agent.protocol import DEVICE, NUM_PARTITIONS, PARTITION_ID

    cfg = load_config("smoke", ["model.device=cpu"])
    node = {PARTITION_ID: 0, NUM_PARTITIONS: 3}
    assert EdgeServer.from_node_config(cfg, node).cfg.model.device == "cpu"
    es = EdgeServer.from_node_config(cfg, {**node, DEVICE: "cuda"})
    assert es.cfg.model.device == "cuda" and cfg.model.device == "cpu"  # the cloud keeps its own
    with pytest.raises(ValueError, match="model.device: unknown value 'gpu0'"):
        EdgeServer.from_node_config(cfg, {**node, DEVICE: "gpu0"})


def test_machine_settings_stay_out_of_an_exported_manifest(tmp_path, smoke_cfg, smoke_module):
    import json

    from fed_agent.packaging.export import MACHINE_FIELDS, export_agent

    agent = export_agent(tmp_path / "a", smoke_module, smoke_module.initial_state, {})
    recorded = json.loads((agent / "manifest.json").read_text())["base"]["model_config"]
    assert not set(MACHINE_FIELDS) & set(recorded)
    assert recorded["lora_r"] == smoke_cfg.model.lora_r
