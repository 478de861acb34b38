"""Graphs of the example server project (``langgraph.json`` names them).

``support``: a support ticket graph. ``intake`` streams a custom progress event, ``research``
is a subgraph, ``draft`` calls a (fake, offline) chat model whose tokens stream in
``messages`` mode, ``review`` pauses for a human with ``interrupt()`` and ``publish`` ends it.
``chain``: five trivial nodes in a row (the benchmarks' graph).
"""

from __future__ import annotations

import itertools
import operator
from typing import Annotated, Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AnyMessage
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import interrupt
from typing_extensions import TypedDict


class Ticket(TypedDict, total=False):
    question: str
    notes: Annotated[list[str], operator.add]
    findings: Annotated[list[str], operator.add]
    messages: Annotated[list[AnyMessage], add_messages]
    approved: bool
    published: bool


def intake(state: Ticket) -> dict[str, Any]:
    get_stream_writer()({"progress": "intake"})
    return {"notes": [f"intake: {state.get('question', '')}"]}


class Research(TypedDict, total=False):
    question: str
    findings: Annotated[list[str], operator.add]


def look_up(state: Research) -> dict[str, Any]:
    return {"findings": ["found 2 articles"]}


def summarize(state: Research) -> dict[str, Any]:
    return {"findings": ["summarized"]}


research_builder = StateGraph(Research)
research_builder.add_node("look_up", look_up)
research_builder.add_node("summarize", summarize)
research_builder.add_edge(START, "look_up")
research_builder.add_edge("look_up", "summarize")
research = research_builder.compile()


def _model() -> GenericFakeChatModel:
    # A chat model that needs no network: it streams this answer token by token.
    return GenericFakeChatModel(messages=iter([AIMessage(content="Try turning it off and on.")]))


async def draft(state: Ticket) -> dict[str, Any]:
    answer = await _model().ainvoke(state.get("question", ""))
    return {"messages": [answer], "notes": ["draft: written"]}


def review(state: Ticket) -> dict[str, Any]:
    decision = interrupt({"question": "Publish this answer?", "notes": state.get("notes", [])})
    return {"approved": bool(decision), "notes": [f"review: {decision}"]}


def publish(state: Ticket) -> dict[str, Any]:
    return {"published": bool(state.get("approved")), "notes": ["publish: done"]}


builder = StateGraph(Ticket)
builder.add_node("intake", intake)
builder.add_node("research", research)
builder.add_node("draft", draft)
builder.add_node("review", review)
builder.add_node("publish", publish)
builder.add_edge(START, "intake")
builder.add_edge("intake", "research")
builder.add_edge("research", "draft")
builder.add_edge("draft", "review")
builder.add_edge("review", "publish")
builder.add_edge("publish", END)
support = builder.compile()


class Count(TypedDict):
    n: int


def step(state: Count) -> dict[str, int]:
    return {"n": state["n"] + 1}


chain_builder = StateGraph(Count)
names = ["one", "two", "three", "four", "five"]
for name in names:
    chain_builder.add_node(name, step)
chain_builder.add_edge(START, names[0])
for before, after in itertools.pairwise(names):
    chain_builder.add_edge(before, after)
chain_builder.add_edge(names[-1], END)
chain = chain_builder.compile()
