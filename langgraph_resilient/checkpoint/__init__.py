"""The checkpointer: ``ResilientSaver`` and the tiers it composes."""

from langgraph_resilient.checkpoint.saver import ResilientSaver

__all__ = ["ResilientSaver"]
