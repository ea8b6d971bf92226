"""Rewrite include folders that the ROS 2 PyPI wheels hard-code in their exported CMake files.

The wheels are built in a manylinux container whose Python lives under /opt/python/cp3XX-cp3XX; about a dozen
``*.cmake`` files keep those paths, so a rosidl build on another machine cannot find Python.h or numpy's headers.
Idempotent: already rewritten files contain no such path.
"""

import pathlib
import re
import sys
import sysconfig

import numpy

PYTHON_INCLUDE = re.compile(r"/opt/python/cp3\d+-cp3\d+/include/python3\.\d+")
NUMPY_INCLUDE = re.compile(r"/opt/python/cp3\d+-cp3\d+/lib/python3\.\d+/site-packages/numpy/(?:_core|core)/include")


def main(share: str) -> int:
    python_include = sysconfig.get_paths()["include"]
    numpy_include = numpy.get_include()
    changed = 0
    for path in pathlib.Path(share).rglob("*.cmake"):
        text = path.read_text()
        new = NUMPY_INCLUDE.sub(numpy_include, text)
        new = PYTHON_INCLUDE.sub(python_include, new)
        if new != text:
            path.write_text(new)
            changed += 1
    print(f"rewrote {changed} CMake files (python: {python_include}, numpy: {numpy_include})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
