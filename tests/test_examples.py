"""The README's example and the demo run as documented."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import trio

ROOT = Path(__file__).parent.parent


def test_readme_example_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    code = re.findall(r"```python\n(.*?)```", readme, re.S)[0]
    assert "trio.run(main)" in code
    namespace: dict[str, object] = {"__name__": "readme_example"}
    exec(compile(code.replace("trio.run(main)", ""), "README.md", "exec"), namespace)
    trio.run(namespace["main"])  # type: ignore[arg-type]


def test_readme_opens_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    first_block = re.findall(r"```sh\n(.*?)```", readme, re.S)[0].splitlines()
    assert first_block[0].startswith("make demo")
    assert first_block[1].startswith("make test")
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


def test_demo_script_builds_and_counts() -> None:
    """ngctl runs examples/demo.ngctl."""
    out = subprocess.run(
        [sys.executable, "-m", "ngctl", "-n", "demo", "-f", "examples/demo.ngctl"],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout.splitlines()
    assert out[0] == "There are 6 total nodes:"
    assert "Args:\t{ frames=2 octets=9 }" in out
    assert "Args:\t{ frames=2 octets=4 }" in out
    assert out[-1] == "Args:\t{ frames=4 octets=13 }"


def test_demo_prints_what_arrived_and_the_statistics() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py")],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    assert "arrived on hook 'ping': b'hello, echo'" in out
    assert "right      in 8 frames / 62 octets" in out
    assert "sink0  4 frames / 31 octets" in out
    assert "sink1  4 frames / 31 octets" in out
    assert "tap    8 frames / 62 octets" in out
