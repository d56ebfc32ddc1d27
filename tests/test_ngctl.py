"""ngctl: commands, output byte for byte (spec 5.4, section 8), errors and exit codes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import netgraph
from ngctl.commands import LookupProblem, Session, Status, lookup
from ngctl.main import EX_NOINPUT, EX_OSERR, EX_USAGE
from ngctl.output import hexdump
from tests.conftest import Capture

ROOT = Path(__file__).parent.parent


@pytest.fixture
async def ngctl() -> AsyncIterator[tuple[Session, Capture]]:
    async with netgraph.open_graph() as graph:
        cap = Capture()
        yield Session(graph.socket("ngctl1234"), printer=cap, msg_wait=1.0), cap


def run_cli(*args: str, stdin: str | None = None, cwd: Path | None = None) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "ngctl", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=60,
        check=False,
    )
    return proc.returncode, proc.stdout, proc.stderr


# ---------------------------------------------------------------------------- command lookup


@pytest.mark.parametrize(
    ("word", "command"),
    [("confi", "config"), ("conn", "connect"), ("de", "debug"), ("do", "dot"), ("mk", "mkpeer"),
     ("ms", "msg"), ("rmh", "rmhook"), ("rmn", "shutdown"), ("l", "list"), ("ls", "list"),
     ("i", "show"), ("inq", "show"), ("info", "show"), ("k", "shutdown"), ("kill", "shutdown"),
     ("j", "connect"), ("join", "connect"), ("g", "dot"), ("w", "write"), ("t", "types"),
     ("n", "name"), ("h", "help"), ("?", "help"), ("q", "quit"), ("e", "quit"),
     ("exit", "quit"), (".", "read"), ("source", "read"), ("sho", "show"), ("SHOW", "show"),
     ("cmd", "msg"), ("disconnect", "rmhook"), ("graphviz", "dot")],
)  # fmt: skip
def test_prefixes_resolve(word: str, command: str) -> None:
    assert lookup(word).name == command


@pytest.mark.parametrize("word", ["s", "sh", "c", "co", "con", "conf", "d", "m", "r", "rm"])
def test_ambiguous_prefixes(word: str) -> None:
    """As FreeBSD's MatchCommand has it: ``conf`` is also a prefix of dot's alias ``confdot``
    (spec 5.2's table says it means config; the code says it is ambiguous)."""
    with pytest.raises(LookupProblem, match=f'"{word}": ambiguous command'):
        lookup(word)


def test_unknown_command() -> None:
    with pytest.raises(LookupProblem, match='"frob": unknown command'):
        lookup("frob")


# ------------------------------------------------------------------------------------ output


async def test_show_list_types_byte_for_byte(ngctl: tuple[Session, Capture]) -> None:
    s, cap = ngctl
    for line in ("mkpeer hub h in", "name h fred", "mkpeer fred: hole x in", "connect . fred: b y"):
        assert await s.run_line(line) == Status.OK
    await s.run_line("show fred:")
    assert cap.take()[0] == [
        "  Name: fred            Type: hub             ID: 00000002   Num hooks: 3",
        "  Local hook      Peer name       Peer type    Peer ID         Peer hook      ",
        "  ----------      ---------       ---------    -------         ---------      ",
        "  y               ngctl1234       socket       00000001        b              ",
        "  x               <unnamed>       hole         00000003        in             ",
        "  in              ngctl1234       socket       00000001        h              ",
    ]
    await s.run_line("show -n [3]:")
    assert cap.take()[0] == [
        "  Name: <unnamed>       Type: hole            ID: 00000003   Num hooks: 1"
    ]
    await s.run_line("list")
    assert cap.take()[0] == [
        "There are 3 total nodes:",
        "  Name: ngctl1234       Type: socket          ID: 00000001   Num hooks: 2",
        "  Name: fred            Type: hub             ID: 00000002   Num hooks: 3",
        "  Name: <unnamed>       Type: hole            ID: 00000003   Num hooks: 1",
    ]
    await s.run_line("ls -n")
    assert cap.take()[0][0] == "There are 2 total named nodes:"
    await s.run_line("list -l")
    out = cap.take()[0]
    assert out[0] == "There are 3 total nodes:"
    assert out.count("") == 2  # a blank line between nodes
    await s.run_line("types")
    out = cap.take()[0]
    assert out[:3] == [
        "There are 11 total types:",
        "      Type name   Number of living nodes",
        "      ---------   ----------------------",
    ]
    assert "            hub       1" in out
    assert "           echo       0" in out


async def test_msg_prints_the_reply(ngctl: tuple[Session, Capture]) -> None:
    s, cap = ngctl
    await s.run_line("msg . nodeinfo")
    assert cap.take()[0] == [
        'Rec\'d response "nodeinfo" (805306374) from "[1]:":',
        'Args:\t{ name="ngctl1234" type="socket" id=0x1 }',  # hooks=0 is a default
    ]
    await s.run_line('msg . mkpeer { type="hole" ourhook="h" peerhook="in" }')
    await s.run_line('msg . rmhook { hook="h" }')
    assert cap.take() == ([], [])
    await s.run_line("mkpeer one2many o one")
    await s.run_line("msg o setconfig { xmitAlg=3 failAlg=1 enabledLinks=[ 1 1 ] }")
    await s.run_line("msg o getconfig")
    assert cap.take()[0] == [
        'Rec\'d response "getconfig" (1) from "[3]:":',
        "Args:\t{ xmitAlg=3 failAlg=1 enabledLinks=[ 1 1 ] }",
    ]
    await s.run_line("msg o listhooks")
    out = cap.take()[0]
    assert out[1] == (
        'Args:\t{ nodeinfo={ type="one2many" id=0x3 hooks=1 } linkinfo=[ { ourhook="one" '
        'peerhook="o" nodeinfo={ name="ngctl1234" type="socket" id=0x1 hooks=1 } } ] }'
    )
    await s.run_line("mkpeer hub hh in")
    await s.run_line("msg hh setpersistent")
    assert cap.take() == ([], [])


async def test_msg_keeps_the_rest_of_the_line(ngctl: tuple[Session, Capture]) -> None:
    """Spec 10.9: a quoted string keeps its inner spaces."""
    s, cap = ngctl
    await s.run_line('msg . name { name="two  spaces" }')
    await s.run_line("msg . nodeinfo")
    assert 'name="two  spaces"' in cap.take()[0][1]


async def test_status_and_config_without_support(ngctl: tuple[Session, Capture]) -> None:
    s, cap = ngctl
    await s.run_line("mkpeer hole h in")
    await s.run_line("name h fred")
    assert await s.run_line("status fred:") == Status.OK
    assert await s.run_line("config fred:") == Status.OK
    assert cap.take()[0] == [
        'No status available for "fred:"',
        'No config available for "fred:"',
    ]


async def test_help(ngctl: tuple[Session, Capture]) -> None:
    s, cap = ngctl
    await s.run_line("help")
    out = cap.take()[0]
    assert out[0] == "Available commands:"
    assert out[1].startswith("  config     ")
    assert [line.split()[0] for line in out[1:]] == [
        "config", "connect", "debug", "dot", "help", "list", "load", "mkpeer", "msg", "name",
        "read", "rmhook", "save", "show", "shutdown", "status", "types", "write", "quit",
    ]  # fmt: skip
    await s.run_line("help msg")
    out = cap.take()[0]
    assert out[0] == "usage:    msg path command [args ... ]"
    assert out[1] == "Aliases:  cmd"
    assert out[2].startswith("Summary:  Send a netgraph control message")
    assert out[3] == "Description:"
    assert all(line.startswith("  ") and len(line) <= 65 for line in out[4:])


async def test_debug(ngctl: tuple[Session, Capture]) -> None:
    s, cap = ngctl
    for line in ("debug", "debug +", "debug 5", "debug -"):
        await s.run_line(line)
    assert cap.take()[0] == [f"Current debug level is {n}" for n in (0, 1, 5, 4)]
    assert await s.run_line("debug -3") == Status.USAGE
    assert cap.take()[1] == ["ngctl: usage: debug [level]"]


async def test_write(ngctl: tuple[Session, Capture], tmp_path: Path) -> None:
    s, cap = ngctl
    await s.run_line("connect . . a b")
    assert await s.run_line("write a 0x45 0 0 28") == Status.OK
    assert await s.sock.recv_data() == ("b", bytes([0x45, 0, 0, 28]))
    assert await s.run_line("write a 300") == Status.ERROR
    assert cap.take()[1] == ['ngctl: invalid byte "300"']
    packet = tmp_path / "packet"
    packet.write_bytes(b"from a file")
    assert await s.run_line(f"write a -f {packet}") == Status.OK
    assert await s.sock.recv_data() == ("b", b"from a file")
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert await s.run_line(f"write a -f {empty}") == Status.ERROR
    assert cap.take()[1] == [f'ngctl: file "{empty}" is empty']


def test_hexdump_layout() -> None:
    assert hexdump(bytes(range(0x41, 0x41 + 18))) == [
        "0000:  41 42 43 44 45 46 47 48 49 4a 4b 4c 4d 4e 4f 50  ABCDEFGHIJKLMNOP",
        "0010:  51 52                                            QR              ",
    ]


# ------------------------------------------------------------------------------------ errors


async def test_errors_say_freebsds_line_then_ours(ngctl: tuple[Session, Capture]) -> None:
    s, cap = ngctl
    assert await s.run_line("connect . . a b") == Status.OK
    assert await s.run_line("connect . . a b") == Status.ERROR
    err = cap.take()[1]
    assert err[0] == "ngctl: send msg: File exists"
    assert err[1].startswith("ngctl: ")
    assert "already has hook" in err[1]
    assert await s.run_line("shutdown nosuch:") == Status.ERROR
    assert cap.take()[1][0] == "ngctl: shutdown: No such file or directory"
    assert await s.run_line("show nosuch") == Status.ERROR
    assert cap.take()[1][0] == "ngctl: send msg: No such file or directory"
    assert await s.run_line("name a [1f]") == Status.ERROR
    assert cap.take()[1][0] == "ngctl: send msg: Invalid argument"
    assert await s.run_line("msg . nolinger") == Status.ERROR
    assert cap.take()[1][0] == "ngctl: send msg: Function not implemented"


async def test_parse_errors_point_into_the_line(ngctl: tuple[Session, Capture]) -> None:
    s, cap = ngctl
    await s.run_line("mkpeer one2many o one")
    line = "msg o setconfig { xmitAlg=3 failAlg=1 enabledLinks=[ 1 1 }"
    assert await s.run_line(line) == Status.ERROR
    err = cap.take()[1]
    assert err[0] == "ngctl: send msg: Invalid argument"
    column = line.index("}", line.index("[")) + 1
    assert err[1].startswith(f"ngctl: column {column}: unexpected '}}'")
    assert err[2] == f"  {line}"
    assert err[3] == "  " + " " * (column - 1) + "^"
    await s.run_line("msg o setconfig { leve=1 }")
    err = cap.take()[1]
    assert err[0] == "ngctl: send msg: No such file or directory"
    assert "'leve'" in err[1]


async def test_usage_errors(ngctl: tuple[Session, Capture]) -> None:
    s, cap = ngctl
    assert await s.run_line("mkpeer hub") == Status.USAGE
    assert cap.take()[1] == ["ngctl: usage: mkpeer [path] <type> <hook> <peerhook>"]
    assert await s.run_line("show -x foo") == Status.USAGE
    assert await s.run_line("types extra") == Status.USAGE


async def test_files_stop_at_the_first_failure(ngctl: tuple[Session, Capture]) -> None:
    s, cap = ngctl
    status = await s.run_lines(
        ["# a comment", "   # an indented comment", "", "mkpeer hub h in", "frobnicate", "list"]
    )
    assert status == Status.ERROR
    out, err = cap.take()
    assert out == []
    assert err == ['ngctl: "frobnicate": unknown command', "ngctl: line 5: error in file"]


async def test_read_runs_a_file(ngctl: tuple[Session, Capture], tmp_path: Path) -> None:
    s, cap = ngctl
    script = tmp_path / "script"
    script.write_text("mkpeer hub h in\nname h fromfile\n")
    assert await s.run_line(f". {script}") == Status.OK
    await s.run_line("show -n fromfile:")
    assert cap.take()[0][0].startswith("  Name: fromfile        Type: hub")


async def test_dot_renders_with_graphviz(ngctl: tuple[Session, Capture], tmp_path: Path) -> None:
    dot = shutil.which("dot")
    if dot is None:
        pytest.skip("Graphviz's dot is not installed (make test installs it when run as root)")
    s, cap = ngctl
    await s.run_line("mkpeer hub h in")
    await s.run_argv(["name", "h", "my hub"])  # one argument with a space, as a shell gives it
    for line in ("connect . h x y", "mkpeer h tee t left",
                 "mkpeer hub lonely in", "msg lonely setpersistent", "rmhook lonely"):  # fmt: skip
        await s.run_line(line)
    await s.run_line("connect . . self1 self2")
    target = tmp_path / "g.dot"
    assert await s.run_line(f"dot {target}") == Status.OK
    assert cap.take() == ([], [])
    text = target.read_text()
    assert text.startswith("graph netgraph {\n\tedge [ weight = 1.0 ];\n")
    assert '"2" [ label = "{my hub:|{hub|[2]:}}" ];' in text
    assert "\\<unnamed\\>" in text
    assert 'subgraph cluster_disconnected {\n\t\tbgcolor = pink;\n\t\t"4";' in text
    svg = subprocess.run([dot, "-Tsvg", str(target)], capture_output=True, check=True).stdout
    assert b"<svg" in svg
    assert b"my hub" in svg


# ------------------------------------------------------------------------ the command line


def test_one_shot_and_exit_codes(tmp_path: Path) -> None:
    assert run_cli("mkpeer", "hub", "h", "in") == (0, "", "")
    code, out, err = run_cli("msg", ".", "nodeinfo")
    assert code == 0
    assert out.splitlines()[1].startswith('Args:\t{ name="ngctl')
    assert run_cli("frob")[0] == EX_OSERR
    code, _, err = run_cli("mkpeer", "hub")
    assert code == EX_USAGE
    assert "ngctl: usage: mkpeer [path] <type> <hook> <peerhook>" in err
    code, _, err = run_cli("-f", str(tmp_path / "missing"))
    assert code == EX_NOINPUT
    assert "No such file or directory" in err
    code, _, err = run_cli("-x")
    assert code == EX_USAGE
    code, _, err = run_cli()  # no command, and stdin is not a terminal
    assert (code, err.splitlines()[0]) == (EX_USAGE, "ngctl: no command specified")


def test_one_shot_takes_argv_as_is() -> None:
    """``ngctl msg O2M: setconfig "{ ... }"``: one quoted argument (spec 5.6), no re-split."""
    code, _out, err = run_cli("-n", "me", "msg", ".", "name", '{ name="a  b" }')
    assert (code, err) == (0, "")


def test_script_on_stdin() -> None:
    script = "mkpeer hub h in\nname h fred\nshow fred:\nconnect . . a b\nconnect . . a b\nlist\n"
    code, out, err = run_cli("-f", "-", stdin=script)
    assert code == EX_OSERR
    assert out.splitlines()[0].startswith("  Name: fred ")
    assert err.splitlines() == [
        "ngctl: send msg: File exists",
        err.splitlines()[1],
        "ngctl: line 5: error in file",
    ]


def test_default_name_is_ngctl_and_pid() -> None:
    code, out, _ = run_cli("show", "-n", ".")
    assert code == 0
    name = out.split()[1]
    assert name.startswith("ngctl")
    assert name[5:].isdigit()


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("ngctl")
    assert script.exists(), "pip install -e . puts ngctl beside python"
    proc = subprocess.run([str(script), "types"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0
    assert proc.stdout.startswith("There are ")
    assert os.access(script, os.X_OK)


async def test_spec_section_8_lines(ngctl: tuple[Session, Capture]) -> None:
    """The lines of spec section 8 that need no ksocket, each with its result."""
    s, cap = ngctl
    ok = Status.OK
    assert await s.run_line("mkpeer hub foo in") == ok
    assert await s.run_line("name foo fred") == ok  # 3
    assert await s.run_line('msg foo name { name="fred" }') == ok  # 4
    assert await s.run_line("name fred: fred") == ok  # 5
    assert await s.run_line("name foo [1f]") == Status.ERROR  # 6
    assert await s.run_line("name foo a.b") == Status.ERROR  # 7
    assert await s.run_line("connect fred: . x y") == ok  # 8: the hub to itself
    assert await s.run_line("rmhook . nosuchhook") == ok  # 12
    assert await s.run_line("disconnect fred: x") == ok  # 13 (alias of rmhook)
    assert await s.run_line("show nosuch") == Status.ERROR  # 16: a hook of ngctl's node
    assert await s.run_line("show -n fred:") == ok  # 18
    assert await s.run_line("status fred:") == ok  # 22
    assert await s.run_line("config fred:") == ok  # 23
    assert await s.run_line("s") == Status.ERROR  # 25
    assert await s.run_line("sho -n fred:") == ok  # 25
    assert await s.run_line("rmhook foo") == ok  # 11: the hub loses its last hook and goes
    assert await s.run_line("show fred:") == Status.ERROR
    assert await s.run_line("mkpeer hub a in") == ok
    for kill in ("shutdown", "kill", "rmnode"):  # 14
        await s.run_line("mkpeer hub k in")
        await s.run_line("name k victim")
        assert await s.run_line(f"{kill} victim:") == ok
    assert await s.run_line("shutdown nosuch:") == Status.ERROR  # 15
    out, err = cap.take()
    assert err == [
        "ngctl: send msg: Invalid argument",
        "ngctl: node name '[1f]' looks like a node ID",
        "ngctl: send msg: Invalid argument",
        "ngctl: node name 'a.b' contains '.'",
        "ngctl: send msg: No such file or directory",
        "ngctl: no hook 'nosuch' on ngctl1234:",
        'ngctl: "s": ambiguous command',
        "ngctl: send msg: No such file or directory",
        "ngctl: no node 'fred:'",
        "ngctl: shutdown: No such file or directory",
        "ngctl: no node 'nosuch:'",
    ]
    assert out == [
        "  Name: fred            Type: hub             ID: 00000002   Num hooks: 1",
        'No status available for "fred:"',
        'No config available for "fred:"',
        "  Name: fred            Type: hub             ID: 00000002   Num hooks: 1",
    ]


async def test_msg_waits_only_for_replies_that_come(autojump_clock: object) -> None:
    """A command whose cmdlist entry has no reply (bind, setconfig...) is not waited for;
    one with a reply is. Virtual time shows which waited (msg_wait is 1000 s here)."""
    import trio

    async with netgraph.open_graph() as graph:
        cap = Capture()
        s = Session(graph.socket("x"), printer=cap, msg_wait=1000)
        await s.run_line("mkpeer one2many o one")
        start = trio.current_time()
        assert await s.run_line("msg o setconfig { xmitAlg=3 failAlg=1 }") == Status.OK
        assert trio.current_time() - start < 1000
        assert await s.run_line("msg o getconfig") == Status.OK
        assert cap.take()[0][0].startswith('Rec\'d response "getconfig"')
        await s.run_line("mkpeer echo e x")
        start = trio.current_time()
        await s.run_line("msg e nodeinfo")  # generic, and flagged as having a reply
        assert cap.take()[0][1] == 'Args:\t{ type="echo" id=0x3 hooks=1 }'
        assert trio.current_time() - start < 1000


async def test_status_of_a_type_that_has_one() -> None:
    """A node type that overrides status_text answers TEXT_STATUS (FreeBSD's own types here
    have none, so ngctl says "No status available" for them, as in spec section 8)."""

    class Talker(netgraph.Node):
        def status_text(self) -> str:
            return "all is well\nsecond line"

    types = netgraph.TypeRegistry()
    types.register("talker", Talker)
    async with netgraph.open_graph(types=types) as graph:
        cap = Capture()
        s = Session(graph.socket("x"), printer=cap)
        await s.run_line("mkpeer talker t in")
        assert await s.run_line("status t") == Status.OK
        assert cap.take()[0] == ['Status for "t":', "all is well", "second line"]
