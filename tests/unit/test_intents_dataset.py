"""Labelled CSV files: columns, out-of-scope labels, and errors that name the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from mvm_chat.errors import ConfigError
from mvm_chat.intents.dataset import (
    OUT_OF_SCOPE,
    LabelledText,
    read_labelled_csv,
    read_training_csv,
)


def write(tmp_path: Path, content: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    return path


def test_reads_label_or_category_column_and_normalises_oos(tmp_path: Path) -> None:
    labelled = write(tmp_path, "text,label\nhello there,greet\nwhat is love, OOS \n")
    categorised = write(tmp_path, "category,text\ngreet,hi\nout_of_scope,weather?\n", "b.csv")

    assert read_labelled_csv(labelled) == [
        LabelledText("hello there", "greet", 2),
        LabelledText("what is love", OUT_OF_SCOPE, 3),
    ]
    rows = read_labelled_csv(categorised)
    assert [(r.text, r.label, r.in_scope) for r in rows] == [
        ("hi", "greet", True),
        ("weather?", OUT_OF_SCOPE, False),
    ]


def test_quoted_fields_and_a_byte_order_mark(tmp_path: Path) -> None:
    path = write(tmp_path, '\ufefftext,label\n"yes, please",confirm\n"no, thanks",deny\n')

    assert [r.text for r in read_labelled_csv(path)] == ["yes, please", "no, thanks"]


@pytest.mark.parametrize(
    ("content", "line", "words"),
    [
        ("", 1, "empty"),
        ("\n\n", 1, "empty"),
        ("words,label\nhi,greet\n", 1, "missing column 'text'"),
        ("text,intent\nhi,greet\n", 1, "missing column 'label' or 'category'"),
        ("text,label\n", 2, "no rows"),
        ("text,label\nhi,greet\n  ,greet\n", 3, "empty text"),
        ("text,label\nhi,greet\nhello,\n", 3, "empty label"),
    ],
)
def test_malformed_files_name_the_file_and_line(
    tmp_path: Path, content: str, line: int, words: str
) -> None:
    path = write(tmp_path, content)

    with pytest.raises(ConfigError) as caught:
        read_labelled_csv(path)

    assert f"{path}:{line}:" in str(caught.value)
    assert words in str(caught.value)


def test_a_label_with_one_example_is_refused_for_training(tmp_path: Path) -> None:
    content = "text,label\nhi,greet\nhello,greet\nbye,farewell\nweather?,oos\nnews?,oos\n"
    path = write(tmp_path, content)

    with pytest.raises(ConfigError) as caught:
        read_training_csv(path)

    assert f"{path}:4:" in str(caught.value)
    assert "'farewell' has only one example" in str(caught.value)
    assert len(read_labelled_csv(path)) == 5  # test data may have single examples


def test_out_of_scope_rows_are_not_a_label_to_train(tmp_path: Path) -> None:
    path = write(tmp_path, "text,label\nhi,greet\nhello,greet\nweather?,oos\nnews?,oos\n")

    with pytest.raises(ConfigError) as caught:
        read_training_csv(path)

    assert f"{path}:5:" in str(caught.value)
    assert "at least two are needed" in str(caught.value)


def test_one_out_of_scope_row_is_allowed_in_training(tmp_path: Path) -> None:
    path = write(
        tmp_path, "text,label\nhi,greet\nhello,greet\nbye,farewell\nciao,farewell\nx,oos\n"
    )

    assert [r.label for r in read_training_csv(path)][-1] == OUT_OF_SCOPE


def test_missing_and_binary_files_are_config_errors(tmp_path: Path) -> None:
    binary = tmp_path / "model.bin"
    binary.write_bytes(b"text,label\nhi,greet\n\xff\xfe\x00\x01,greet\n")

    with pytest.raises(ConfigError, match="not UTF-8") as caught:
        read_labelled_csv(binary)
    assert f"{binary}:3:" in str(caught.value)
    with pytest.raises(ConfigError, match="cannot read"):
        read_labelled_csv(tmp_path / "absent.csv")
