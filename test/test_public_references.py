"""The package's docstrings and comments cite what a user can read: no paths into the developers' machines."""

from __future__ import annotations

import pathlib
import re

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "reasonvos_ros"

# Places that exist only on the machines this package was written on (the developers' shared notes and
# specifications), never in a clone or an installation.
PRIVATE_PATH = re.compile(r"/work/|\bshared/|\bspec/\w[\w-]*\.md|\bgolden/\w+\.json|\bnotes/\w[\w-]*\.md")


def test_no_source_file_points_at_files_users_do_not_have():
    offending = [
        f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if PRIVATE_PATH.search(line)
    ]
    assert not offending, "cite the fact or a public source instead:\n" + "\n".join(offending)


def test_the_pattern_catches_the_forms_seen_before():
    for line in (
        "Format (see ``/work/shared/spec/revos-eval.md``)",
        "What a user downloads (spec/visa.md, 'Weights')",
        "the published checkpoint layout (``golden/xmem_keys.json``)",
        "see ../shared/notes/ml-stack.md",
    ):
        assert PRIVATE_PATH.search(line), line
    assert not PRIVATE_PATH.search("(``test/golden_data/xmem_keys.json`` in this repository)")
    assert not PRIVATE_PATH.search("rclpy plumbing shared by bag-play and bag-record")
