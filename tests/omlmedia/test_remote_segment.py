"""The recording path an agent's node names in its 200 OK to a caller's node
(``X-Oml-Recording``) is taken only when it is one `reserve_segment` makes: relative to the shared
recordings directory, ``YYYY/MM/DD/<name>.opus|.wav``, bounded; anything else is refused (the
caller's record never names a file outside that directory)."""

from __future__ import annotations

from pathlib import Path

import pytest

from omlmedia.acd_cluster import MAX_REMOTE_SEGMENT, remote_segment
from omlmedia.recordings import reserve_segment


def test_the_paths_reserve_segment_makes_are_accepted(tmp_path: Path) -> None:
    stem = "2026/12/06/support-a84b4c76e66710_127.0.0.1"
    first = reserve_segment(tmp_path, stem)
    second = reserve_segment(tmp_path, stem)
    wav = reserve_segment(tmp_path, "2026/12/06/sales-x", ".wav")
    assert (first, second) == (f"{stem}.opus", f"{stem}-2.opus")
    for path in (first, second, wav):
        assert remote_segment(path) == path


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "/2026/12/06/support-x.opus",  # absolute
        "/etc/passwd",
        "2026/12/06/../../../etc/passwd.opus",  # climbs out
        "2026/12/06/..opus",
        "2026/12/06/.hidden.opus",
        "2026/12/06/sub/support-x.opus",  # deeper than the day's directory
        "2026/12/6/support-x.opus",  # not the date's pattern
        "26/12/06/support-x.opus",
        "2026/12/06/support-x.mp3",  # not a recording's suffix
        "2026/12/06/support-x.opus\r\nX: y",
        "2026/12/06/support x.opus",
        "2026\\12\\06\\support-x.opus",
        "2026/12/06/support-ü.opus",
        "2026/12/06/" + "x" * MAX_REMOTE_SEGMENT + ".opus",  # too long
    ],
)
def test_any_other_path_is_refused(value: str | None) -> None:
    assert remote_segment(value) is None
