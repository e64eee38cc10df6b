from __future__ import annotations

import tomllib
from typing import Any

import pytest

from queueing.config import (
    Destination,
    DestinationKind,
    EscalationRule,
    MemberConfig,
    Strategy,
    build_config,
    validate,
)
from queueing.exceptions import QueueConfigError

TOML = """
[agents.agent1]
name = "Ana"
wrapup = 5
[agents.agent2]

[queues.support]
strategy = "rrmemory"
ring_timeout = 20
retry = 3
wrapup = 10
max_callers = 50
max_wait = 300
join_empty = false
leave_when_empty = true
autopause = 3
announce_frequency = 30
service_level = 15
music_on_hold = "jazz"
max_penalty = 0
escalation = [{after = 30, max_penalty = 2}, {after = 60, max_penalty = 5}]
overflow = {queue = "sales"}
members = [{agent = "agent1", penalty = 0}, "agent2"]

[queues.sales]
strategy = "longest-idle"
overflow = {number = "5551234", trunk = "pbx"}
members = [{agent = "agent2", penalty = 2}]
"""


def errors_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(QueueConfigError) as info:
        build_config(data)
    assert validate(data) == info.value.errors
    return info.value.errors


def test_toml_shape_of_the_docstring_builds_frozen_values() -> None:
    config = build_config(tomllib.loads(TOML))
    support = config.queues["support"]
    assert support.strategy is Strategy.RRMEMORY
    assert support.members == (MemberConfig("agent1", 0), MemberConfig("agent2", 0))
    assert support.escalation == (EscalationRule(30, 2), EscalationRule(60, 5))
    assert support.overflow == Destination(DestinationKind.QUEUE, "sales")
    assert support.music_on_hold == "jazz"
    assert (support.ring_timeout, support.retry, support.wrapup) == (20, 3, 10)
    assert (support.join_empty, support.leave_when_empty, support.autopause) == (False, True, 3)
    assert config.queues["sales"].strategy is Strategy.LONGEST_IDLE
    assert config.queues["sales"].overflow == Destination(DestinationKind.NUMBER, "5551234", "pbx")
    assert str(config.queues["sales"].overflow) == "number:5551234@pbx"
    assert config.agents["agent1"].wrapup == 5
    assert config.agents["agent2"].wrapup is None
    with pytest.raises(AttributeError):
        support.strategy = Strategy.LINEAR  # type: ignore[misc]


def test_every_strategy_name_is_accepted() -> None:
    for strategy in Strategy:
        data = {"agents": {"a": {}}, "queues": {"q": {"strategy": strategy.value, "members": []}}}
        assert build_config(data).queues["q"].strategy is strategy


def test_unknown_strategy_names_the_place_and_the_choices() -> None:
    errors = errors_of({"queues": {"support": {"strategy": "foo", "members": []}}})
    assert errors == [
        'queues.support.strategy: unknown strategy "foo" (expected one of ringall, leastrecent, '
        "fewestcalls, random, rrmemory, rrordered, linear, wrandom, longest-idle)"
    ]


def test_negative_timeouts_are_rejected_with_their_place() -> None:
    errors = errors_of(
        {"queues": {"q": {"members": [], "ring_timeout": -1, "retry": -2, "max_wait": "x"}}}
    )
    assert errors == [
        "queues.q.ring_timeout: must be from 0 to 604800 seconds, got -1",
        "queues.q.retry: must be from 0 to 604800 seconds, got -2",
        "queues.q.max_wait: expected a number of seconds, got a string",
    ]


def test_member_that_is_not_a_known_agent_is_rejected() -> None:
    errors = errors_of(
        {"agents": {"agent1": {}}, "queues": {"q": {"members": ["agent1", {"agent": "agent11"}]}}}
    )
    assert errors == ['queues.q.members[1].agent: unknown agent "agent11" (did you mean "agent1"?)']


def test_member_listed_twice_and_negative_penalty_are_rejected() -> None:
    errors = errors_of(
        {"agents": {"a": {}}, "queues": {"q": {"members": ["a", {"agent": "a", "penalty": -1}]}}}
    )
    assert errors == [
        "queues.q.members[1].penalty: must be an integer from 0 to 1000000",
        'queues.q.members[1].agent: agent "a" is listed twice',
    ]


def test_overflow_loop_between_queues_is_rejected() -> None:
    queues = {
        "a": {"members": [], "overflow": {"queue": "b"}},
        "b": {"members": [], "overflow": {"queue": "c"}},
        "c": {"members": [], "overflow": {"queue": "a"}},
        "d": {"members": [], "overflow": {"queue": "a"}},
    }
    assert errors_of({"queues": queues}) == [
        "queues.a.overflow: overflow loop between queues: a -> b -> c -> a"
    ]


def test_overflow_to_itself_and_to_unknown_queue_or_agent_are_rejected() -> None:
    queues = {
        "a": {"members": [], "overflow": {"queue": "a"}},
        "b": {"members": [], "overflow": {"queue": "nowhere"}},
        "c": {"members": [], "overflow": {"agent": "ghost"}},
    }
    assert errors_of({"queues": queues}) == [
        'queues.c.overflow.agent: unknown agent "ghost"',
        'queues.b.overflow.queue: unknown queue "nowhere"',
        "queues.a.overflow: overflow loop between queues: a -> a",
    ]


def test_overflow_destination_needs_exactly_one_kind() -> None:
    queues = {
        "a": {"members": [], "overflow": {"queue": "b", "record": "x"}},
        "b": {"members": [], "overflow": "sales"},
        "c": {"members": [], "overflow": {"record": ""}},
        "d": {"members": [], "overflow": {"hangup": "closed"}},
    }
    assert errors_of({"queues": queues}) == [
        "queues.a.overflow: expected exactly one of queue, agent, number, record, hangup",
        'queues.b.overflow: expected a table such as {queue = "sales"}, got a string',
        "queues.c.overflow.record: must not be empty",
    ]


def test_escalation_rules_must_increase_and_be_complete() -> None:
    queues = {
        "q": {
            "members": [],
            "escalation": [
                {"after": 30, "max_penalty": 1},
                {"after": 20, "max_penalty": 2},
                {"after": 40},
            ],
        }
    }
    assert errors_of({"queues": queues}) == [
        "queues.q.escalation[1].after: must be greater than the previous rule's",
        "queues.q.escalation[2]: needs both after and max_penalty",
    ]


def test_unknown_keys_are_named_with_a_suggestion() -> None:
    errors = errors_of({"queues": {"q": {"members": [], "strategie": "linear"}}, "x": 1})
    assert errors == [
        "x: unknown key (expected agents or queues)",
        'queues.q.strategie: unknown key (did you mean "strategy"?)',
    ]


def test_every_problem_is_reported_at_once() -> None:
    errors = errors_of(
        {"queues": {"q": {"strategy": 3, "members": ["nobody"], "join_empty": "yes"}}}
    )
    assert len(errors) == 3
    assert str(QueueConfigError(errors)).startswith("invalid queue configuration:\n  queues.q")
