"""perception_node: the mapping, memory and query nodes in one process (they share the map in memory).

`--with-segmentation` also hosts the segmentation node in the same process (one-machine set-ups);
by default it runs as its own process (segmentation_node), which may be on a GPU host.
"""

from __future__ import annotations

import sys

from .runner import run_nodes


def main(args: list[str] | None = None) -> int:
    args = list(sys.argv if args is None else args)
    in_process_backend = "--with-segmentation" in args
    args = [a for a in args if a != "--with-segmentation"]
    from .mapping_node import MappingNode
    from .memory_node import MemoryNode
    from .query_node import QueryNode

    nodes = {}

    def mapping():
        nodes["mapping"] = MappingNode()
        return nodes["mapping"]

    def memory():
        nodes["memory"] = MemoryNode(nodes["mapping"].mapper, mapping_params=nodes["mapping"].parameters)
        return nodes["memory"]

    def query():
        return QueryNode(nodes["mapping"].mapper, resolver=nodes["memory"].resolver, occupancy=nodes["mapping"].occupancy,
                         mapping_params=nodes["mapping"].parameters)

    factories = [mapping, memory, query]
    if in_process_backend:
        from .segmentation_node import SegmentationNode
        factories.append(SegmentationNode)
    return run_nodes(factories, args, num_threads=6)


if __name__ == "__main__":
    sys.exit(main())
