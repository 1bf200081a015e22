"""``scripts/audit.sh``: fails on a known vulnerable pin, passes (saying so) when it cannot check.

A stand-in for the OSV query API (``POST /v1/query``, OSV schema 1.x) on 127.0.0.1 knows one
advisory, so the failing path is tested without a network; one more test asks the real
service and skips, with the reason, where it cannot be reached.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]
ADVISORY = {
    "schema_version": "1.6.0",
    "id": "GHSA-x84v-xcm2-53pg",
    "aliases": ["CVE-2018-18074"],
    "summary": "Insufficiently Protected Credentials in Requests",
    "affected": [
        {
            "package": {"name": "requests", "ecosystem": "PyPI"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.20.0"}]}],
        }
    ],
}


class OsvStandIn(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        known = query["package"]["name"] == "requests" and query["version"] == "2.19.0"
        body = json.dumps({"vulns": [ADVISORY]} if known else {}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def osv_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), OsvStandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/query"
    server.shutdown()
    server.server_close()


def audit(requirements: Path, service: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "scripts/audit.sh", str(requirements)],
        cwd=ROOT,
        env={**os.environ, "AUDIT_SERVICE_ARGS": service},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def vulnerable(tmp_path: Path) -> Path:
    path = tmp_path / "vulnerable.txt"
    path.write_text("requests==2.19.0\nidna==3.10\n")
    return path


def test_a_known_vulnerable_pin_fails_the_audit(vulnerable: Path, osv_url: str) -> None:
    result = audit(vulnerable, f"-s osv --osv-url {osv_url}")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "requests==2.19.0: CVE-2018-18074 (fixed in 2.20.0)" in result.stdout
    assert "FAILED" in result.stderr


def test_clean_pins_pass(tmp_path: Path, osv_url: str) -> None:
    clean = tmp_path / "clean.txt"
    clean.write_text("requests==2.32.5\nidna==3.10\n")
    result = audit(clean, f"-s osv --osv-url {osv_url}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no known vulnerabilities in 2 pins" in result.stdout


def test_an_unreachable_service_does_not_fail_the_run(vulnerable: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1/query"
    result = audit(vulnerable, f"-s osv --osv-url {closed}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SKIPPED: the vulnerability service could not be reached" in result.stdout


def test_the_real_service_flags_a_known_vulnerable_pin(vulnerable: Path) -> None:
    result = audit(vulnerable)
    if "SKIPPED" in result.stdout:
        pytest.skip(f"the vulnerability service cannot check here: {result.stdout.strip()}")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "requests==2.19.0" in result.stdout


def test_the_lock_files_pin_every_requirement_with_hashes() -> None:
    for name in ("requirements.lock", "requirements-dev.lock"):
        text = (ROOT / name).read_text()
        assert "make lock" in text, name
        pins = [line for line in text.splitlines() if "==" in line and not line.startswith("#")]
        assert pins, name
        hashed = text.count(" \\\n    --hash=sha256:")
        assert hashed >= len(pins), name
