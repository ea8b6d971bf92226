"""Target id -> ROS topic name token (for ``~/point/<token>``); plain string code, no rclpy import.

ROS 2 name tokens may hold ASCII letters, digits and underscores, must not start with a digit and must not
contain ``__`` (reserved). Target ids are free text ("猫", "a-b", "cup 2"). The mapping:

- an id that already is a valid token (``[A-Za-z][A-Za-z0-9_]*``, no ``__``, not ending in ``_``) is used as
  is: ``default`` -> ``default``, ``a_b`` -> ``a_b``;
- any other id becomes its ASCII letters and digits (every other run of characters -> ``_``, at most 40
  characters, ``t_`` in front when that is empty or starts with a digit), then ``_`` and 8 hex digits of the
  BLAKE2b hash of the id's UTF-8 bytes: ``a-b`` -> ``a_b_<hash>``, ``猫`` -> ``t_<hash>``, ``1`` -> ``t_1_<hash>``.

Ids that differ in any character (non-ASCII letters, punctuation, spaces) therefore get distinct topics.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["target_topic_token"]

_PLAIN_TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
MAX_READABLE_CHARS = 40


def target_topic_token(target_id: str) -> str:
    if _PLAIN_TOKEN.fullmatch(target_id) and "__" not in target_id and not target_id.endswith("_"):
        return target_id
    readable = re.sub(r"[^A-Za-z0-9]+", "_", target_id).strip("_")[:MAX_READABLE_CHARS].rstrip("_")
    if not readable or readable[0].isdigit():
        readable = "t_" + readable if readable else "t"
    digest = hashlib.blake2b(target_id.encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()
    return f"{readable}_{digest}"
