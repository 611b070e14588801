"""The cpu profile's video detector keeps >= 90 % of the faces the default settings find on the
shared group stills (issue 12, item 2). Deterministic: counts faces, never times anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import shared_file

pytestmark = pytest.mark.slow  # real MTCNN on six group photos, twice


def test_cpu_profile_keeps_nine_tenths_of_the_faces_on_the_group_stills(shared_data: Path) -> None:
    from bench.faces_kept import STILLS, Detectors, stills_kept, variant

    for relative in STILLS:
        shared_file(shared_data, relative)
    result = stills_kept([variant("cpu"), variant("cpu-before")], Detectors(), shared_data)
    cpu, before = result["by_variant"]["cpu"], result["by_variant"]["cpu-before"]
    print(f"\nfaces kept on the group stills: cpu {cpu}, cpu-before {before}, reference {result['reference_faces']}")
    assert result["reference_faces"] >= 40
    assert cpu["kept"] >= 0.9
    assert before["kept"] < cpu["kept"]  # the old profile lost the small faces
