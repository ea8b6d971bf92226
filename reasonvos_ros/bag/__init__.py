"""rosbag2 tools built on ``rosbags`` (no rosbag2_py / ``ros2 bag`` on pip installs).

- :mod:`.types`: a ROS 2 Jazzy typestore with this package's messages registered from their ``.msg`` text.
- :mod:`.from_video`: write a bag (sqlite3 or mcap) from a video file, optionally with Instruction messages.
- :mod:`.play`: replay a bag into live topics (raw serialized bytes through rclpy) at recorded timing.
- :mod:`.record`: record live topics (raw subscriptions) into a bag.
- :mod:`.render`: draw results over images into an mp4 and a contact-sheet PNG.

Reading and writing bags needs only ``rosbags``; ``play`` and ``record`` also need rclpy and the message
packages of the played/recorded types.
"""
