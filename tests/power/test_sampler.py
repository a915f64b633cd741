"""The sampler loop: fixed period on absolute deadlines, midpoint timestamps, read spans,
dropped periods, per-rail errors; in a thread and in its own process."""

from __future__ import annotations

import os
import time

import pytest

from power.discover import PowerOptions, open_for_sampler
from power.errors import ReadError
from power.sampler import ProcessSampler, SampleLog, ThreadSampler
from power.source import PowerSource, Rail, Reading
from power.sysfs import Attr


class FileSource(PowerSource):
    """One rail read from a real file with the sysfs reader; optionally slow."""

    kind = "test"
    name = "file"

    def __init__(self, path, delay_s=0.0):
        self.attr = Attr(path)
        self.rails = [Rail("R", path)]
        self.delay_s = delay_s

    def _read_rails(self, full):
        if self.delay_s:
            time.sleep(self.delay_s)
        try:
            return Reading(0, 0, [float(self.attr.read_int())])
        except ReadError as e:
            return Reading(0, 0, [None], {"R": str(e)})

    def close(self):
        self.attr.close()


def _write(path, text):
    fd = os.open(path, os.O_WRONLY)
    try:
        data = text.encode()
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


def test_thread_sampler_keeps_its_period_and_stamps_midpoints(tmp_path):
    path = tmp_path / "in_power0_input"
    path.write_text("1500\n")
    with FileSource(str(path)) as source:
        sampler = ThreadSampler(source, period_s=0.005).start()
        time.sleep(0.3)
        log = sampler.stop()
    n = len(log.t_ns)
    # 0.3 s at 5 ms is 60 ticks; a loaded CI machine may drop some, never add any.
    assert 20 <= n + log.dropped <= 62
    assert all(b > a for a, b in zip(log.t_ns, log.t_ns[1:]))
    assert all(0 < s < 5_000_000 for s in log.span_ns)
    assert set(log.mw[0]) == {1500.0}
    assert not log.errors


def test_slow_reads_count_dropped_periods_not_bunched_samples(tmp_path):
    path = tmp_path / "in_power0_input"
    path.write_text("1\n")
    with FileSource(str(path), delay_s=0.012) as source:
        sampler = ThreadSampler(source, period_s=0.005).start()
        time.sleep(0.2)
        log = sampler.stop()
    assert log.dropped >= len(log.t_ns)  # each 12 ms read misses at least two 5 ms ticks
    gaps = [b - a for a, b in zip(log.t_ns, log.t_ns[1:])]
    assert min(gaps) >= 10_000_000


def test_errors_are_counted_and_sampling_goes_on(tmp_path):
    path = tmp_path / "in_power0_input"
    path.write_text("100\n")
    with FileSource(str(path)) as source:
        sampler = ThreadSampler(source, period_s=0.002).start()
        time.sleep(0.05)
        _write(str(path), "garbage\n")
        time.sleep(0.05)
        _write(str(path), "200\n")
        time.sleep(0.05)
        log = sampler.stop()
    values = log.mw[0]
    assert 100.0 in values and 200.0 in values and None in values
    errors = log.errors["R"]
    assert errors.count == values.count(None) and "not a number" in errors.first
    times, mw = log.series("R")
    assert None not in mw and len(times) == len(mw) == len(values) - errors.count


def test_a_deleted_file_is_an_error_then_found_again(tmp_path):
    path = tmp_path / "in_power0_input"
    path.write_text("7\n")
    source = FileSource(str(path))
    assert source.read().mw == [7.0]
    path.unlink()
    gone = source.read()
    assert gone.mw == [None] and "R" in gone.errors
    path.write_text("8\n")
    source.attr._retry_at = 0  # skip the 1 s back-off instead of sleeping through it
    assert source.read().mw == [8.0]
    source.close()


def test_sampler_rejects_silly_periods(tmp_path):
    path = tmp_path / "p"
    path.write_text("1\n")
    with pytest.raises(ValueError, match="sampling period"):
        ThreadSampler(FileSource(str(path)), period_s=0.0001)


def test_process_sampler_returns_the_log_of_its_own_source():
    options = PowerOptions(estimate_idle_mw=1000.0, estimate_busy_mw=3000.0)
    sampler = ProcessSampler(open_for_sampler, ("estimate", options), 0.01).start()
    time.sleep(0.3)
    log = sampler.stop()
    assert isinstance(log, SampleLog)
    assert [r.name for r in log.rails] == ["EST_TOTAL"]
    assert len(log.t_ns) >= 5
    assert all(v is None or 1000.0 <= v <= 3000.0 for v in log.mw[0])


def test_process_sampler_reports_a_source_that_cannot_open():
    sampler = ProcessSampler(open_for_sampler, ("no-such-source", PowerOptions()), 0.01)
    with pytest.raises(RuntimeError, match="no power source 'no-such-source'"):
        sampler.start()


class Broken(PowerSource):
    kind = "test"
    name = "broken"
    rails = [Rail("R", "nowhere")]

    def _read_rails(self, full):
        raise ZeroDivisionError("a bug in a source")


def test_a_source_that_raises_costs_samples_not_the_sampler():
    from power.sampler import SOURCE_ERRORS

    sampler = ThreadSampler(Broken(), 0.005).start()
    time.sleep(0.05)
    log = sampler.stop()
    errors = log.errors[SOURCE_ERRORS]
    assert errors.count >= 3 and "ZeroDivisionError: a bug in a source" == errors.first
    assert log.t_ns == []
