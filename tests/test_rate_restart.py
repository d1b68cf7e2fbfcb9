"""A kill -9 and a rerun at once against Userpilot's 600 requests a minute: the rerun reads
the starts the killed run left in the state directory and waits for the window, so the mock
(a real process, which counts every arrival per key and endpoint family) never sees more than
600 in a minute, and never answers 429. Before, the rerun pushed the API past the limit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_userpilot_e2e import mock_server
from test_userpilot_kill import DEADLINE_S, env, wait_for

from importer.state.layout import RATE_WINDOW_NAME

ROWS = 800
KILLED_AFTER = 300
MAPPING = """\
destination = "userpilot"
action = "track"

[fields]
user_id = "user_id"
event_name = "event"
"metadata.row" = "row"
"""


@pytest.mark.long(seconds=70)  # waits out a real 60 s window
def test_a_rerun_right_after_a_kill_honours_the_window_the_killed_run_filled(
    tmp_path: Path,
) -> None:
    events, mapping, state = tmp_path / "events.csv", tmp_path / "track.toml", tmp_path / "st"
    lines = ["user_id,event,row"] + [f"u{i % 97},viewed_page,r{i:05d}" for i in range(ROWS)]
    events.write_text("\n".join(lines) + "\n")
    mapping.write_text(MAPPING)
    with mock_server(tmp_path) as mock:
        # --rate above the limit: the window alone holds a run to 600 a minute.
        command = [
            sys.executable, "-m", "importer", "run", str(events), "--mapping", str(mapping),
            "--endpoint", mock.url, "--state", str(state), "--rate", "200", "--quiet",
        ]  # fmt: skip
        killed = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env()
        )
        try:
            wait_for(mock, lambda stats: stats["accepted"] >= KILLED_AFTER, killed)
            killed.kill()
            killed.communicate(timeout=DEADLINE_S)
        finally:
            if killed.poll() is None:
                killed.kill()
                killed.communicate()
        before = mock.stats()["requests"]
        assert KILLED_AFTER <= before < 600  # the window has room left, but not for the rest
        rerun = subprocess.run(
            command, capture_output=True, text=True, env=env(), timeout=4 * DEADLINE_S, check=False
        )
        stats = mock.stats()
    assert rerun.returncode == 0, rerun.stderr
    assert stats["window_peak"] <= 600
    assert "429" not in stats["by_status"]
    assert stats["accepted"] >= ROWS  # every row; a few the kill cut off twice
    assert "track " in (state / RATE_WINDOW_NAME).read_text()
