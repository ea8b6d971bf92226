"""Regenerate config/perception.yaml, the README's parameter table and its backend option tables.

The sources are the node's parameter table (reasonvos_ros/ros/parameters.py, whose pipeline-policy entries come
from reasonvos_ros/core/config.py) and the ``Options`` dataclass of every registered backend
(reasonvos_ros/core/registry.py); test/test_package_consistency.py checks that the files equal what this writes.
Run: source tools/env.sh && python tools/gen_param_docs.py   (``--check``: exit 1 when a file is out of date)
"""

import pathlib
import re
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reasonvos_ros.core.options import limits_text, option_rows  # noqa: E402
from reasonvos_ros.core.registry import ROLES, backend_options_type  # noqa: E402
from reasonvos_ros.ros.parameters import PARAMETERS  # noqa: E402
from reasonvos_ros.ros.perception_node import NODE_NAME  # noqa: E402

YAML_PATH = ROOT / "config" / "perception.yaml"
README_PATH = ROOT / "README.md"


def yaml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


def limits(param) -> str:
    return limits_text(param.spec)


def cell(text: str) -> str:
    """Text for a Markdown table cell ('|' would end the cell)."""
    return text.replace("|", "/")


def render_yaml() -> str:
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
    return "\n".join(lines) + "\n"


def parameter_table() -> str:
    rows = ["| parameter | default | range / choices | what it does |", "| --- | --- | --- | --- |"]
    for param in PARAMETERS:
        rows.append(f"| `{param.name}` | `{yaml_value(param.default)}` | {limits(param)} | {cell(param.description)} |")
    return "\n".join(rows)


def backend_option_tables() -> str:
    """One table per registered backend, in the registry's order: the JSON keys of ``<role>_options``."""
    parts = []
    for role, (table, _interface) in ROLES.items():
        for name, target in table.items():
            options_type = backend_options_type(role, name)
            class_name = target.split(":")[1]
            heading = f"#### `{role}: {name}` ({class_name}, options `{options_type.__name__}`)"
            rows = option_rows(options_type)
            if not rows:
                parts.append(f"{heading}\n\nNo options.")
                continue
            lines = ["| option | type | default | range / choices | what it does |", "| --- | --- | --- | --- | --- |"]
            lines += [
                f"| `{row.name}` | {cell(row.type)} | `{row.default}` | {cell(row.limits)} | {cell(row.description)} |"
                for row in rows
            ]
            parts.append(heading + "\n\n" + "\n".join(lines))
    return "\n\n".join(parts)


def replace_block(text: str, marker: str, body: str) -> str:
    block = f"<!-- {marker}:start -->\n{body}\n<!-- {marker}:end -->"
    new, count = re.subn(rf"<!-- {marker}:start -->.*?<!-- {marker}:end -->", lambda _: block, text, flags=re.S)
    if count != 1:
        raise SystemExit(f"README.md lacks the <!-- {marker}:start --> ... <!-- {marker}:end --> markers")
    return new


def render_readme(readme: str) -> str:
    """``readme`` with the generated blocks replaced."""
    readme = replace_block(readme, "params", parameter_table())
    return replace_block(readme, "backend-options", backend_option_tables())


def main(argv: list[str]) -> int:
    wanted = {YAML_PATH: render_yaml(), README_PATH: render_readme(README_PATH.read_text())}
    stale = [path for path, text in wanted.items() if path.read_text() != text]
    if "--check" in argv:
        for path in stale:
            print(f"{path.relative_to(ROOT)} is out of date: run python tools/gen_param_docs.py")
        return 1 if stale else 0
    for path in stale:
        path.write_text(wanted[path])
    print(f"wrote {', '.join(str(p.relative_to(ROOT)) for p in stale) or 'nothing (up to date)'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
