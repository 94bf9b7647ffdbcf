"""ctnode's command-line interface: the Typer app and which module holds each command.

- node.cli.run: serve, demo, echo
- node.cli.score: score, segment, inspect (one CT, offline)
- node.cli.jobs: series, jobs [show|retry], status (the node's database)
- node.cli.models: models import|list (organ models)
- node.cli.purge: purge (retention on demand)
- node.cli.common: what they share (console, --config, settings, table formatters)
"""

from __future__ import annotations

from node.cli import jobs, models, purge, run, score
from node.cli.common import new_typer

app = new_typer(
    add_completion=False, no_args_is_help=True, help="ctnode: coronary calcium on chest CT"
)


@app.callback()
def main() -> None:
    """ctnode: a DICOM node that scores coronary artery calcium on chest CT."""


app.command()(run.demo)
app.command()(score.score)
app.command()(score.segment)
app.command()(run.serve)
app.command()(run.echo)
app.command()(jobs.series)
app.command()(score.inspect)
app.add_typer(jobs.jobs_app, name="jobs")
app.add_typer(models.models_app, name="models")
app.command()(jobs.status)
app.command()(purge.purge)
