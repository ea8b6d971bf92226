#!/usr/bin/env bash
# One-command set-up on a fresh Debian 12 / Python 3.11 machine (idempotent: a second run is fast and changes
# nothing). Creates .venv with torch (CPU wheel first), ROS 2 Jazzy from PyPI wheels, builds the custom
# interfaces into the venv, and installs this package with its dependencies under constraints.txt.
# Override the venv location with REASONVOS_VENV, the interpreter with PYTHON.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${REASONVOS_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
STAMPS="$VENV/.reasonvos-stamps"
PIP_QUIET=(--quiet --disable-pip-version-check)

step() { printf '\n==> %s\n' "$*"; }
fail() { printf '\nSET-UP FAILED: %s\n' "$1" >&2; shift; for hint in "$@"; do printf '  - %s\n' "$hint" >&2; done; exit 1; }
filter_pip() { grep -v "is ignored: it is neither a file nor a directory" || true; }

# Upstream ROS 2 tools (ros2 launch, the ros2 CLI, message_filters, cv_bridge, colcon) used by the tests: installed
# from ../shared/ros2-upstream when it is there (a fresh CI clone gets ../shared copied beside it); under CI=true
# its absence is an error, elsewhere the tests that need them are skipped.
UPSTREAM="${REASONVOS_ROS2_UPSTREAM:-$ROOT/../shared/ros2-upstream}"
if [[ -f "$UPSTREAM/install.sh" ]]; then
  UPSTREAM="$(cd "$UPSTREAM" && pwd)"
elif [[ "${CI:-}" == "true" ]]; then
  fail "CI=true but the upstream ROS 2 tools are missing: $UPSTREAM/install.sh not found" \
       "CI copies ../shared beside the fresh clone (cp -r ../shared <clone>/../shared)" \
       "or set REASONVOS_ROS2_UPSTREAM=/path/to/ros2-upstream"
else
  UPSTREAM=""
fi

# ---- 1. system packages -------------------------------------------------------------------------
# opencv-doc: the real demo videos; darknet: real photos for the lite-backend tests; espeak-ng: speech synthesised in the speech tests; cmake/ninja/g++: the
# interface build; boost.python + OpenCV headers: the compiled part of cv_bridge (upstream tools, tests only).
apt_packages=(opencv-doc darknet espeak-ng cmake ninja-build g++)
[[ -n "$UPSTREAM" ]] && apt_packages+=(libboost-python-dev libopencv-core-dev libopencv-imgproc-dev libopencv-imgcodecs-dev)
apt_needed=()
for pkg in "${apt_packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || apt_needed+=("$pkg")
done
if ((${#apt_needed[@]})); then
  step "installing Debian packages: ${apt_needed[*]}"
  SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  { $SUDO apt-get update -q && $SUDO apt-get install -y -q --no-install-recommends "${apt_needed[@]}"; } >/tmp/reasonvos-apt.log 2>&1 \
    || fail "apt-get could not install ${apt_needed[*]} (log: /tmp/reasonvos-apt.log)" \
            "run as root or with sudo rights" "check the Debian mirror is reachable: apt-get update"
fi

# ---- 2. virtual environment --------------------------------------------------------------------
"$PYTHON" -c 'import sys; assert sys.version_info[:2] >= (3, 10)' 2>/dev/null \
  || fail "$PYTHON is missing or older than 3.10" "install python3 (Debian 12 ships 3.11) or set PYTHON=/path/to/python3.11"
if [[ ! -x "$VENV/bin/python" ]]; then
  step "creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV" || fail "could not create the venv" "apt-get install python3-venv"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip "${PIP_QUIET[@]}")
mkdir -p "$STAMPS"

# ---- 3. torch first (the local CPU wheel; never let a dependency pull a CUDA build) ---------------
if ! "$PY" -c 'import torch' >/dev/null 2>&1; then
  step "installing torch==2.13.0 (CPU wheel)"
  "${PIP[@]}" install torch==2.13.0 2>&1 | filter_pip
  "$PY" -c 'import torch' >/dev/null 2>&1 || fail "torch==2.13.0 did not install" \
    "the CPU wheel must be reachable by pip (find-links/extra-index-url in /etc/pip.conf)" \
    "on a GPU robot install your CUDA torch into $VENV first; this step is then skipped"
fi

# ---- 4. ROS 2 Jazzy wheels, interface build deps, and the package's dependencies -----------------
deps_hash=$(cat "$ROOT/tools/ros-requirements.txt" "$ROOT/constraints.txt" "$ROOT/setup.py" | sha256sum | cut -c1-16)
if [[ "$(cat "$STAMPS/deps" 2>/dev/null)" != "$deps_hash" ]]; then
  step "installing ROS 2 Jazzy wheels and Python dependencies (constraints.txt)"
  "${PIP[@]}" install -c "$ROOT/constraints.txt" -r "$ROOT/tools/ros-requirements.txt" 2>&1 | filter_pip \
    || fail "pip could not install the ROS 2 Jazzy wheels" "see the pip error above" "PyPI must be reachable"
  # Dependencies of the package itself, with every extra, installed before the package so that step 6 can
  # reinstall the package alone.
  "${PIP[@]}" install -c "$ROOT/constraints.txt" -r <("$PY" "$ROOT/setup.py" --print-requirements 2>/dev/null) 2>&1 | filter_pip \
    || fail "pip could not install the package's dependencies" "see the pip error above"
  "$PY" -c 'import rclpy, torch, cv2, rosbags, transformers' \
    || fail "a core dependency does not import after installation" "see the traceback above"
  # Workaround 3 of shared/notes/ros2-from-pip.md must be redone after (re)installing message wheels.
  rm -f "$STAMPS/cmake-paths" "$STAMPS/interfaces" "$STAMPS/upstream"
  echo "$deps_hash" >"$STAMPS/deps"
fi

# ---- 5. exported CMake files of the wheels hard-code the wheel builder's include folders ------------
if [[ ! -f "$STAMPS/cmake-paths" ]]; then
  step "rewriting the wheels' hard-coded Python/numpy include paths in $VENV/share/**/*.cmake"
  "$PY" "$ROOT/tools/fix_ros_cmake_paths.py" "$VENV/share" || fail "could not rewrite the exported CMake files"
  touch "$STAMPS/cmake-paths"
fi

# ---- 6. custom interfaces (msg/, srv/) built with rosidl into the venv ---------------------------
iface_hash=$(cat "$ROOT"/msg/*.msg "$ROOT"/srv/*.srv "$ROOT/CMakeLists.txt" "$ROOT/package.xml" | sha256sum | cut -c1-16)
if [[ "$(cat "$STAMPS/interfaces" 2>/dev/null)" != "$iface_hash" ]] || ! AMENT_PREFIX_PATH="$VENV" "$PY" -c 'from reasonvos_ros.msg import TargetResultArray' >/dev/null 2>&1; then
  step "building the custom interfaces into the venv (rosidl, ~20-60 s)"
  BUILD="$ROOT/build/interfaces"
  rm -rf "$BUILD"; mkdir -p "$ROOT/build"
  cmake_args=(-S "$ROOT" -B "$BUILD" -DREASONVOS_INSTALL_PYTHON=OFF -DBUILD_TESTING=OFF
    -DCMAKE_PREFIX_PATH="$VENV" -DCMAKE_INSTALL_PREFIX="$VENV" -DPython3_EXECUTABLE="$PY")
  command -v ninja >/dev/null && cmake_args+=(-G Ninja)
  { AMENT_PREFIX_PATH="$VENV" PATH="$VENV/bin:$PATH" cmake "${cmake_args[@]}" \
    && AMENT_PREFIX_PATH="$VENV" PATH="$VENV/bin:$PATH" cmake --build "$BUILD" -j 2 \
    && cmake --install "$BUILD"; } >"$ROOT/build/interfaces.log" 2>&1 \
    || { tail -30 "$ROOT/build/interfaces.log" >&2; fail "the interface build failed (full log: build/interfaces.log)" \
         "a missing find_package(...) means a ros-jazzy-* build wheel is missing from tools/ros-requirements.txt" \
         "an include error naming /opt/python means step 5 did not run: rm -rf $STAMPS and re-run"; }
  # rosidl registers the generated modules as a distribution named reasonvos_ros (an egg-info); pip would
  # treat it as an older install of this package and delete the generated modules when installing step 7.
  rm -rf "$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"/reasonvos_ros-*.egg-info
  AMENT_PREFIX_PATH="$VENV" "$PY" -c 'from reasonvos_ros.msg import TargetResultArray' \
    || fail "the interfaces built but do not import" "see the traceback above"
  echo "$iface_hash" >"$STAMPS/interfaces"
  rm -f "$STAMPS/package"  # the package shares the reasonvos_ros folder in site-packages: reinstall it
fi

# ---- 7. this package (not editable: its folder in site-packages also holds the generated messages) ---
# launch/ and config/ too: pip installs them to share/reasonvos_ros, where `ros2 launch` reads them.
pkg_hash=$(cd "$ROOT" && find reasonvos_ros scripts launch config setup.py setup.cfg package.xml -type f \( -name '*.py' -o -name '*.cfg' -o -name '*.yaml' -o -name '*.xml' -o -path 'scripts/*' \) -print0 | sort -z | xargs -0 cat | sha256sum | cut -c1-16)
if [[ "$(cat "$STAMPS/package" 2>/dev/null)" != "$pkg_hash" ]]; then
  step "installing reasonvos_ros into the venv"
  "${PIP[@]}" install --no-deps --no-build-isolation "$ROOT" 2>&1 | filter_pip || fail "pip install of the package failed" "see the pip error above"
  echo "$pkg_hash" >"$STAMPS/package"
fi
AMENT_PREFIX_PATH="$VENV" "$PY" -c 'import reasonvos_ros.msg, reasonvos_ros.core.types' \
  || fail "the installed package does not import" "rm -rf $STAMPS and re-run tools/setup.sh"

# ---- 8. upstream ROS 2 tools for the tests (ros2 launch / CLI, message_filters, cv_bridge, colcon) ----------
if [[ -n "$UPSTREAM" ]]; then
  upstream_hash=$(cat "$UPSTREAM/install.sh" "$UPSTREAM"/*.tar.gz | sha256sum | cut -c1-16)
  if [[ "$(cat "$STAMPS/upstream" 2>/dev/null)" != "$upstream_hash" ]] \
    || ! "$PY" -c 'import launch_ros, ros2cli, message_filters, cv_bridge.boost.cv_bridge_boost' >/dev/null 2>&1; then
    step "installing the upstream ROS 2 tools from $UPSTREAM (ros2 launch, ros2 CLI, message_filters, cv_bridge, colcon; ~1-2 min)"
    mkdir -p "$ROOT/build"
    upstream_work="$(mktemp -d -t reasonvos-ros2-upstream.XXXXXX)"
    bash "$UPSTREAM/install.sh" "$VENV" "$upstream_work" >"$ROOT/build/upstream.log" 2>&1 \
      || { tail -30 "$ROOT/build/upstream.log" >&2; fail "installing the upstream ROS 2 tools failed (log: build/upstream.log)" \
           "it needs libboost-python-dev and the OpenCV -dev headers (step 1 installs them)" \
           "and PyPI for colcon-common-extensions"; }
    rm -rf "$upstream_work"
    echo "$upstream_hash" >"$STAMPS/upstream"
  fi
fi
echo "set-up complete: $VENV (activate with: source tools/env.sh)"
