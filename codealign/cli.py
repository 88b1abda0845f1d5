"""The ``codealign`` command: every command, by name, in one list.

Why here: the command line spans every layer (flows, then the deployments of those flows, and
the stack they run on), so it is put together at the top, where importing all of them makes no
cycle (tests/unit/test_import_graph.py).  A new command is a function in the module of its
concern and one line below.
"""

from __future__ import annotations

from codealign.deployments.deploy import deploy_command
from codealign.flows import flow_commands, run_commands, sandbox_commands
from codealign.flows.cli import app
from codealign.infra.local_stack import stack_app

# in this process: judging, scoring, the data check, one model's evaluation
app.command("exec")(sandbox_commands.exec_command)
app.command("score")(sandbox_commands.score_command)
app.command("demo")(sandbox_commands.demo_command)
app.command("evaluate")(sandbox_commands.evaluate_command)
app.add_typer(sandbox_commands.toy_app, name="toy")
sandbox_commands.toy_app.command("build")(sandbox_commands.toy_build)
# flows (Prefect on Ray)
app.command("evaluate-checkpoints")(flow_commands.evaluate_checkpoints_command)
app.command("generate")(flow_commands.generate_command)
app.command("train")(flow_commands.train_command)
app.command("sweep")(flow_commands.sweep_command)
app.command("run-submitted", hidden=True)(flow_commands.run_submitted_command)  # a --submit run's Ray Job
# runs in a store
app.command("resume")(run_commands.resume_command)
app.command("runs")(run_commands.runs_command)
app.command("show")(run_commands.show_command)
app.command("report")(run_commands.report_command)
app.command("compare")(run_commands.compare_command)
app.command("lineage")(run_commands.lineage_command)
app.command("gc")(run_commands.gc_command)
# where flows run: deployments and the local stack
app.command("deploy")(deploy_command)
app.add_typer(stack_app, name="stack")

__all__ = ["app"]
