"""Reward functions: correct, wrong, invalid, hostile and timing-out SQL, checked against
hand-computed values."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path

import pytest

from kubetune.tasks.text2sql import REWARD_VARIANTS, text2sql_reward
from kubetune.tasks.text2sql.rewards import OVERLAP_CREDIT, VALID_CREDIT

GOLD = "SELECT name FROM player WHERE goals > 10;"  # Ana, Bo, Cy


@pytest.fixture()
def db(tmp_path: Path) -> Path:
    path = tmp_path / "football.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE player (id INTEGER PRIMARY KEY, name TEXT, goals INTEGER)")
    conn.executemany("INSERT INTO player VALUES (?, ?, ?)",
                     [(1, "Ana", 30), (2, "Bo", 20), (3, "Cy", 15), (4, "Di", 5), (5, "Ed", 1)])
    conn.commit()
    conn.close()
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_correct_scores_one_in_every_variant(db: Path) -> None:
    # Different text, same result: a completion with prose after the first statement.
    completion = " SELECT name FROM player WHERE goals >= 15; -- the scorers\nSELECT 1;"
    for variant in REWARD_VARIANTS:
        reward = text2sql_reward(db, completion, GOLD, variant)
        assert reward.value == 1.0 and reward.valid
        assert reward.sql == "SELECT name FROM player WHERE goals >= 15;"
    assert text2sql_reward(db, completion, GOLD, "shaped").correct


def test_wrong_but_valid(db: Path) -> None:
    wrong = " SELECT name FROM player WHERE goals > 18;"  # Ana, Bo: 2 of the 3 gold rows, nothing extra
    assert text2sql_reward(db, wrong, GOLD, "execution").value == 0.0
    assert text2sql_reward(db, wrong, GOLD, "format").value == 1.0
    shaped = text2sql_reward(db, wrong, GOLD, "shaped")
    assert not shaped.correct and shaped.valid
    # Multiset Jaccard by hand: |{Ana,Bo}| / |{Ana,Bo,Cy}| = 2/3.
    assert shaped.value == pytest.approx(VALID_CREDIT + OVERLAP_CREDIT * 2 / 3)
    disjoint = text2sql_reward(db, " SELECT name FROM player WHERE goals < 10;", GOLD, "shaped")
    assert disjoint.value == pytest.approx(VALID_CREDIT)  # runs, shares no row


def test_shaped_never_lets_wrong_outscore_right(db: Path) -> None:
    superset = text2sql_reward(db, " SELECT name FROM player;", GOLD, "shaped")  # 3 of 5 rows shared
    assert superset.value == pytest.approx(VALID_CREDIT + OVERLAP_CREDIT * 3 / 5)
    assert superset.value < 0.5 < text2sql_reward(db, GOLD, GOLD, "shaped").value


@pytest.mark.parametrize("completion", [" SELEC name FROM player;", " SELECT nope FROM player;", "",
                                        "The answer is 3."])
def test_invalid_sql_scores_zero(db: Path, completion: str) -> None:
    for variant in REWARD_VARIANTS:
        reward = text2sql_reward(db, completion, GOLD, variant)
        assert reward.value == 0.0 and not reward.valid and not reward.correct
        assert reward.error


@pytest.mark.parametrize("completion", [
    " DROP TABLE player;",
    " DELETE FROM player;",
    " UPDATE player SET goals = 99;",
    " ATTACH DATABASE 'x.sqlite' AS x;",
    " PRAGMA writable_schema = 1;",
])
def test_hostile_sql_scores_zero_and_changes_nothing(db: Path, completion: str) -> None:
    before = digest(db)
    for variant in REWARD_VARIANTS:
        reward = text2sql_reward(db, completion, GOLD, variant)
        assert reward.value == 0.0 and not reward.valid
    assert digest(db) == before
    assert text2sql_reward(db, GOLD, GOLD).value == 1.0  # the data is still there


def test_timing_out_sql_is_bounded_and_scores_zero(db: Path) -> None:
    endless = " WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n;"
    started = time.perf_counter()
    reward = text2sql_reward(db, endless, GOLD, "shaped", timeout_s=0.2)
    assert time.perf_counter() - started < 2.0
    assert reward.value == 0.0 and reward.timed_out and not reward.valid


def test_unknown_variant_is_a_clear_error(db: Path) -> None:
    with pytest.raises(ValueError, match="unknown reward variant 'partial'.*execution, format, shaped"):
        text2sql_reward(db, GOLD, GOLD, "partial")  # type: ignore[arg-type]
