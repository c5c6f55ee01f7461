"""`run@chunk`, the one name of a checkpoint: parsed and printed by ModelRef alone."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas.model_ref import ModelRef
from schemas.settings import EvaluateSettings, ReportSettings


def test_a_name_round_trips_and_the_last_at_splits():
    assert str(ModelRef("tiny", 3)) == "tiny@3"
    assert ModelRef.parse(" tiny@3 ") == ModelRef("tiny", 3)
    assert ModelRef.parse("site@LK@12") == ModelRef("site@LK", 12)
    assert str(ModelRef.parse("site@LK@12")) == "site@LK@12"


@pytest.mark.parametrize("bad", ["tiny", "tiny@", "@3", "tiny@0", "tiny@-1", "tiny@x", ""])
def test_anything_else_is_refused_in_words(bad):
    with pytest.raises(ValueError, match="RUN@CHUNK"):
        ModelRef.parse(bad)


def test_settings_that_name_a_model_check_it_before_a_flow_starts():
    assert ReportSettings(model="tiny@3").model == "tiny@3"
    assert EvaluateSettings(label_column="species").model is None
    with pytest.raises(ValidationError, match="names no model"):
        ReportSettings(model="tiny")
