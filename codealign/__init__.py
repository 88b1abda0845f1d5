"""codealign: code-LLM alignment as scheduled, resumable, distributed workflows.

One import name for the whole project.  The folders stay at the top of the checkout (the
layout is part of the design: ``tasks/`` plain Python, ``flows/`` Prefect + Ray composition,
``deployments/`` when and where flows run, ``infra/`` what they run on); ``codealign/`` holds
links to them, so they import as ``codealign.tasks``, ``codealign.flows``,
``codealign.deployments`` and ``codealign.infra`` from a checkout and from the wheel alike.
Nothing imports them under their bare folder names (``tests/e2e/test_packaging.py`` checks it).
"""

__version__ = "0.1.0"
