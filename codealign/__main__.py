"""``python -m codealign``: the ``codealign`` command."""

from codealign.cli import app

app(prog_name="codealign")
