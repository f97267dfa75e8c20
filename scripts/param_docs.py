"""Print the README's parameter tables from the nodes' ParamSpec lists (docs cannot drift)."""

from mllm3d_ros.ros.mapping_node import MAPPING_PARAMS
from mllm3d_ros.ros.memory_node import MEMORY_PARAMS
from mllm3d_ros.ros.query_node import QUERY_PARAMS
from mllm3d_ros.ros.replay_node import REPLAY_PARAMS
from mllm3d_ros.ros.segmentation_node import SEGMENTATION_PARAMS
from mllm3d_ros.ros.simulator_node import SIMULATOR_PARAMS

TABLES = {"mapping": MAPPING_PARAMS, "memory": MEMORY_PARAMS, "query": QUERY_PARAMS, "segmentation": SEGMENTATION_PARAMS,
          "simulator": SIMULATOR_PARAMS, "replay": REPLAY_PARAMS}


def table(specs) -> str:
    rows = ["| parameter | type | default | range / choices | meaning |", "|---|---|---|---|---|"]
    for s in specs:
        rng = " \\| ".join(s.choices) if s.choices else (f"[{s.low}, {s.high}]" if s.low is not None else "")
        default = repr(s.default) if isinstance(s.default, str) else str(s.default).lower()
        rows.append(f"| `{s.name}` | {type(s.default).__name__} | `{default}` | {rng} | {s.description} |")
    return "\n".join(rows)


if __name__ == "__main__":
    for name, specs in TABLES.items():
        print(f"#### `{name}` parameters\n\n{table(specs)}\n")
