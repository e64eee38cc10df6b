"""Tests of media.mixer: who hears whom (conference, listen, whisper, barge, mute,
overrides), tones found by FFT, saturation without wrap-around, parties joining and leaving."""

from __future__ import annotations

from collections.abc import Callable, Hashable

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.mixer import AudioMixer, MixerError, Party, Role

Samples = npt.NDArray[np.int16]
RATE = 8000
SIZE = 160


def tone(frequency: float, amplitude: float = 8000.0, rate: int = RATE) -> Samples:
    t = np.arange(rate // 50) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.int16)


def level(frame: Samples, frequency: float, rate: int = RATE) -> float:
    """The magnitude of `frequency` in one frame, relative to full scale (an FFT bin)."""
    spectrum = np.abs(np.fft.rfft(frame.astype(np.float64))) / (len(frame) / 2) / 32768
    return float(spectrum[round(frequency * len(frame) / rate)])


def noise(seed: int, amplitude: int = 1000) -> Samples:
    return np.random.default_rng(seed).integers(-amplitude, amplitude, SIZE, dtype=np.int16)


def reference(mixer: AudioMixer, frames: dict[Hashable, Samples | None]) -> dict[Hashable, Samples]:
    """The brute force: each listener sums, in int64, the frames `hears()` allows, then clips."""
    out = {}
    for listener in mixer:
        total = np.zeros(mixer.frame_size, np.int64)
        for speaker in mixer:
            frame = frames.get(speaker)
            if frame is not None and mixer.hears(listener, speaker):
                total += frame
        out[listener] = np.clip(total, -32768, 32767).astype(np.int16)
    return out


def conference(*parties: Hashable, rate: int = RATE) -> AudioMixer:
    mixer = AudioMixer(rate)
    for party in parties:
        mixer.add(party)
    return mixer


def test_everyone_hears_everyone_else_and_never_itself() -> None:
    mixer = conference("a", "b", "c", "d")
    frames: dict[Hashable, Samples | None] = {p: noise(i) for i, p in enumerate("abcd")}
    mixed = mixer.mix(frames)
    for party in "abcd":
        others = [frame for p, frame in frames.items() if p != party and frame is not None]
        assert np.array_equal(mixed[party], np.sum(others, axis=0, dtype=np.int32))
        assert mixed[party].dtype == np.int16 and mixed[party].shape == (SIZE,)
    assert not mixer.matrix().diagonal().any()


def test_tones_of_two_parties_are_both_in_a_third_mix_and_not_in_their_own() -> None:
    mixer = conference("caller", "agent", "supervisor", rate=16000)
    frames: dict[Hashable, Samples | None] = {
        "caller": tone(500, rate=16000),
        "agent": tone(1250, rate=16000),
        "supervisor": None,
    }
    mixed = mixer.mix(frames)
    assert level(mixed["supervisor"], 500, 16000) > 0.2
    assert level(mixed["supervisor"], 1250, 16000) > 0.2
    assert level(mixed["caller"], 500, 16000) < 0.001
    assert level(mixed["caller"], 1250, 16000) > 0.2
    assert level(mixed["agent"], 1250, 16000) < 0.001
    assert level(mixed["agent"], 500, 16000) > 0.2


def test_a_whisper_is_heard_only_by_its_target() -> None:
    mixer = conference("caller", "agent")
    mixer.add("supervisor", Role.WHISPER, target="agent")
    frames: dict[Hashable, Samples | None] = {
        "caller": tone(500),
        "agent": tone(1000),
        "supervisor": tone(2000),
    }
    mixed = mixer.mix(frames)
    assert level(mixed["agent"], 2000) > 0.2
    assert level(mixed["agent"], 500) > 0.2
    assert level(mixed["caller"], 2000) < 0.001
    assert level(mixed["caller"], 1000) > 0.2
    assert level(mixed["supervisor"], 500) > 0.2
    assert level(mixed["supervisor"], 1000) > 0.2
    assert mixer.party("supervisor") == Party(Role.WHISPER, "agent")


def test_a_listener_hears_everyone_and_is_heard_by_nobody() -> None:
    mixer = conference("caller", "agent")
    mixer.add("supervisor", Role.LISTEN)
    frames: dict[Hashable, Samples | None] = {
        "caller": tone(500),
        "agent": tone(1000),
        "supervisor": tone(2000),
    }
    mixed = mixer.mix(frames)
    for party in ("caller", "agent"):
        assert level(mixed[party], 2000) < 0.001
    assert level(mixed["supervisor"], 500) > 0.2
    assert level(mixed["supervisor"], 1000) > 0.2
    assert level(mixed["supervisor"], 2000) < 0.001


def test_listen_then_whisper_then_barge_changes_who_hears_the_supervisor() -> None:
    mixer = conference("caller", "agent")
    mixer.add("supervisor", Role.LISTEN)
    frames: dict[Hashable, Samples | None] = {"supervisor": tone(2000)}

    def heard() -> set[str]:
        mixed = mixer.mix(frames)
        return {p for p in ("caller", "agent") if level(mixed[p], 2000) > 0.2}

    assert heard() == set()
    mixer.set_role("supervisor", Role.WHISPER, target="agent")
    assert heard() == {"agent"}
    mixer.set_role("supervisor", Role.BARGE)
    assert heard() == {"caller", "agent"}
    assert mixer.party("supervisor").target is None


def test_a_muted_party_hears_and_is_not_heard() -> None:
    mixer = conference("a", "b", "c")
    mixer.set_muted("a")
    frames: dict[Hashable, Samples | None] = {"a": tone(500), "b": tone(1000)}
    mixed = mixer.mix(frames)
    assert level(mixed["c"], 500) < 0.001 and level(mixed["c"], 1000) > 0.2
    assert level(mixed["a"], 1000) > 0.2
    mixer.set_muted("a", False)
    assert level(mixer.mix(frames)["c"], 500) > 0.2


def test_an_override_adds_or_removes_one_pair() -> None:
    mixer = conference("a", "b", "c")
    mixer.add("l", Role.LISTEN)
    mixer.set_hears("c", "l", True)
    mixer.set_hears("b", "a", False)
    frames: dict[Hashable, Samples | None] = {p: noise(i) for i, p in enumerate("abcl")}
    assert mixer.hears("c", "l") and not mixer.hears("a", "l")
    assert not mixer.hears("b", "a") and mixer.hears("c", "a")
    mixed = mixer.mix(frames)
    for party, expected in reference(mixer, frames).items():
        assert np.array_equal(mixed[party], expected)
    mixer.set_hears("b", "a", None)
    assert mixer.hears("b", "a")


def test_sums_saturate_instead_of_wrapping_around() -> None:
    mixer = conference("a", "b", "c", "d")
    loud = np.full(SIZE, 30000, np.int16)
    mixed = mixer.mix({"a": loud, "b": loud, "c": -loud, "d": None})
    assert np.all(mixed["d"] == 30000)
    assert np.all(mixed["c"] == 32767)
    mixed = mixer.mix({"a": -loud, "b": -loud, "c": np.full(SIZE, -32768, np.int16)})
    assert np.all(mixed["d"] == -32768)
    assert np.all(mixed["a"] == -32768)


def test_missing_and_none_frames_are_silence() -> None:
    mixer = conference("a", "b", "c")
    mixed = mixer.mix({"a": None})
    assert all(not frame.any() for frame in mixed.values())
    mixed = mixer.mix({"b": tone(1000)})
    assert not mixed["b"].any() and np.array_equal(mixed["a"], tone(1000))


def test_parties_join_and_leave_between_ticks() -> None:
    mixer = conference("a", "b")
    assert np.array_equal(mixer.mix({"a": tone(500)})["b"], tone(500))
    mixer.add("c")
    mixed = mixer.mix({"a": tone(500), "c": tone(1000)})
    assert level(mixed["b"], 500) > 0.2 and level(mixed["b"], 1000) > 0.2
    mixer.remove("a")
    assert "a" not in mixer and len(mixer) == 2
    mixed = mixer.mix({"c": tone(1000)})
    assert set(mixed) == {"b", "c"}
    assert np.array_equal(mixed["b"], tone(1000))
    with pytest.raises(MixerError, match=r"^frame of an unknown party$"):
        mixer.mix({"a": tone(500)})
    mixer.add("a")
    assert np.array_equal(mixer.mix({"a": tone(500)})["b"], tone(500))


def test_a_whisper_to_a_party_that_left_becomes_a_listen() -> None:
    mixer = conference("caller", "agent")
    mixer.add("supervisor", Role.WHISPER, target="agent")
    mixer.set_hears("caller", "supervisor", False)
    mixer.remove("agent")
    mixed = mixer.mix({"supervisor": tone(2000), "caller": tone(500)})
    assert not mixed["caller"].any()
    assert np.array_equal(mixed["supervisor"], tone(500))
    assert mixer.party("supervisor") == Party(Role.LISTEN)
    mixer.add("agent")
    assert not mixer.mix({"supervisor": tone(2000)})["agent"].any()


def test_returned_mixes_are_not_reused_by_the_next_tick() -> None:
    mixer = conference("a", "b")
    first = mixer.mix({"a": tone(500)})["b"]
    kept = first.copy()
    mixer.mix({"a": tone(1000)})
    assert np.array_equal(first, kept)


def test_a_lone_party_hears_silence() -> None:
    mixer = conference("a")
    assert not mixer.mix({"a": tone(500)})["a"].any()
    assert AudioMixer().mix({}) == {}


@pytest.mark.parametrize(("rate", "size"), [(8000, 160), (16000, 320), (48000, 960)])
def test_frame_size_follows_the_rate(rate: int, size: int) -> None:
    mixer = conference("a", "b", rate=rate)
    assert mixer.frame_size == size
    assert mixer.mix({"a": tone(440, rate=rate)})["b"].shape == (size,)
    with pytest.raises(MixerError, match=r"^frame has the wrong length$"):
        mixer.mix({"a": np.zeros(size + 1, np.int16)})


def test_misuse_is_refused_with_a_reason() -> None:
    mixer = conference("a", "b")
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: AudioMixer(44100), "unsupported sample rate"),
        (lambda: AudioMixer(8000, 0), "unsupported packet time"),
        (lambda: mixer.add("a"), "party is already in the mixer"),
        (lambda: mixer.add("w", Role.WHISPER), "a whisper needs a target"),
        (lambda: mixer.add("w", Role.WHISPER, target="z"), "unknown party"),
        (lambda: mixer.set_role("a", Role.WHISPER, target="a"), "a party cannot whisper to itself"),
        (lambda: mixer.remove("z"), "unknown party"),
        (lambda: mixer.set_muted("z"), "unknown party"),
        (lambda: mixer.set_hears("a", "a", True), "a party cannot hear itself"),
        (lambda: mixer.hears("a", "z"), "unknown party"),
    ]
    for call, message in cases:
        with pytest.raises(MixerError, match=f"^{message}$"):
            call()
    assert set(mixer) == {"a", "b"}


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(list(Role)), st.booleans(), st.integers(0, 7), st.integers(0, 2)),
        min_size=1,
        max_size=8,
    ),
    st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7), st.booleans()), max_size=6),
    st.integers(0, 2**32 - 1),
    st.sampled_from([0, 20]),
)
def test_any_roles_mutes_and_overrides_mix_as_the_brute_force_does(
    parties: list[tuple[Role, bool, int, int]],
    overrides: list[tuple[int, int, bool]],
    seed: int,
    extra: int,
) -> None:
    """With 20 `extra` plain participants or none, so that both ways of mixing (the product, and
    the sum of public speakers with a residual) are checked."""
    count = len(parties)
    mixer = AudioMixer()
    for number in range(count):
        mixer.add(number)
    for number in range(extra):
        mixer.add(f"extra {number}")
    for number, (role, muted, target, _) in enumerate(parties):
        target %= count
        if role is Role.WHISPER and target == number:
            continue
        mixer.set_role(number, role, target=target)
        mixer.set_muted(number, muted)
    for listener, speaker, hears in overrides:
        if listener % count != speaker % count:
            mixer.set_hears(listener % count, speaker % count, hears)
    rng = np.random.default_rng(seed)
    frames: dict[Hashable, Samples | None] = {}
    for number, (*_, kind) in enumerate(parties):
        if kind == 1:
            frames[number] = rng.integers(-32768, 32767, SIZE, dtype=np.int16, endpoint=True)
        elif kind == 2:
            frames[number] = None
    for number in range(extra):
        frames[f"extra {number}"] = rng.integers(-3000, 3000, SIZE, dtype=np.int16)
    mixed = mixer.mix(frames)
    expected = reference(mixer, frames)
    assert mixed.keys() == expected.keys()
    for party in mixed:
        assert np.array_equal(mixed[party], expected[party])


def test_a_large_conference_with_every_role_mixes_as_the_brute_force_does() -> None:
    mixer = conference(*range(20))
    mixer.add("listener", Role.LISTEN)
    mixer.add("whisperer", Role.WHISPER, target=3)
    mixer.set_muted(5)
    mixer.set_hears(7, 8, False)
    mixer.set_hears(9, "listener", True)
    frames: dict[Hashable, Samples | None] = {p: noise(n) for n, p in enumerate(mixer)}
    frames[11] = None
    mixed = mixer.mix(frames)
    for party, expected in reference(mixer, frames).items():
        assert np.array_equal(mixed[party], expected)
