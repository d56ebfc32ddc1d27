"""Node types, each registered by name in the ``netgraph.node_types`` entry-point group."""
