"""reasonvos_ros: reasoning video object segmentation (VISA) as a live ROS 2 perception node.

The generated message modules (``reasonvos_ros.msg``/``.srv``) are built by CMake into the interpreter's
site-packages, while this package may be imported from a source checkout; ``extend_path`` lets both halves
of the package be found under one name.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)

__version__ = "0.1.0"
