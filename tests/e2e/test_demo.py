"""The README's walk-through, as `make demo` runs it: scripts/demo.sh twice in a row against one
temporary ``pocketpay up`` on SQLite. The second run finds Alice and Bob signed up and their
wallets full, so it logs in and checks every amount relative to what the first run left.

The script needs curl and jq: without them the test skips (fails under
POCKETPAY_REQUIRE_SERVICES=1, as in CI, where .ci/run installs jq).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "demo.sh"


def _tools_or_skip() -> None:
    missing = [tool for tool in ("bash", "curl", "jq") if shutil.which(tool) is None]
    if not missing:
        return
    reason = f"scripts/demo.sh needs {', '.join(missing)} (Debian: apt-get install jq curl)"
    if os.environ.get("POCKETPAY_REQUIRE_SERVICES") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def test_walkthrough_runs_twice_in_a_row(tmp_path: Path) -> None:
    _tools_or_skip()
    env = os.environ | {
        "DEMO_VAR_DIR": str(tmp_path / "var"),
        "POCKETPAY_BIN": str(Path(sys.executable).with_name("pocketpay")),
        "PYTHON_BIN": sys.executable,
    }
    done = subprocess.run(
        ["bash", str(SCRIPT), "--server", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=220,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert output.count("demo: OK") == 2, output[-4000:]
    assert "demo: 2 runs in a row passed" in output
    # The first run signs the users up, the second logs them in and starts from what the first left.
    assert output.count("alice@example.com signed up") == 1
    assert output.count("alice@example.com exists: logged in") == 1
    assert "Alice: 0.00 -> 45.00 USD" in output
    # Each run Alice then pays 5.00 out to her bank account (it is paid and leaves the wallet),
    # and tops up 20.00 that the cardholder disputes: held, then won back with her evidence.
    assert "Alice: 60.00 -> 105.00 USD" in output
    assert output.count("Alice's wallet: 40.00 USD available") == 2  # paid out; then held
    assert output.count("Alice's wallet: 60.00 USD available") == 1  # won back
    assert output.count("Alice's wallet: 100.00 USD available") == 2
    assert output.count("Alice's wallet: 120.00 USD available") == 1
    assert len(re.findall(r"dispute dp_\w+: won", output)) == 2
    # Each run Bob also converts 5.00 USD to yen, once: a second conversion of the quote is 409.
    assert "Bob:   15.00 -> 35.00 USD" in output
    assert output.count("the same quote again: 409 fx.quote_already_converted") == 2
    assert "the revoked key: 401 auth.api_key_revoked" in output
    assert "FAILED" not in output
    # The server is stopped once the runs are over: nothing listens on its port any more.
    started = re.search(r"pocketpay up on http://127\.0\.0\.1:(\d+)", output)
    assert started is not None, output[:2000]
    port = int(started.group(1))
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
