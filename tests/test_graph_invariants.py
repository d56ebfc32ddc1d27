"""Random sequences of structural operations keep the graph's invariants (hypothesis)."""

from __future__ import annotations

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import netgraph
from netgraph import NetgraphError

TYPES = ["hub", "echo", "hole", "tee", "one2many"]
HOOKS = ["a", "b", "left", "right", "one", "many0", "many1", "right2left"]

op = st.one_of(
    st.tuples(st.just("mkpeer"), st.integers(0, 9), st.sampled_from(TYPES),
              st.sampled_from(HOOKS), st.sampled_from(HOOKS)),
    st.tuples(st.just("connect"), st.integers(0, 9), st.integers(0, 9),
              st.sampled_from(HOOKS), st.sampled_from(HOOKS)),
    st.tuples(st.just("rmhook"), st.integers(0, 9), st.sampled_from(HOOKS)),
    st.tuples(st.just("shutdown"), st.integers(0, 9)),
    st.tuples(st.just("name"), st.integers(0, 9), st.sampled_from(["x", "y", "z"])),
)  # fmt: skip


def check(graph: netgraph.Graph) -> None:
    for node_id, node in graph.nodes.items():
        assert node.id == node_id
        assert node.is_valid
        for name, hook in node.hooks.items():
            assert hook.name == name
            assert hook.node is node
            assert hook.peer is not None
            assert hook.peer.peer is hook
            assert graph.nodes.get(hook.peer.node.id) is hook.peer.node
        if not node.hooks:
            assert node.lingers(), f"{node} has no hooks but did not die"
    for name, node in graph.names.items():
        assert node.name == name
        assert graph.nodes.get(node.id) is node


@settings(max_examples=150, deadline=None)
@given(st.lists(op, max_size=40))
def test_random_operations_keep_the_invariants(ops: list[tuple[object, ...]]) -> None:
    async def run() -> None:
        async with netgraph.open_graph() as graph:
            sock = graph.socket("s")

            def pick(i: object) -> netgraph.Node:
                nodes = list(graph.nodes.values())
                return nodes[int(str(i)) % len(nodes)]

            for step in ops:
                try:
                    if step[0] == "mkpeer":
                        _, i, type_name, ours, theirs = step
                        graph.mkpeer(pick(i), str(type_name), str(ours), str(theirs))
                    elif step[0] == "connect":
                        _, i, j, ours, theirs = step
                        graph.connect(pick(i), pick(j).path, str(ours), str(theirs))
                    elif step[0] == "rmhook":
                        _, i, hook = step
                        graph.rmhook(pick(i), str(hook))
                    elif step[0] == "shutdown":
                        node = pick(step[1])
                        if node is not sock.node:
                            graph.rmnode(node)
                    else:
                        _, i, name = step
                        graph.name_node(pick(i), str(name))
                except NetgraphError:
                    pass
                check(graph)

    trio.run(run)
