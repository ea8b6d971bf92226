"""Regenerate config/perception.yaml and the README's parameter table from reasonvos_ros/ros/parameters.py.

The parameter table in code is the single source; test/test_package_consistency.py checks the files agree.
Run: source tools/env.sh && python tools/gen_param_docs.py
"""

import pathlib
import re
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reasonvos_ros.ros.parameters import PARAMETERS  # noqa: E402
from reasonvos_ros.ros.perception_node import NODE_NAME  # noqa: E402


def yaml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


def limits(param) -> str:
    if param.choices:
        return ", ".join(param.choices)
    return f"{param.low} .. {param.high}" if param.low is not None else ""


def write_yaml() -> None:
    lines = [
        "# Parameters of the reasonvos_ros perception node: every declared parameter, generated from",
        "# reasonvos_ros/ros/parameters.py by tools/gen_param_docs.py (edit there, then regenerate).",
        "# Use:  reasonvos_perception_node --ros-args --params-file config/perception.yaml",
        "#  or:  ros2 launch reasonvos_ros perception.launch.py params_file:=<this file>",
        "# '/**' applies to a node of any name in any namespace (e.g. namespace:=robot1); to target only this node",
        f"# write '/**/{NODE_NAME}:' instead.",
        "/**:",
        "  ros__parameters:",
    ]
    for param in PARAMETERS:
        text = param.description + (f" [{limits(param)}]" if limits(param) else "")
        lines += ["    # " + line for line in textwrap.wrap(text, 110)]
        lines.append(f"    {param.name}: {yaml_value(param.default)}")
    (ROOT / "config" / "perception.yaml").write_text("\n".join(lines) + "\n")


def write_readme_table() -> None:
    rows = ["| parameter | default | range / choices | what it does |", "| --- | --- | --- | --- |"]
    for param in PARAMETERS:
        rows.append(
            f"| `{param.name}` | `{yaml_value(param.default)}` | {limits(param)} | {param.description.replace('|', '/')} |"
        )
    readme = (ROOT / "README.md").read_text()
    table = "<!-- params:start -->\n" + "\n".join(rows) + "\n<!-- params:end -->"
    new, count = re.subn(r"<!-- params:start -->.*?<!-- params:end -->", table, readme, flags=re.S)
    if count != 1:
        raise SystemExit("README.md lacks the <!-- params:start --> ... <!-- params:end --> markers")
    (ROOT / "README.md").write_text(new)


if __name__ == "__main__":
    write_yaml()
    write_readme_table()
    print("wrote config/perception.yaml and the README parameter table")
