"""Launch the reasonvos_ros perception node (real ROS 2 installs: `ros2 launch reasonvos_ros perception.launch.py`).

Arguments:
  params_file  parameters YAML (default: the installed config/perception.yaml)
  image        colour image topic to remap 'image' to (default: /camera/color/image_raw)
  depth        aligned depth topic (used when use_depth is true in the params file)
  camera_info  CameraInfo topic of the colour camera
  namespace    node namespace (default: empty)
  autostart    configure + activate the lifecycle node by itself (default: true); set false when a lifecycle
               manager (e.g. nav2_lifecycle_manager) drives the transitions
  speech       also start the speech node (audio -> instructions), default false
  audio        reasonvos_ros/AudioChunk topic of the microphone (with speech:=true)
  wake_phrase  wake phrase for spoken instructions, e.g. "robot" (empty = none)

Pip-only machines have no `launch`; there the equivalent is the console entry point:
  reasonvos_perception_node --ros-args --params-file config/perception.yaml -r image:=/camera/color/image_raw
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.parameter_descriptions import ParameterValue


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory("reasonvos_ros"), "config", "perception.yaml")
    arguments = [
        DeclareLaunchArgument("params_file", default_value=default_params, description="parameters YAML"),
        DeclareLaunchArgument("image", default_value="/camera/color/image_raw", description="colour image topic"),
        DeclareLaunchArgument(
            "depth", default_value="/camera/aligned_depth_to_color/image_raw", description="aligned depth topic"
        ),
        DeclareLaunchArgument("camera_info", default_value="/camera/color/camera_info", description="CameraInfo topic"),
        DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
        DeclareLaunchArgument("autostart", default_value="true", description="self-configure and activate"),
        DeclareLaunchArgument("speech", default_value="false", description="start the speech node too"),
        DeclareLaunchArgument("audio", default_value="/audio", description="AudioChunk topic"),
        DeclareLaunchArgument("wake_phrase", default_value="", description="wake phrase ('' = none)"),
    ]
    node = LifecycleNode(
        package="reasonvos_ros",
        executable="reasonvos_perception_node",
        name="reasonvos_perception",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=[
            LaunchConfiguration("params_file"),
            {"autostart": ParameterValue(LaunchConfiguration("autostart"), value_type=bool)},
        ],
        remappings=[
            ("image", LaunchConfiguration("image")),
            ("image/compressed", [LaunchConfiguration("image"), "/compressed"]),
            ("depth", LaunchConfiguration("depth")),
            ("camera_info", LaunchConfiguration("camera_info")),
        ],
    )
    speech = Node(
        package="reasonvos_ros",
        executable="reasonvos_speech_node",
        name="reasonvos_speech_node",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        condition=IfCondition(LaunchConfiguration("speech")),
        parameters=[{"wake_phrase": LaunchConfiguration("wake_phrase")}],
        remappings=[("audio", LaunchConfiguration("audio"))],
    )
    return LaunchDescription([*arguments, node, speech])
