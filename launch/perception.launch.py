"""Launch the reasonvos_ros perception node: `ros2 launch reasonvos_ros perception.launch.py [name:=value ...]`.

Works on a colcon install and on the pip install of this package (both put the executables in
lib/reasonvos_ros). `ros2 launch reasonvos_ros perception.launch.py --show-args` lists every argument with its
description. The params file is applied under any namespace when its top-level key is `/**:` (as in the
installed config/perception.yaml) or `/**/reasonvos_perception:`.

Pip-only machines without `launch` run the equivalent console entry point:
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
        DeclareLaunchArgument(
            "params_file",
            default_value=default_params,
            description="parameters YAML of the perception node (top-level key '/**:' so that it applies under any "
            "namespace); default: the installed config/perception.yaml with every parameter",
        ),
        DeclareLaunchArgument(
            "image",
            default_value="/camera/color/image_raw",
            description="colour image topic (sensor_msgs/Image) remapped to the node's 'image' input; "
            "'<image>/compressed' feeds 'image/compressed' when the params file sets image_transport: compressed",
        ),
        DeclareLaunchArgument(
            "depth",
            default_value="/camera/aligned_depth_to_color/image_raw",
            description="depth image aligned to the colour image (32FC1 metres or 16UC1 millimetres), used when "
            "the params file sets use_depth: true",
        ),
        DeclareLaunchArgument(
            "camera_info",
            default_value="/camera/color/camera_info",
            description="sensor_msgs/CameraInfo of the colour camera (intrinsics for 3D points, with use_depth)",
        ),
        DeclareLaunchArgument(
            "namespace",
            default_value="",
            description="namespace of the nodes, e.g. robot1: topics become /robot1/instruction, "
            "/robot1/reasonvos_perception/results, ...",
        ),
        DeclareLaunchArgument(
            "autostart",
            default_value="true",
            description="true: the node configures and activates itself (and exits with an error when that "
            "fails); false: it waits unconfigured for a lifecycle manager or 'ros2 lifecycle set'",
        ),
        DeclareLaunchArgument(
            "speech",
            default_value="false",
            description="true: also start reasonvos_speech_node (microphone AudioChunk -> spoken instructions)",
        ),
        DeclareLaunchArgument(
            "audio",
            default_value="/audio",
            description="reasonvos_ros/AudioChunk topic of the microphone, remapped to the speech node's 'audio' "
            "(with speech:=true)",
        ),
        DeclareLaunchArgument(
            "wake_phrase",
            default_value="",
            description="words a spoken instruction must start with, e.g. 'robot' (empty: every utterance is an "
            "instruction; with speech:=true)",
        ),
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
