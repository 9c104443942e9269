"""The shared JSONL reader: blank lines skipped, line numbers kept, bad JSON is a one-line error naming file:line."""

import pytest

from safemerge.errors import InputError
from safemerge.utils.config import iter_jsonl


def test_iter_jsonl_numbers_lines_and_skips_blanks(tmp_path):
    p = tmp_path / "rows.jsonl"
    p.write_text('{"prompt": "a"}\n\n  \n{"prompt": "b"}\n', encoding="utf-8")
    assert list(iter_jsonl(p)) == [(1, {"prompt": "a"}), (4, {"prompt": "b"})]


def test_iter_jsonl_bad_line_is_one_line_error(tmp_path):
    p = tmp_path / "rows.jsonl"
    p.write_text('{"prompt": "a"}\n{oops\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"rows\.jsonl:2: not valid JSON") as info:
        list(iter_jsonl(p))
    assert "\n" not in str(info.value)
