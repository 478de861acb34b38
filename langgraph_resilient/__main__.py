"""``python -m langgraph_resilient``: the ``langgraph-resilient`` command."""

from langgraph_resilient.cli import main

raise SystemExit(main())
