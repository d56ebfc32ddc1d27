"""Third-party node types: a package installed with pip is found through its entry point."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import netgraph

PLUGIN = Path(__file__).parent / "plugin_pkg"


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """pip-install tests/plugin_pkg into a fresh directory and put it on sys.path."""
    target = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(PLUGIN),
        ],
        check=True,
        cwd=build,
        capture_output=True,
    )
    sys.path.insert(0, str(target))
    try:
        yield target
    finally:
        sys.path.remove(str(target))
        for name in [m for m in sys.modules if m.startswith("ngplugin_counter")]:
            del sys.modules[name]


async def test_without_the_plugin_the_type_is_unknown() -> None:
    async with netgraph.open_graph() as graph:
        sock = graph.socket("s")
        assert "counter" not in graph.types.names()
        with pytest.raises(netgraph.NetgraphError) as info:
            await sock.mkpeer(".", "counter", "c", "in")
        assert info.value.errno == 6  # ENXIO


async def test_plugin_type_is_listed_and_works(installed_plugin: Path) -> None:
    assert (installed_plugin / "ngplugin_counter").is_dir()
    async with netgraph.open_graph() as graph:
        sock = graph.socket("s")
        types = {t.typename: t.numnodes for t in (await sock.listtypes()).typeinfo}
        assert types["counter"] == 0
        await sock.mkpeer(".", "counter", "c", "in")
        for _ in range(3):
            await sock.send_data("c", b"x")
        reply = await sock.request("c", 1700000001, 1, cmdstr="getcount")
        assert reply.args == 3
        types = {t.typename: t.numnodes for t in (await sock.listtypes()).typeinfo}
        assert types["counter"] == 1
