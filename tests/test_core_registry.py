"""core.registry: register by decorator, refuse duplicates, suggest near names on a miss."""

from __future__ import annotations

import pytest

from fmgauge.core.registry import Registry
from fmgauge.core.validation import FmgaugeError


@pytest.fixture
def students() -> Registry:
    reg: Registry = Registry("student")

    @reg.register("logreg")
    def make_logreg():
        return "logreg"

    reg.add("mlp", lambda: "mlp")
    return reg


def test_register_get_and_list(students):
    assert students.get("logreg")() == "logreg"
    assert students.get("mlp")() == "mlp"
    assert "logreg" in students and "svm" not in students
    assert students.names() == list(students) == ["logreg", "mlp"]


def test_decorator_returns_the_object_unchanged():
    reg: Registry = Registry("thing")

    def f():
        return 1

    assert reg.register("f")(f) is f


def test_duplicate_name_refused_and_first_kept(students):
    with pytest.raises(FmgaugeError, match="student 'logreg' is already registered"):
        students.add("logreg", lambda: "other")
    with pytest.raises(FmgaugeError, match="already registered"):
        students.register("mlp")(lambda: "other")
    assert students.get("logreg")() == "logreg"


def test_unknown_name_suggests_the_near_name(students):
    with pytest.raises(FmgaugeError) as err:
        students.get("logrge")
    msg = str(err.value)
    assert "unknown student 'logrge'" in msg
    assert "Did you mean 'logreg'?" in msg
    assert "Known: logreg, mlp." in msg


def test_unknown_far_name_has_no_suggestion(students):
    with pytest.raises(FmgaugeError) as err:
        students.get("transformer")
    assert "Did you mean" not in str(err.value)
    assert "Known: logreg, mlp." in str(err.value)
