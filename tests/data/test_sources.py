"""data.source=files end to end below Flower: split, check, the ES's folder, start-up refusal."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict

from clients.client_app import query
from clients.edge_server import EdgeServer
from fed_agent.cli import main
from fed_agent.config import ConfigError, load_config
from fed_agent.data.files import DatasetMeta, find_problems, load_examples
from fed_agent.data.split import SplitSpec, split_folder
from fed_agent.data.synthetic_export import export_synthetic
from fed_agent.data.writing import OutRecord, write_folder
from fed_agent.protocol import CONFIG, DECLINE, PHASE, PUBLIC_FACTS, Offer
from tests.strategies.fake_grid import metadata, set_task_identity

ANSWERS = tuple("abcde")


def _source(folder: Path, n: int = 200) -> Path:
    records = [OutRecord(f"item {i}", ANSWERS[i % len(ANSWERS)]) for i in range(n)]
    write_folder(folder, records, DatasetMeta("letter"))
    return folder


def test_split_writes_disjoint_folders_that_cover_every_record(tmp_path):
    spec = SplitSpec(num_es=4, partitioner="dirichlet", alpha=0.5, eval_size=40, cloud_size=20)

    summary = split_folder(_source(tmp_path / "all"), tmp_path / "out", spec)

    prompts = {
        name: [e.prompt for e in load_examples(tmp_path / "out" / name, None)] for name in summary
    }
    every = [p for names in prompts.values() for p in names]
    assert sorted(every) == sorted(f"item {i}" for i in range(200))  # each record exactly once
    assert len(prompts["eval"]) == 40 and len(prompts["cloud"]) == 20
    assert all(len(prompts[f"es/{i}"]) >= 10 for i in range(4))  # the partitioner's minimum
    # the closed answer set comes from the data when the source has none
    example = load_examples(tmp_path / "out" / "es" / "0", None)[0]
    assert example.choices == tuple(f" {a}" for a in ANSWERS)
    assert json.loads((tmp_path / "out" / "split.json").read_text()) == summary


def test_pathological_split_gives_each_es_its_few_answers(tmp_path):
    spec = SplitSpec(
        num_es=5, partitioner="pathological", classes_per_es=2, eval_size=20, cloud_size=10
    )

    summary = split_folder(_source(tmp_path / "all"), tmp_path / "out", spec)

    assert all(len(summary[f"es/{i}"]) <= 2 for i in range(5))


def test_unknown_partitioner_lists_the_choices():
    with pytest.raises(ValueError, match=r"\['iid', 'dirichlet', 'pathological'\]"):
        SplitSpec(num_es=2, partitioner="shards")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"classes_per_es": 0}, "--classes-per-es must be >= 1, got 0"),
        ({"seed": -1}, "--seed must be >= 0, got -1"),
        ({"alpha": math.inf}, "--alpha must be a finite number > 0, got inf"),
        ({"alpha": math.nan}, "--alpha must be a finite number > 0, got nan"),
        ({"eval_size": 0}, "--eval-size must be >= 1, got 0"),
        ({"num_es": 2.0}, "--num-es must be an integer, got 2.0"),
    ],
)
def test_split_options_are_checked_naming_the_option(changes, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        SplitSpec(**{"num_es": 2, "partitioner": "pathological", **changes})


def test_data_check_exits_2_and_names_file_and_line(tmp_path, capsys):
    _source(tmp_path / "d" / "0", 5)
    broken = _source(tmp_path / "d" / "1", 5)
    with (broken / "data.jsonl").open("a") as out:
        out.write('{"prompt": "x"}\n')

    code = main(["data", "check", str(tmp_path / "d")])

    out = capsys.readouterr()
    assert code == 2
    assert f"ok: {tmp_path / 'd' / '0'}: 5 records" in out.out
    assert f"{broken / 'data.jsonl'}:6: missing field 'answer'" in out.err


def _files_cfg(tmp_path: Path, root: Path, *extra: str):
    return load_config(
        "smoke",
        [
            "data.source=files",
            f"data.path={root / 'es'}",
            f"data.eval_path={root / 'eval'}",
            f"data.cloud_path={root / 'cloud'}",
            f"output_dir={tmp_path / 'outputs'}",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory, smoke_cfg) -> Path:
    root = tmp_path_factory.mktemp("exported")
    export_synthetic(smoke_cfg.data, smoke_cfg.seed, 3, 16, False, root)
    return root


def test_exported_synthetic_files_hold_the_generated_examples(exported, smoke_cfg, tmp_path):
    from fed_agent.data.partition import cloud_examples, es_examples, heldout_examples

    cfg = _files_cfg(tmp_path, exported)
    es = EdgeServer.from_node_config(cfg, {"partition-id": 1, "num-partitions": 3})

    def text(examples):
        return [(e.task, e.prompt, e.answer) for e in examples]

    assert text(es.examples(False)) == text(es_examples(smoke_cfg.data, smoke_cfg.seed, 1))
    assert text(load_examples(exported / "eval", None)) == text(
        heldout_examples(smoke_cfg.data, smoke_cfg.seed)
    )
    assert text(load_examples(exported / "cloud", None)) == text(
        cloud_examples(smoke_cfg.data, smoke_cfg.seed, 16)
    )


def test_the_node_configs_data_path_wins_and_never_leaves_the_es(exported, tmp_path):
    cfg = _files_cfg(tmp_path, exported)
    node = {"partition-id": 0, "num-partitions": 3, "data-path": str(exported / "es" / "2")}

    es = EdgeServer.from_node_config(cfg, node)

    assert es.data_folder == str(exported / "es" / "2")
    assert es.data_problem is None
    assert [e.prompt for e in es.examples(False)] == [
        e.prompt for e in load_examples(exported / "es" / "2", None)
    ]


def _broken_es(tmp_path: Path, exported: Path) -> tuple[EdgeServer, Path]:
    broken = _source(tmp_path / "broken", 3)
    with (broken / "data.jsonl").open("a") as out:
        out.write("{oops\n")
    cfg = _files_cfg(tmp_path, exported)
    node = {"partition-id": 0, "num-partitions": 3, "data-path": str(broken)}
    return EdgeServer.from_node_config(cfg, node), broken


def test_an_es_with_broken_data_declines_every_offer(exported, tmp_path):
    es, broken = _broken_es(tmp_path, exported)
    offer = Offer(1, 1, DECLINE, False, (1.0,), (1.0,), (1.0,), (1.0,))

    assert es.data_problem.startswith("data.jsonl:4: unreadable line")
    assert str(broken) not in es.data_problem
    assert es.answer_offer(offer) == DECLINE


def test_an_es_with_broken_data_answers_the_first_query_with_its_reason(exported, tmp_path):
    _, broken = _broken_es(tmp_path, exported)
    overrides = " ".join(
        [
            "data.source=files",
            f"data.eval_path={exported / 'eval'}",
            f"data.cloud_path={exported / 'cloud'}",
        ]
    )
    context = Context(
        run_id=1,
        node_id=7,
        state=RecordDict(),
        node_config={"partition-id": 0, "num-partitions": 3, "data-path": str(broken)},
        run_config={"experiment": "smoke", "overrides": overrides},
    )
    content = RecordDict({CONFIG: ConfigRecord({PHASE: PUBLIC_FACTS})})
    set_task_identity(7)
    try:
        reply = query(Message(content=content, metadata=metadata(0, 7, "query", "m1")), context)
    finally:
        set_task_identity(0)

    assert reply.has_error()
    assert reply.error.reason == (
        "declines: its data is unusable: data.jsonl:4: unreadable line (Expecting property name "
        "enclosed in double quotes: line 1 column 2 (char 1))"
    )


def test_a_simulation_with_a_broken_es_folder_is_refused_before_anything_starts(exported, tmp_path):
    from fed_agent.deploy.launcher import launch_simulation

    root = tmp_path / "copy"
    export_synthetic(load_config("smoke").data, 0, 3, 16, False, root)
    lines = (root / "es" / "2" / "data.jsonl").read_text().splitlines()
    lines[6] = json.dumps({"prompt": "p", "answer": "fly"})
    (root / "es" / "2" / "data.jsonl").write_text("\n".join(lines) + "\n")
    overrides = [
        "data.source=files",
        f"data.path={root / 'es'}",
        f"data.eval_path={root / 'eval'}",
        f"data.cloud_path={root / 'cloud'}",
        f"output_dir={tmp_path / 'outputs'}",
    ]

    with pytest.raises(ConfigError, match=r"es/2/data.jsonl:7: answer 'fly' is outside"):
        launch_simulation("smoke", overrides)
    assert main(["run", "--experiment", "smoke", *overrides]) == 2
    assert not (tmp_path / "outputs").exists()


def test_a_simulation_needs_a_folder_per_es(exported, tmp_path):
    from fed_agent.deploy.launcher import check_data

    cfg = _files_cfg(tmp_path, exported, "federation.num_es=4")

    with pytest.raises(ConfigError, match=r"es/3: no such data folder"):
        check_data(cfg, simulation=True)
    check_data(
        dataclasses.replace(cfg, federation=dataclasses.replace(cfg.federation, num_es=3)),
        simulation=True,
    )


def test_check_finds_nothing_wrong_in_exported_scenes(exported):
    for name in ("es/0", "es/1", "es/2", "eval", "cloud"):
        count, problems = find_problems(exported / name)
        assert problems == [] and count > 0
