"""Pair files: the real LFW protocol files, CSV pairs, and every malformed case naming its line."""
from __future__ import annotations

from pathlib import Path

import pytest

from cdfv.eval.protocol import NO_FOLD, ProtocolError, folds_of, lfw_key, read_pairs


def test_view2_pairs_real(lfw_meta: Path) -> None:
    pairs = read_pairs(lfw_meta / "pairs.txt")
    assert len(pairs) == 6000
    assert sum(p.label for p in pairs) == 3000
    assert folds_of(pairs) == 10
    for fold in range(10):
        members = [p for p in pairs if p.fold == fold]
        assert len(members) == 600 and sum(p.label for p in members) == 300
    assert pairs[0].probe == "Abel_Pacheco__Abel_Pacheco_0001"
    assert pairs[0].reference == "Abel_Pacheco__Abel_Pacheco_0004"
    assert [p.index for p in pairs] == list(range(6000))


@pytest.mark.parametrize("name, count", [("pairsDevTrain.txt", 2200), ("pairsDevTest.txt", 1000)])
def test_view1_pairs_real(lfw_meta: Path, name: str, count: int) -> None:
    pairs = read_pairs(lfw_meta / name)
    assert len(pairs) == count
    assert sum(p.label for p in pairs) == count // 2
    assert all(p.label for p in pairs[: count // 2]) and not any(p.label for p in pairs[count // 2 :])
    assert {p.fold for p in pairs} == {NO_FOLD}
    assert folds_of(pairs) == 0


def test_lfw_key_sanitises() -> None:
    assert lfw_key("Jean-Pierre_Raffarin", 3) == "Jean-Pierre_Raffarin__Jean-Pierre_Raffarin_0003"
    assert lfw_key("J.C._Watts", 1) == "J-C-_Watts__J-C-_Watts_0001"


def test_csv_pairs(tmp_path: Path) -> None:
    path = tmp_path / "pairs.csv"
    path.write_text("probe,reference,label,fold\na__1,a__2,1,0\na__1,b__1,false,1\n\n")
    pairs = read_pairs(path)
    assert [(p.probe, p.reference, p.label, p.fold) for p in pairs] == [("a__1", "a__2", True, 0), ("a__1", "b__1", False, 1)]
    path.write_text("probe,reference,label\nx,y,same\n")
    assert read_pairs(path)[0].fold == NO_FOLD


VIEW2_OK = "2\t1\nA\t1\t2\nA\t1\tB\t1\nC\t1\t3\nC\t2\tD\t4\n"

MALFORMED = [
    ("", 1, "empty first line"),
    ("ten\t300\nA\t1\t2\n", 1, "header"),
    ("2\t1\t5\nA\t1\t2\n", 1, "header"),
    ("0\n", 1, "header"),
    ("2\t1\nA\t1\t2\nA\t1\tB\t1\nC\t1\t3\n", 5, "promises 4 pairs, the file has 3"),
    (VIEW2_OK + "E\t1\t2\n", 6, "promises 4 pairs, the file has 5"),
    ("2\t1\nA\t1\nA\t1\tB\t1\nC\t1\t3\nC\t2\tD\t4\n", 2, "needs 3 fields"),
    ("2\t1\nA\t1\t2\nA\t1\tB\nC\t1\t3\nC\t2\tD\t4\n", 3, "needs 4 fields"),
    ("2\t1\nA\t1\t2\nA\t1\tB\t1\nC\tx\t3\nC\t2\tD\t4\n", 4, "'x' is not an integer"),
    ("2\t1\nA\t1\t2\nA\t1\tB\t1\nC\t0\t3\nC\t2\tD\t4\n", 4, "must be 1 or more"),
    ("2\t1\nA\t1\t2\nA\t1\tA\t3\nC\t1\t3\nC\t2\tD\t4\n", 3, "names the same person"),
    ("2\t1\nA\t1\t2\n\nC\t1\t3\nC\t2\tD\t4\n", 3, "blank line"),
    ("1\nA\t1\t2\nB\t1\t2\n", 3, "needs 4 fields"),
    ("probe,reference\na,b\n", 1, "CSV header"),
    ("probe,reference,label,fold,extra\na,b,1,0,0\n", 1, "CSV header"),
    ("probe,reference,label\na,b,maybe\n", 2, "label 'maybe'"),
    ("probe,reference,label\na,b\n", 2, "expected 3 columns"),
    ("probe,reference,label\n,b,1\n", 2, "empty key"),
    ("probe,reference,label,fold\na,b,1,x\n", 2, "fold 'x'"),
    ("probe,reference,label,fold\na,b,1,-2\n", 2, "from 0 to 2^31 - 1"),
    ("probe,reference,label\n", 1, "no pairs"),
]


@pytest.mark.parametrize("text, line, problem", MALFORMED)
def test_malformed_pair_files(tmp_path: Path, text: str, line: int, problem: str) -> None:
    path = tmp_path / "pairs.txt"
    path.write_text(text)
    with pytest.raises(ProtocolError) as err:
        read_pairs(path)
    assert f"{path}:{line}:" in str(err.value)
    assert problem in str(err.value)


def test_view2_ok_and_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "pairs.txt"
    path.write_text(VIEW2_OK)
    pairs = read_pairs(path)
    assert [(p.fold, p.label) for p in pairs] == [(0, True), (0, False), (1, True), (1, False)]
    assert pairs[3].reference == "D__D_0004"
    with pytest.raises(ProtocolError, match="cannot read"):
        read_pairs(tmp_path / "absent.txt")
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ProtocolError, match="not a text file"):
        read_pairs(path)


def test_cli_reports_a_malformed_pairs_file_in_one_line_not_a_traceback(tmp_path, monkeypatch) -> None:
    from click.testing import CliRunner

    from cdfv.eval.cli import main

    bad = tmp_path / "pairs.txt"
    bad.write_text("10\t300\nAbel_Pacheco\t1\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["--pairs", str(bad), "--faces", "faces", "--image-model", str(bad)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)  # a ClickException, not an escaped error
    assert f"Error: {bad}:3: header promises 6000 pairs" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "results").exists()  # refused before making its default --out
