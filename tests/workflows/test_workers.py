"""The pipeline's workers: tasks run side by side in worker processes with pinned threads, as their stages
finish; a stage that nothing can train beside runs alone; one job runs everything here, in order."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from mirage.workflows.configs import compose, set_searchpath
from mirage.workflows.pipeline import Task, run_tasks, trunk
from mirage.workflows.workers import Workers, pinned_threads

DEMO_GRAPH = {
    "vision": {},
    "warmup": {"init_from": "vision"},
    "base": {"init_from": "warmup"},
    "mixed": {"init_from": "warmup"},
    "posthoc": {"init_from": "base"},
    "npo": {"init_from": "base"},
}


def where(label: str) -> dict:
    """Where and how a task ran."""
    return {
        "label": label,
        "pid": os.getpid(),
        "threads": torch.get_num_threads(),
        "pinned": pinned_threads(),
    }


def meet(folder: str, me: str, other: str) -> bool:
    """Announce ``me`` in ``folder`` and wait for ``other``: True only if both ran at the same time."""
    Path(folder, me).touch()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if Path(folder, other).exists():
            return True
        time.sleep(0.05)
    return False


def fail(message: str) -> None:
    raise RuntimeError(message)


def test_trunk_is_the_stages_every_branch_shares():
    assert trunk(DEMO_GRAPH) == {"vision", "warmup"}
    assert trunk({"a": {}, "b": {"init_from": "a"}}) == {"a", "b"}  # a chain: nothing runs beside anything
    assert trunk({"a": {}, "b": {}}) == set()


def test_one_job_runs_every_task_here_in_order_of_need():
    calls: list[str] = []

    def record(label: str) -> str:
        calls.append(label)
        return label.upper()

    tasks = [
        Task("stage", "base", ("warmup",), record, ("base",)),  # listed first, needs warmup
        Task("stage", "warmup", (), record, ("warmup",)),
        Task("evaluation", "base", ("base",), record, ("eval base",)),
    ]
    with Workers(1) as workers:
        assert workers.threads() is None and workers.threads(alone=True) is None  # unpinned
        results = run_tasks(tasks, workers)
    assert calls == ["warmup", "base", "eval base"]
    assert results == {
        ("stage", "warmup"): "WARMUP",
        ("stage", "base"): "BASE",
        ("evaluation", "base"): "EVAL BASE",
    }


def test_a_failing_task_stops_the_run_with_its_error():
    tasks = [Task("stage", "a", (), fail, ("stage a broke",)), Task("stage", "b", ("a",), where, ("b",))]
    with Workers(1) as workers, pytest.raises(RuntimeError, match="stage a broke"):
        run_tasks(tasks, workers)


def test_a_task_that_waits_on_a_missing_stage_is_an_error():
    with Workers(1) as workers, pytest.raises(RuntimeError, match="never ran"):
        run_tasks([Task("evaluation", "x", ("nowhere",), where, ("x",))], workers)


def test_two_jobs_run_branches_side_by_side_in_pinned_workers(tmp_path):
    budget = torch.get_num_threads()
    folder = str(tmp_path)
    tasks = [
        Task("stage", "trunk", (), where, ("trunk",), alone=True),
        # Two branches that only finish if they run at the same time.
        Task("stage", "left", ("trunk",), meet, (folder, "left", "right")),
        Task("stage", "right", ("trunk",), meet, (folder, "right", "left")),
        Task("evaluation", "left", ("left",), where, ("eval left",)),
    ]
    with Workers(2) as workers:
        results = run_tasks(tasks, workers)
    assert results[("stage", "left")] is True and results[("stage", "right")] is True
    trunk_run, evaluation = results[("stage", "trunk")], results[("evaluation", "left")]
    assert trunk_run["pid"] != os.getpid() and evaluation["pid"] != os.getpid()  # worker processes
    assert trunk_run["threads"] == trunk_run["pinned"] == budget  # alone: the whole budget
    assert evaluation["threads"] == evaluation["pinned"] == max(1, budget // 2)  # beside another: a share


def test_compose_outside_hydra_reads_the_searchpath_a_worker_was_given(tmp_path):
    (tmp_path / "method").mkdir()
    (tmp_path / "method" / "mine.yaml").write_text("defaults:\n  - sft\n  - _self_\nmarker: 7\n")
    with pytest.raises(Exception, match="mine"):
        compose("train", ["method=mine"])
    set_searchpath([f"file://{tmp_path}"])
    try:
        assert compose("train", ["method=mine"]).method.marker == 7
    finally:
        set_searchpath([])
