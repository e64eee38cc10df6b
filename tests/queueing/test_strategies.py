"""Each strategy, in simulated time: who is offered the next caller."""

from __future__ import annotations

from collections import Counter
from typing import Any

from queueing.engine import AcdEngine
from queueing.events import CancelOffer, OfferCall

from .sim import make_engine, of_type

AGENTS = ["a1", "a2", "a3"]


def queue(strategy: str, members: list[Any] | None = None, **options: Any) -> dict[str, Any]:
    return {"support": {"strategy": strategy, "members": members or AGENTS, **options}}


def offered(engine: AcdEngine) -> list[str]:
    return [e.agent for e in of_type(engine.events(), OfferCall)]


def serve(engine: AcdEngine, call_id: str, now: float, talk: float = 10.0) -> str:
    """Enter a caller, let the offered agent answer, talk and hang up; return the agent."""
    engine.caller_enter(call_id, "support", now)
    (agent,) = offered(engine)
    assert engine.offer_answered(call_id, agent, now + 1)
    assert engine.call_completed(call_id, agent, now + 1 + talk)
    engine.events()
    return agent


def test_ringall_offers_every_ready_member_and_cancels_the_others_on_answer() -> None:
    engine = make_engine(queue("ringall"))
    engine.caller_enter("c1", "support", 1.0)
    assert offered(engine) == AGENTS
    assert engine.offer_answered("c1", "a2", 2.0)
    cancels = of_type(engine.events(), CancelOffer)
    assert {(c.agent, c.reason) for c in cancels} == {
        ("a1", "answered-elsewhere"),
        ("a3", "answered-elsewhere"),
    }
    assert not engine.offer_answered("c1", "a1", 2.1)


def test_ringall_rings_only_the_lowest_penalty_present() -> None:
    members = [{"agent": "a1", "penalty": 1}, {"agent": "a2", "penalty": 0}, "a3"]
    engine = make_engine(queue("ringall", members))
    engine.caller_enter("c1", "support", 1.0)
    assert offered(engine) == ["a2", "a3"]


def test_linear_always_offers_the_first_ready_member_in_order() -> None:
    engine = make_engine(queue("linear"))
    assert [serve(engine, f"c{i}", 100.0 * i) for i in range(3)] == ["a1", "a1", "a1"]
    engine.agent_pause("a1", "lunch", 400.0)
    assert serve(engine, "c9", 500.0) == "a2"


def test_rrmemory_resumes_after_the_member_offered_last() -> None:
    engine = make_engine(queue("rrmemory"))
    assert [serve(engine, f"c{i}", 100.0 * i) for i in range(4)] == ["a1", "a2", "a3", "a1"]
    engine.agent_pause("a2", "break", 450.0)
    assert [serve(engine, f"d{i}", 500.0 + 100 * i) for i in range(3)] == ["a3", "a1", "a3"]


def test_rrordered_cycles_in_the_configured_member_order() -> None:
    engine = make_engine(queue("rrordered", ["a3", "a1", "a2"]))
    assert [serve(engine, f"c{i}", 100.0 * i) for i in range(4)] == ["a3", "a1", "a2", "a3"]


def test_leastrecent_offers_the_member_whose_last_call_ended_longest_ago() -> None:
    engine = make_engine(queue("leastrecent"))
    assert serve(engine, "c1", 0.0, talk=50) == "a1"  # ends at 51
    assert serve(engine, "c2", 1.0, talk=10) == "a2"  # ends at 12
    assert serve(engine, "c3", 2.0, talk=30) == "a3"  # ends at 33
    assert serve(engine, "c4", 100.0) == "a2"
    assert serve(engine, "c5", 200.0) == "a3"


def test_fewestcalls_offers_the_member_with_fewest_completed_calls() -> None:
    engine = make_engine(queue("fewestcalls"))
    engine.agent_pause("a3", "training", 0.0)
    for i in range(4):
        serve(engine, f"c{i}", 100.0 * i)
    engine.agent_unpause("a3", 450.0)
    assert [serve(engine, f"d{i}", 500.0 + 100 * i) for i in range(3)] == ["a3", "a3", "a1"]


def test_longest_idle_counts_idle_time_across_all_queues() -> None:
    queues = {
        "support": {"strategy": "longest-idle", "members": ["a1", "a2"]},
        "sales": {"strategy": "linear", "members": ["a1"]},
    }
    engine = make_engine(queues)
    engine.caller_enter("s1", "sales", 5.0)
    assert offered(engine) == ["a1"]
    engine.offer_answered("s1", "a1", 6.0)
    engine.call_completed("s1", "a1", 20.0)
    engine.events()
    # a1 became idle at 20, a2 at 0 (login): a2 has been idle longest
    assert serve(engine, "c1", 30.0) == "a2"
    assert serve(engine, "c2", 100.0) == "a1"


def test_random_is_reproducible_with_a_seeded_rng_and_reaches_every_member() -> None:
    def picks(seed: int) -> list[str]:
        engine = make_engine(queue("random"), seed=seed)
        return [serve(engine, f"c{i}", 100.0 * i) for i in range(60)]

    assert picks(7) == picks(7)
    assert set(picks(7)) == set(AGENTS)
    assert picks(7) != picks(8)


def test_wrandom_weighs_members_by_penalty() -> None:
    members = [{"agent": "a1", "penalty": 0}, {"agent": "a2", "penalty": 4}]
    engine = make_engine(queue("wrandom", members), seed=3)
    counts = Counter(serve(engine, f"c{i}", 100.0 * i) for i in range(400))
    assert counts["a2"] > 0
    assert counts["a1"] > 2 * counts["a2"]


def test_penalty_orders_members_for_every_strategy_but_wrandom() -> None:
    for strategy in ("linear", "rrmemory", "leastrecent", "fewestcalls", "random", "longest-idle"):
        members = [{"agent": "a1", "penalty": 2}, {"agent": "a2", "penalty": 0}, "a3"]
        engine = make_engine(queue(strategy, members))
        engine.agent_pause("a2", "x", 0.0)
        picks = {serve(engine, f"c{i}", 100.0 * i) for i in range(5)}
        assert picks == {"a3"}, strategy
