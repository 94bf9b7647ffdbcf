"""The status page's HTML, as string.Template texts (no template engine: the pages are a few
tables, and every value is escaped by node.http.pages before it is substituted)."""

from __future__ import annotations

from string import Template

PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
$refresh<title>$title</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.uid { font-family: monospace; font-size: 0.9em; }
td.num { text-align: right; white-space: nowrap; } td.when { white-space: nowrap; }
.state-done, .state-sent { color: #176f2c; } .state-failed { color: #b00020; }
.state-queued, .state-pending { color: #8a6d00; }
.state-running, .state-sending { color: #0b5ea8; }
.state-superseded, .state-ignored { color: #777; }
nav a { margin-right: 1em; } img.overlay { max-width: 100%; border: 1px solid #ccc; }
</style>
</head>
<body>
<nav><a href="/">ctnode status</a><a href="/metrics">metrics</a><a href="/healthz">health</a></nav>
<h1>$title</h1>
<p>Times in UTC. UIDs, times and results only: no patient data is shown.</p>
$body
</body>
</html>
""")

TABLE = Template("""<h2>$caption</h2>
<table id="$table_id">
<thead><tr>$header</tr></thead>
<tbody>
$rows
</tbody>
</table>
""")

OVERLAY = Template("""<h2>Overlay</h2>
<p>The Secondary Capture this job produced, as sent to the PACS.</p>
<img class="overlay" id="overlay" src="$src" alt="calcium overlay of job $job_id">
""")
