"""ngctl and nghook against a graph daemon: the graph outlives each one-shot ngctl, several
clients share it, and the output is the same as with ngctl's own graph."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest
import trio

from netgraph.daemon import Daemon, serve
from ngctl.main import EX_OSERR

ROOT = Path(__file__).parent.parent
PROMPT = r"\+(\x08\x1b\[2C| )"


@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    return tmp_path / "ng.sock"


@pytest.fixture
async def daemon(sock_path: Path, nursery: trio.Nursery) -> Daemon:
    started: Daemon = await nursery.start(serve, sock_path)
    return started


async def run(module: str, *args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    with trio.fail_after(60):
        proc = await trio.run_process(
            [sys.executable, "-m", module, *args], stdin=stdin, capture_stdout=True,
            capture_stderr=True, check=False, cwd=ROOT,
        )  # fmt: skip
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


async def ngctl(sock: Path, *args: str, stdin: str = "") -> tuple[int, str, str]:
    return await run("ngctl", "-s", str(sock), *args, stdin=stdin.encode())


async def test_the_graph_outlives_one_shot_ngctl(daemon: Daemon, sock_path: Path) -> None:
    script = "mkpeer hub h in\nmsg h setpersistent\nname h hub1\nmkpeer hub1: echo e x\n"
    assert await ngctl(sock_path, "-n", "builder", "-f", "-", stdin=script) == (0, "", "")
    code, out, err = await ngctl(sock_path, "-n", "viewer", "show", "hub1:")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "  Name: hub1            Type: hub             ID: 00000002   Num hooks: 1",
        "  Local hook      Peer name       Peer type    Peer ID         Peer hook      ",
        "  ----------      ---------       ---------    -------         ---------      ",
        "  e               <unnamed>       echo         00000003        x              ",
    ]
    code, out, _ = await ngctl(sock_path, "msg", "hub1:", "nodeinfo")
    assert out.splitlines() == [
        'Rec\'d response "nodeinfo" (805306374) from "[2]:":',
        'Args:\t{ name="hub1" type="hub" id=0x2 hooks=1 }',
    ]
    code, out, _ = await ngctl(sock_path, "list")
    assert out.splitlines()[0] == "There are 3 total nodes:"  # hub, echo, and this ngctl


async def test_errors_and_exit_codes_through_the_daemon(daemon: Daemon, sock_path: Path) -> None:
    code, _, err = await ngctl(sock_path, "-f", "-", stdin="connect . . a b\nconnect . . a b\n")
    assert code == EX_OSERR
    assert err.splitlines()[0] == "ngctl: send msg: File exists"
    assert err.splitlines()[-1] == "ngctl: line 2: error in file"
    code, _, err = await ngctl(sock_path, "shutdown", "nosuch:")
    assert (code, err.splitlines()[0]) == (EX_OSERR, "ngctl: shutdown: No such file or directory")
    line = 'msg . mkpeer { type="hub" ourhook="h" peerhook="in"'
    code, _, err = await ngctl(sock_path, "-f", "-", stdin=line + "\n")
    assert code == EX_OSERR
    assert err.splitlines()[0] == "ngctl: send msg: Invalid argument"
    assert err.splitlines()[1].startswith(f"ngctl: column {len(line) + 1}: unexpected end")


async def test_two_ngctl_names_collide(daemon: Daemon, sock_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        first = trio.Event()

        async def holder() -> None:
            await ngctl(sock_path, "-n", "taken", "-f", "-", stdin="")
            first.set()

        nursery.start_soon(holder)
        await first.wait()
    # The first has gone, its node too: the name is free again.
    code, out, _ = await ngctl(sock_path, "-n", "taken", "show", "-n", ".")
    assert code == 0
    assert "Name: taken" in out


async def test_nghook_relays_through_the_daemon(daemon: Daemon, sock_path: Path) -> None:
    script = "mkpeer hub h in\nmsg h setpersistent\nname h hub1\nmkpeer hub1: echo e x\n"
    assert (await ngctl(sock_path, "-f", "-", stdin=script))[0] == 0
    code, out, err = await run("ngctl.nghook", "-s", str(sock_path), "hub1:", "y",
                               stdin=b"hello\n")  # fmt: skip
    assert (code, out, err) == (0, "hello\n", "")
    code, out, err = await run("ngctl.nghook", "-a", "-s", str(sock_path), "hub1:", "y",
                               stdin=b"AB")  # fmt: skip
    assert out == "0000:  41 42" + " " * 44 + "AB" + " " * 14 + "\n\n"
    assert code == 0
    code, out, err = await run("ngctl.nghook", "-s", str(sock_path), "-m",
                               'name { name="renamed" }', "hub1:", "z", stdin=b"")  # fmt: skip
    assert code == 0
    _, out, _ = await ngctl(sock_path, "show", "-n", "renamed:")
    assert "Name: renamed" in out


async def test_nghook_in_its_own_graph() -> None:
    code, out, err = await run("ngctl.nghook", ".", "x", stdin=b"loop\n")
    assert (code, out, err) == (0, "loop\n", "")
    code, _, err = await run("ngctl.nghook")
    assert code == 64
    assert "usage: nghook" in err


def test_interactive_ngctl_on_a_daemon(tmp_path: Path) -> None:
    """A real daemon process and an interactive ngctl on a pseudo-terminal attached to it."""
    sock = tmp_path / "ng.sock"
    daemon = pexpect.spawn(sys.executable, ["-m", "netgraph", "serve", "--socket", str(sock)],
                           cwd=str(ROOT), encoding="utf-8", timeout=20)  # fmt: skip
    env = dict(os.environ, NGCTL_HISTORY=str(tmp_path / "h"), PROMPT_TOOLKIT_NO_CPR="1")
    try:
        for _ in range(400):
            if sock.exists():
                break
            daemon.expect(pexpect.TIMEOUT, timeout=0.05)
        child = pexpect.spawn(sys.executable, ["-m", "ngctl", "-s", str(sock), "-n", "tty"],
                              cwd=str(ROOT), env=env, encoding="utf-8", timeout=20)  # fmt: skip
        child.expect("Available commands:")
        child.expect(PROMPT)
        child.sendline("mkpeer echo e x")
        child.expect(PROMPT)
        child.sendline("write e 1 2 3")
        child.expect_exact('Rec\'d data packet on hook "e":')
        child.expect_exact("0000:  01 02 03")
        child.sendline("msg e nodeinfo")
        child.expect_exact('Args:\t{ type="echo" id=0x2 hooks=1 }')
        child.expect(PROMPT)
        # Data that arrives while a line is half typed prints above it; the line survives.
        child.sendline("mkpeer hub h in")
        child.expect(PROMPT)
        child.sendline("name h hub1")
        child.expect(PROMPT)
        child.send("show")
        child.expect("show")
        nghook = [sys.executable, "-m", "ngctl.nghook", "-s", str(sock), "hub1:", "x"]
        subprocess.run(nghook, input=b"idle data", check=True, cwd=ROOT, timeout=30)
        child.expect_exact('Rec\'d data packet on hook "h":')
        child.expect_exact("idle data")
        child.sendline(" -n .")
        child.expect("Name: tty")
        child.expect(PROMPT)
        child.sendcontrol("d")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
    finally:
        daemon.kill(15)
        daemon.expect(pexpect.EOF)
        daemon.close()
    assert daemon.exitstatus == 0
    assert not sock.exists()
