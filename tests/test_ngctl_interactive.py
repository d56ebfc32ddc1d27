"""Interactive ngctl through a real pseudo-terminal (pexpect): prompt, editing, history,
completion, replies and data printed as they arrive, Ctrl-C and Ctrl-D."""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

ROOT = Path(__file__).parent.parent
# prompt_toolkit draws "+ " as "+", then moves the cursor two columns on.
PROMPT = r"\+(\x08\x1b\[2C| )"


def on_screen(text: str) -> str:
    """A pattern for ``text`` as the line editor draws it: escape sequences may come between
    the characters (a completion is drawn after the typed part)."""
    escapes = r"(?:\x1b\[[0-9;?]*[A-Za-z])*"
    return escapes.join(re.escape(ch) for ch in text)


@pytest.fixture
def ngctl(tmp_path: Path) -> Iterator[pexpect.spawn[str]]:
    env = dict(
        os.environ,
        NGCTL_HISTORY=str(tmp_path / "history"),
        TERM="xterm",
        # pexpect's terminal does not answer cursor-position requests; a real one does.
        PROMPT_TOOLKIT_NO_CPR="1",
    )
    child = pexpect.spawn(
        sys.executable, ["-m", "ngctl", "-n", "tty", "-t", "0.2"], cwd=str(ROOT), env=env,
        encoding="utf-8", timeout=15, dimensions=(40, 200),
    )  # fmt: skip
    child.expect("Available commands:")
    child.expect(PROMPT)
    try:
        yield child
    finally:
        if child.isalive():
            child.terminate(force=True)
        child.close()


def test_commands_and_replies(ngctl: pexpect.spawn[str]) -> None:
    ngctl.sendline("mkpeer echo e x")
    ngctl.expect(PROMPT)
    ngctl.sendline("msg . nodeinfo")
    ngctl.expect_exact('Rec\'d response "nodeinfo" (805306374) from "[1]:":')
    ngctl.expect_exact('Args:\t{ name="tty" type="socket" id=0x1 hooks=1 }')
    ngctl.expect(PROMPT)


def test_data_is_printed_as_it_arrives(ngctl: pexpect.spawn[str]) -> None:
    ngctl.sendline("mkpeer echo e x")
    ngctl.expect(PROMPT)
    ngctl.sendline("write e 0x41 0x42 3")
    ngctl.expect_exact('Rec\'d data packet on hook "e":')
    ngctl.expect_exact("0000:  41 42 03 ")
    ngctl.expect_exact("AB.")


def test_late_reply_does_not_garble_the_line(ngctl: pexpect.spawn[str]) -> None:
    """An echo node returns a message as a reply that ngctl did not wait for (``-t 0.2``
    and the echo's reply to its own reply); it is printed above the prompt."""
    ngctl.sendline("mkpeer hub h in")
    ngctl.expect(PROMPT)
    ngctl.sendline("mkpeer h echo e x")
    ngctl.expect(PROMPT)
    ngctl.send("show h")  # typed, not yet entered
    ngctl.sendcontrol("c")  # Ctrl-C drops the line
    ngctl.expect(PROMPT)
    ngctl.sendline("list")
    ngctl.expect("There are 3 total nodes:")
    ngctl.expect(PROMPT)


def test_sigint_from_outside_does_not_end_ngctl(ngctl: pexpect.spawn[str]) -> None:
    """A SIGINT that is not a key at the prompt (sent by kill, or arriving while a command runs
    and the terminal is not in raw mode) stops the running command, not ngctl."""
    ngctl.kill(signal.SIGINT)
    ngctl.sendline("list")
    ngctl.expect("There are 1 total nodes:")
    ngctl.expect(PROMPT)
    assert ngctl.isalive()


def test_tab_completion(ngctl: pexpect.spawn[str]) -> None:
    ngctl.sendline("mkpeer one2many mux one")
    ngctl.expect(PROMPT)
    ngctl.sendline("name mux themux")
    ngctl.expect(PROMPT)
    ngctl.send("sho\t")
    ngctl.expect(on_screen("show"))
    ngctl.send(" them\t")
    ngctl.expect(on_screen("themux:"))
    ngctl.sendline("")
    ngctl.expect("Name: themux")
    ngctl.expect(PROMPT)
    ngctl.send("msg themux: getco\t")
    ngctl.expect(on_screen("getconfig"))
    ngctl.sendline("")
    ngctl.expect_exact('Rec\'d response "getconfig"')
    ngctl.expect(PROMPT)


def test_history_and_ctrl_d(ngctl: pexpect.spawn[str], tmp_path: Path) -> None:
    ngctl.sendline("types")
    ngctl.expect("total types")
    ngctl.expect(PROMPT)
    ngctl.send("\x1b[A")  # up arrow recalls the last line
    ngctl.expect(on_screen("types"))
    ngctl.sendline("")
    ngctl.expect("total types")
    ngctl.expect(PROMPT)
    ngctl.sendcontrol("d")
    ngctl.expect(pexpect.EOF)
    ngctl.close()
    assert ngctl.exitstatus == 0
    assert "types" in (tmp_path / "history").read_text()


def test_errors_and_quit(ngctl: pexpect.spawn[str]) -> None:
    ngctl.sendline("s")
    ngctl.expect_exact('ngctl: "s": ambiguous command')
    ngctl.expect(PROMPT)
    ngctl.sendline("quit")
    ngctl.expect(pexpect.EOF)
    ngctl.close()
    assert ngctl.exitstatus == 0
