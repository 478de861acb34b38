"""Observability shared by the saver and the node middleware.

``events``: the in-process event bus the runtime publishes to (metrics and tracing subscribe).
"""
