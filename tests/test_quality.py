import numpy as np
import pytest
from signals import click_train, tone

from tasks.audio.quality import DBFS_FLOOR, dropout_fraction, segment_quality


def test_sine_levels():
    q = segment_quality(tone(1000, 1.0, 16000, amplitude=0.5), 16000, 0, 16000, 0, -90)
    assert q.rms_dbfs == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.01)
    assert q.peak_dbfs == pytest.approx(20 * np.log10(0.5), abs=0.01)
    assert abs(q.dc_offset) < 1e-4
    assert not q.is_silent and q.dropout_fraction == 0 and q.clipped_fraction == 0


def test_dc_offset_clipping_and_nonfinite_counts():
    x = tone(100, 1.0, 8000, amplitude=0.1) + 0.25
    q = segment_quality(x, 8000, clipped_input_samples=80, input_samples=8000, nonfinite_input_samples=3, silence_dbfs=-90)
    assert q.dc_offset == pytest.approx(0.25, abs=1e-3)
    assert q.clipped_fraction == pytest.approx(0.01)
    assert q.nonfinite_count == 3


def test_silence_and_dropouts():
    silent = segment_quality(np.zeros(16000, np.float32), 16000, 0, 16000, 0, -90)
    assert silent.is_silent and silent.rms_dbfs == DBFS_FLOOR and silent.dropout_fraction == 1.0
    x = tone(200, 1.0, 16000)
    x[4000:12000] = 0.0  # half a second of digital zeros: a dropout
    assert dropout_fraction(x, 16000) == pytest.approx(0.5, abs=0.001)
    # the zeros between clicks are short gaps, not dropouts
    assert dropout_fraction(click_train(1.0, 16000, interval_s=0.01), 16000) == 0.0
    quiet = segment_quality(tone(200, 1.0, 16000, amplitude=1e-6), 16000, 0, 16000, 0, -90)
    assert quiet.is_silent
