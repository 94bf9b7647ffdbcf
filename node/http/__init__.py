"""The node's HTTP port ([http]): Prometheus /metrics, /healthz and a read-only status page.

server.py serves them (standard library), metrics.py reads the metrics from the database,
health.py checks the node, pages.py and templates.py render the status page from node.admin.
"""
