"""common/jsonl.py: what a killed writer leaves is handled, anything else that is broken is named."""

import logging

import pytest

from common.jsonl import append_jsonl, read_jsonl, repair_tail, write_jsonl

RECORDS = [{"step": 0, "loss": 1.5}, {"step": 1, "text": "ünïcode"}]


def test_records_round_trip_and_blank_lines_are_skipped(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", RECORDS)
    assert read_jsonl(path) == RECORDS
    assert "ünïcode" in path.read_text(encoding="utf-8")  # written as text, not \u escapes
    path.write_text(path.read_text(encoding="utf-8") + "\n  \n", encoding="utf-8")
    assert read_jsonl(path) == RECORDS
    with pytest.raises(FileNotFoundError):
        read_jsonl(tmp_path / "missing.jsonl")


@pytest.mark.parametrize("torn_tail", ["skip", "raise"])
def test_an_unterminated_last_record_that_parses_is_kept(tmp_path, torn_tail):
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}', encoding="utf-8")  # killed between a record and its newline
    assert read_jsonl(path, torn_tail=torn_tail) == [{"a": 1}, {"a": 2}]


def test_a_last_line_cut_short_is_skipped_with_a_warning_or_raised(tmp_path, caplog):
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\n{"a": 2, "b', encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        assert read_jsonl(path) == [{"a": 1}]
    assert "r.jsonl: skipping line 2, a record cut short" in caplog.text
    with pytest.raises(ValueError, match=r"r.jsonl:2: not valid JSON"):
        read_jsonl(path, torn_tail="raise")


def test_a_bad_line_before_the_last_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\n{"a": 2, "b\n{"a": 3}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"r.jsonl:2: not valid JSON"):
        read_jsonl(path)
    path.write_text('{"a": 1}\n[1, 2]\n', encoding="utf-8")  # terminated: not a torn write
    with pytest.raises(ValueError, match=r"r.jsonl:2: a JSON list, not an object"):
        read_jsonl(path)
    with pytest.raises(ValueError, match="torn_tail"):
        read_jsonl(path, torn_tail="keep")


def test_repair_tail_then_append_starts_a_clean_line(tmp_path):
    cut = tmp_path / "cut.jsonl"
    cut.write_text('{"a": 1}\n{"a": 2, "b', encoding="utf-8")
    repair_tail(cut)
    append_jsonl(cut, {"a": 3})
    assert cut.read_text(encoding="utf-8") == '{"a": 1}\n{"a": 3}\n'
    whole = tmp_path / "whole.jsonl"
    whole.write_text('{"a": 1}\n{"a": 2}', encoding="utf-8")
    repair_tail(whole)
    append_jsonl(whole, {"a": 3})
    assert read_jsonl(whole) == [{"a": 1}, {"a": 2}, {"a": 3}]
    repair_tail(tmp_path / "missing.jsonl")
    assert not (tmp_path / "missing.jsonl").exists()
