"""The sweep's schedule: its pieces and what each needs, run concurrently up to a bound, a
failure or skip passed on to dependents only, each piece's times, the critical path."""

from __future__ import annotations

import contextvars
import threading
import time

import pytest

from codealign.tasks.sweeps import schedule
from codealign.tasks.sweeps.config import load_preset
from codealign.tasks.sweeps.plan import expand
from codealign.tasks.sweeps.results import SweepRecord
from codealign.tasks.sweeps.schedule import Piece, PieceSkipped, critical_path, parallel_bound, run_pieces


def test_a_toy_grid_of_two_seeds_has_independent_branches():
    graph = schedule.pieces(expand(load_preset("toy", pathways=["fta"], seeds=[0, 1])))
    needs = {p.label: p.needs for p in graph}
    assert needs["toy-fta-s0"] == needs["toy-fta-s1"] == needs["eval-starts"] == ()
    assert needs["toy-fta-s1-r16-sft"] == ("toy-fta-s1",)
    assert needs["toy-fta-s1-r16-functional-dpo"] == ("toy-fta-s1", "toy-fta-s1-r16-sft")
    assert needs["eval-toy-fta-s1-r16-functional-dpo"] == ("toy-fta-s1-r16-functional-dpo",)
    order = [p.label for p in graph]  # a valid serial order: every piece after what it needs
    assert all(order.index(n) < order.index(p.label) for p in graph for n in p.needs)
    # an SFT-only sweep on a prepared dataset has no data jobs to wait for
    prepared = schedule.pieces(expand(load_preset("toy", techniques=["sft"], data={"sft_dataset": "d.parquet"})),
                               sft_dataset=True)
    assert [p.needs for p in prepared if p.kind == "stage"] == [(), ()]


def test_independent_pieces_overlap_up_to_the_bound_and_dependents_wait():
    graph = [Piece("a", "data"), Piece("b", "data"), Piece("c", "data"), Piece("a2", "stage", ("a",))]
    running, peak, lock = set(), [0], threading.Lock()
    both = threading.Barrier(2, timeout=30)  # a and b can only pass it together: they ran at once

    def run(piece, meet=True):
        with lock:
            running.add(piece.label)
            peak[0] = max(peak[0], len(running))
            assert piece.label != "a2" or "a" not in running
        if meet and piece.label in "ab":
            both.wait()
        time.sleep(0.05)
        with lock:
            running.discard(piece.label)
        return piece.label.upper()

    outcome = run_pieces(graph, run, max_parallel=2)
    assert peak[0] == 2 and outcome.results == {"a": "A", "b": "B", "c": "C", "a2": "A2"}
    t = outcome.timings
    assert all(t[x].state == "completed" and t[x].ended_at >= t[x].started_at for x in ("a", "b", "c", "a2"))
    assert t["a"].started_at < t["b"].ended_at and t["b"].started_at < t["a"].ended_at  # overlapping times
    assert t["a2"].started_at >= t["a"].ended_at
    peak[0] = 0
    serial = run_pieces(graph, lambda p: run(p, meet=False), max_parallel=1)
    assert serial.results == outcome.results and peak[0] == 1


def test_a_failure_or_a_skip_passes_to_dependents_only():
    graph = [Piece("d1", "data"), Piece("d2", "data"), Piece("s1", "stage", ("d1",)),
             Piece("s1b", "stage", ("s1",)), Piece("s2", "stage", ("d2",)), Piece("s2b", "stage", ("s2",)),
             Piece("e2", "eval", ("s2",))]
    ended = []

    def run(piece):
        if piece.label == "d1":
            raise RuntimeError("the engine died")
        if piece.label == "s2b":
            raise PieceSkipped("SFT degraded")
        return piece.label

    outcome = run_pieces(graph, run, max_parallel=3, on_end=ended.append)
    states = {label: t.state for label, t in outcome.timings.items()}
    assert states == {"d1": "failed", "s1": "skipped", "s1b": "skipped", "d2": "completed", "s2": "completed",
                      "s2b": "skipped", "e2": "completed"}
    assert outcome.timings["d1"].detail == "RuntimeError: the engine died"
    assert outcome.timings["s1b"].detail == "s1 did not complete" and outcome.timings["s1"].started_at is None
    assert outcome.timings["s2b"].detail == "SFT degraded"
    assert sorted(t.label for t in ended) == sorted(states)  # every piece reported once


def test_pieces_run_in_the_callers_context():
    var = contextvars.ContextVar("var", default="unset")
    var.set("the flow run")
    outcome = run_pieces([Piece("a", "data"), Piece("b", "data")], lambda p: var.get(), max_parallel=2)
    assert outcome.results == {"a": "the flow run", "b": "the flow run"}


def test_a_bad_graph_is_refused():
    with pytest.raises(ValueError, match="repeat"):
        run_pieces([Piece("a", "data"), Piece("a", "data")], lambda p: None, 1)
    with pytest.raises(ValueError, match="unknown pieces"):
        run_pieces([Piece("a", "stage", ("x",))], lambda p: None, 1)


def test_the_critical_path_is_the_longest_chain():
    graph = [Piece("d1", "data"), Piece("d2", "data"), Piece("s1", "stage", ("d1",)),
             Piece("s2", "stage", ("d2",)), Piece("e", "eval", ("s1", "s2"))]
    total, path = critical_path(graph, {"d1": 10, "d2": 30, "s1": 25, "s2": 1, "e": 5})
    assert (total, path) == (40, ["d1", "s1", "e"])  # 10 + 25 + 5 against 30 + 1 + 5
    assert critical_path([], {}) == (0.0, [])


def test_the_bound_is_what_the_cluster_holds_for_training():
    assert parallel_bound(4, 2, False, {"CPU": 3.0}) == 1  # one 2-worker stage at a time
    assert parallel_bound(4, 2, False, {"CPU": 8.0}) == 4
    assert parallel_bound(2, 1, False, {"CPU": 8.0}) == 2  # max_parallel
    assert parallel_bound(4, 2, True, {"CPU": 64.0, "GPU": 6.0}) == 3
    assert parallel_bound(4, 4, True, {"CPU": 64.0}) == 1  # no GPU yet (autoscaling): one at a time


def test_a_record_written_before_per_branch_evaluation_still_reads():
    old = {"run_id": "sw", "preset": "toy", "data_runs": {}, "starts": [], "stages": [], "skipped": [],
           "eval_runs": {"0": "sw-eval", "3": "sw-icl3"}}
    record = SweepRecord.from_json(old)
    assert record.eval_runs == {0: ["sw-eval"], 3: ["sw-icl3"]} and record.pieces == []
    assert SweepRecord.from_json(record.to_json()) == record
