"""`python -m node.cli ...`: the same as the `ctnode` console script."""

from node.cli import app

app()
