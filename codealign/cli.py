"""The ``codealign`` command: the flows' commands, ``deploy`` and ``stack``.

Why here: the command line spans every layer (flows, then the deployments of those flows, and
the stack they run on), so it is put together at the top, where importing all of them makes no
cycle (tests/unit/test_import_graph.py).
"""

from __future__ import annotations

from codealign.deployments.deploy import deploy_command
from codealign.flows.cli import app
from codealign.infra.local_stack import stack_app

app.command("deploy")(deploy_command)
app.add_typer(stack_app, name="stack")

__all__ = ["app"]
