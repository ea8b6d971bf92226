"""Two gaps of rclpy's LifecycleNode (Jazzy) that a long-running perception node cannot live with.

Both reach into rclpy's private attributes (``_service_change_state``, ``_state_machine``) and do nothing when
those are absent, so a future rclpy that fixes the gaps (or renames them) only loses the workaround.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def answer_invalid_transitions(node: Any, refused: Callable[[str], None]) -> None:
    """rclpy's ChangeState service raises RCLError out of the executor for a transition that is invalid in the
    current state (configure while active: any lifecycle client other than ``ros2 lifecycle set`` can send it),
    which ends the node. Answer ``success = False`` instead, as rclcpp does, and report why to ``refused``."""
    service = getattr(node, "_service_change_state", None)
    if service is None:
        return
    original = service.callback

    def change_state(request, response):
        try:
            return original(request, response)
        except Exception as exc:
            refused(
                f"transition {request.transition.id} {request.transition.label!r} refused in state "
                f"{node._state_machine.current_state[1]!r}: {type(exc).__name__}: {exc}"
            )
            response.success = False
            return response

    service.callback = change_state


def destroy_state_machine(node: Any) -> None:
    """rclpy's LifecycleNode does not destroy its state machine, which holds the node handle: the node, and so the
    context and its DDS participant (with its /dev/shm segments), would stay alive until the Python object is
    collected, which never happens when the process leaves with os._exit (see node_main.main)."""
    machine = getattr(node, "_state_machine", None)
    if machine is not None:
        machine.destroy_when_not_in_use()
