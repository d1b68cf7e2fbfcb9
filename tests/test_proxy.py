"""Proxies: HTTPS_PROXY carries the requests to a remote API unless NO_PROXY names its host, and
loopback never goes through a proxy. A recording proxy on 127.0.0.1 stands in for a company's:
it answers every request 403 after noting its first line, so nothing leaves the machine."""

from __future__ import annotations

import json
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from pipeline_helpers import write_csv

from importer.cli.app import main
from importer.delivery.proxy import _proxy, proxy_for
from importer.errors import MappingError

PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy")
# .invalid never resolves (RFC 2606): through a proxy the client does not look the host up.
REMOTE = "https://track.vero.invalid"


@pytest.fixture(autouse=True)
def _no_proxy_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)


class _Recorder(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        first = self.rfile.readline().decode("latin-1").strip()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass  # the rest of the head
        self.server.seen.append(first)  # type: ignore[attr-defined]
        self.wfile.write(
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )


@pytest.fixture
def proxy() -> Iterator[tuple[str, list[str]]]:
    """A recording proxy on a free loopback port: its URL, and the request lines it saw."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Recorder)
    server.daemon_threads = True
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.seen  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_the_proxy_comes_from_https_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://ann:s%40cret@proxy.example:3128")
    assert proxy_for(REMOTE) == "http://proxy.example:3128"  # credentials never shown
    assert _proxy(REMOTE)[1] == ("ann", "s@cret")


def test_no_proxy_and_loopback_go_direct(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "vero.invalid,.internal.example")
    assert proxy_for(REMOTE) is None
    assert proxy_for("https://api.internal.example/v1") is None
    assert proxy_for("https://api.getvero.com/api/v2") == "http://proxy.example:3128"
    monkeypatch.delenv("NO_PROXY")
    for loopback in ("http://127.0.0.1:8080", "http://localhost:1", "http://[::1]:9"):
        assert proxy_for(loopback) is None


def test_a_proxy_over_tls_is_refused_without_showing_its_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "https://ann:hunter2@proxy.example:3128")
    with pytest.raises(MappingError) as raised:
        proxy_for(REMOTE)
    assert "https://proxy.example:3128" in str(raised.value)
    assert "hunter2" not in str(raised.value) + str(raised.value.hint)


def test_a_proxy_over_tls_stops_the_run_before_anything_is_read(tmp_path: Path) -> None:
    code, output, _ = _run(
        tmp_path, REMOTE, {"HTTPS_PROXY": "https://ann:hunter2@proxy.example:3128"}
    )
    assert code == 1
    assert "only http:// proxies are supported" in output
    assert "hunter2" not in output


def _run(tmp_path: Path, endpoint: str, env: dict[str, str]) -> tuple[int, str, dict | None]:
    rows = write_csv(
        tmp_path,
        "user_id,email,event,occurred_at",
        "u1,a@example.com,Login,2023-05-30T10:00:00Z",
        "u2,b@example.com,Login,2023-05-30T11:00:00Z",
    )
    report = tmp_path / "report.json"
    result = CliRunner(env={"VERO_AUTH_TOKEN": "tok-proxy-test", **env}).invoke(
        main,
        [
            "run",
            str(rows),
            "--mapping",
            "vero-track",
            "--endpoint",
            endpoint,
            "--state",
            str(tmp_path / "state"),
            "--report",
            str(report),
            "--quiet",
            "--max-retries",
            "0",
        ],
        catch_exceptions=False,
    )
    return (
        result.exit_code,
        result.output,
        json.loads(report.read_text()) if report.exists() else None,
    )


def test_an_https_api_is_reached_through_https_proxy(
    tmp_path: Path, proxy: tuple[str, list[str]]
) -> None:
    url, seen = proxy
    code, output, report = _run(tmp_path, REMOTE, {"HTTPS_PROXY": url})
    assert report is not None
    assert "CONNECT track.vero.invalid:443 HTTP/1.1" in seen
    # the proxy refused: the run stops, nothing is marked delivered, and it says why
    assert code == 1, output
    assert report["rows_sent"] == 0
    assert "Error: " in output
    assert "ClientHttpProxyError: 403" in output


def test_loopback_never_goes_through_the_proxy(
    tmp_path: Path, proxy: tuple[str, list[str]]
) -> None:
    url, seen = proxy
    code, output, report = _run(
        tmp_path, "embedded", {"HTTPS_PROXY": url, "HTTP_PROXY": url, "ALL_PROXY": url}
    )
    assert code == 0, output
    assert report is not None
    assert report["rows_sent"] == 2
    assert seen == []
