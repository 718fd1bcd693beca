"""Question templates: gold SQL in terms of schema roles, each with six English wordings.

Placeholders (filled per database, see ``databases.py``):

* SQL identifiers: ``{E}`` entity table, ``{G}`` group table, ``{name_col}``, ``{cat_col}``,
  ``{num_col}``, ``{fk_col}`` (entity -> group), ``{gcat_col}``, ``{gnum_col}``.
* English words: ``{ent_s}``/``{ent_p}``, ``{name_w}``/``{name_p}``, ``{cat_w}``/``{cat_p}``,
  ``{num_w}``, ``{grp_s}``/``{grp_p}``, ``{gcat_w}``/``{gcat_p}``, ``{gnum_w}``, ``{prep}``
  (how an entity relates to its group: "employees in Sales", "books by Aiko Mori").
* Slot values: ``{cat}``, ``{cat2}``, ``{num}``, ``{name}``, ``{grp}``, ``{gcat}``, ``{gnum}``,
  ``{k}``, ``{cnt}``; in SQL they are rendered as literals (strings single-quoted).

Wordings are partitioned by index (``WORDING_GROUPS``): SFT sees 0-2, RL prompts use 3-4 (so RL
questions are phrased in ways SFT never saw), and the paraphrase evaluation uses 5 (seen by neither).
"""

from __future__ import annotations

import string
from dataclasses import dataclass

WORDING_GROUPS: dict[str, tuple[int, ...]] = {
    "train": (0, 1, 2),
    "rl": (3, 4),
    "heldout_paraphrase": (5,),
}
WORDINGS_PER_TEMPLATE = 6

# Join condition shared by every template that crosses the foreign key.
_JOIN = "{E} JOIN {G} ON {E}.{fk_col} = {G}.id"

VALUE_SLOTS = ("cat", "cat2", "num", "name", "grp", "gcat", "gnum", "k", "cnt")


def slot_kind(slot: str) -> str:
    """The value pool a slot draws from (``cat2`` is a second, different ``cat``)."""
    return slot.rstrip("2")


@dataclass(frozen=True)
class Template:
    """One question type: gold SQL over roles plus its wordings (index = wording_id)."""

    id: str
    sql: str
    wordings: tuple[str, ...]

    @property
    def slots(self) -> tuple[str, ...]:
        """Value slots used by the SQL, in first-use order."""
        fields = [name for _, name, _, _ in string.Formatter().parse(self.sql) if name]
        return tuple(dict.fromkeys(f for f in fields if f in VALUE_SLOTS))


TEMPLATES: tuple[Template, ...] = (
    Template("count_all", "SELECT COUNT(*) FROM {E};", (
        "How many {ent_p} are there?",
        "Count the {ent_p}.",
        "What is the total number of {ent_p}?",
        "Tell me how many {ent_p} exist.",
        "Give the number of {ent_p} in the database.",
        "What is the count of all {ent_p}?",
    )),
    Template("count_by_cat", "SELECT COUNT(*) FROM {E} WHERE {cat_col} = {cat};", (
        "How many {ent_p} have the {cat_w} {cat}?",
        "Count the {ent_p} whose {cat_w} is {cat}.",
        "What is the number of {ent_p} with {cat_w} {cat}?",
        "Find how many {ent_p} have {cat} as their {cat_w}.",
        "Return the count of {ent_p} where the {cat_w} equals {cat}.",
        "For {cat_w} {cat}, how many {ent_p} are listed?",
    )),
    Template("count_num_gt", "SELECT COUNT(*) FROM {E} WHERE {num_col} > {num};", (
        "How many {ent_p} have a {num_w} greater than {num}?",
        "Count the {ent_p} with {num_w} above {num}.",
        "What is the number of {ent_p} whose {num_w} exceeds {num}?",
        "Find the count of {ent_p} with a {num_w} over {num}.",
        "How many {ent_p} are there with {num_w} more than {num}?",
        "Tell me the number of {ent_p} having {num_w} larger than {num}.",
    )),
    Template("avg_num", "SELECT AVG({num_col}) FROM {E};", (
        "What is the average {num_w} of all {ent_p}?",
        "Find the mean {num_w} across {ent_p}.",
        "Compute the average {num_w} of {ent_p}.",
        "What {num_w} do {ent_p} have on average?",
        "Give the average value of {num_w} for the {ent_p}.",
        "On average, how large is the {num_w} of a {ent_s}?",
    )),
    Template("avg_num_by_cat", "SELECT AVG({num_col}) FROM {E} WHERE {cat_col} = {cat};", (
        "What is the average {num_w} of {ent_p} with {cat_w} {cat}?",
        "Find the mean {num_w} for {ent_p} whose {cat_w} is {cat}.",
        "Compute the average {num_w} among {cat} {ent_p}.",
        "For {ent_p} with the {cat_w} {cat}, what is their average {num_w}?",
        "Give the mean {num_w} of every {ent_s} whose {cat_w} is {cat}.",
        "What {num_w} do {ent_p} of {cat_w} {cat} have on average?",
    )),
    Template("max_num_by_cat", "SELECT MAX({num_col}) FROM {E} WHERE {cat_col} = {cat};", (
        "What is the highest {num_w} among {ent_p} with {cat_w} {cat}?",
        "Find the maximum {num_w} of {ent_p} whose {cat_w} is {cat}.",
        "Show the largest {num_w} for a {ent_s} with {cat_w} {cat}.",
        "What is the top {num_w} of any {ent_s} whose {cat_w} is {cat}?",
        "Return the greatest {num_w} held by a {ent_s} with the {cat_w} {cat}.",
        "Among {ent_p} having {cat_w} {cat}, which {num_w} is the biggest?",
    )),
    Template("min_num", "SELECT MIN({num_col}) FROM {E};", (
        "What is the lowest {num_w} of any {ent_s}?",
        "Find the minimum {num_w} among {ent_p}.",
        "Show the smallest {num_w} of all {ent_p}.",
        "Which {num_w} is the least among the {ent_p}?",
        "Return the minimum value of {num_w} over every {ent_s}.",
        "Tell me the bottom {num_w} found among {ent_p}.",
    )),
    Template("sum_num_by_cat", "SELECT SUM({num_col}) FROM {E} WHERE {cat_col} = {cat};", (
        "What is the sum of the {num_w} of {ent_p} with {cat_w} {cat}?",
        "Find the sum of {num_w} for {ent_p} whose {cat_w} is {cat}.",
        "Add up the {num_w} of all {ent_p} with the {cat_w} {cat}.",
        "Compute the combined {num_w} of every {ent_s} whose {cat_w} is {cat}.",
        "Give the summed {num_w} over {ent_p} with {cat_w} {cat}.",
        "If you total the {num_w} of {ent_p} having {cat_w} {cat}, what do you get?",
    )),
    Template("names_by_cat", "SELECT {name_col} FROM {E} WHERE {cat_col} = {cat};", (
        "List the {name_p} of {ent_p} with {cat_w} {cat}.",
        "What are the {name_p} of the {ent_p} whose {cat_w} is {cat}?",
        "Show the {name_w} of every {ent_s} with the {cat_w} {cat}.",
        "Which {ent_p} have {cat} as their {cat_w}? Give their {name_p}.",
        "Return the {name_p} for all {ent_p} where {cat_w} is {cat}.",
        "I need the {name_p} of {ent_p} having {cat_w} {cat}.",
    )),
    Template("names_num_gt", "SELECT {name_col} FROM {E} WHERE {num_col} > {num};", (
        "List the {name_p} of {ent_p} with a {num_w} greater than {num}.",
        "Which {ent_p} have a {num_w} above {num}? Show their {name_p}.",
        "Show the {name_p} of {ent_p} whose {num_w} exceeds {num}.",
        "Return the {name_w} of every {ent_s} with {num_w} over {num}.",
        "Find {ent_p} with a {num_w} higher than {num} and list their {name_p}.",
        "I need the {name_p} of {ent_p} having {num_w} larger than {num}.",
    )),
    Template("names_num_lt", "SELECT {name_col} FROM {E} WHERE {num_col} < {num};", (
        "List the {name_p} of {ent_p} with a {num_w} less than {num}.",
        "Which {ent_p} have a {num_w} below {num}? Show their {name_p}.",
        "Show the {name_p} of {ent_p} whose {num_w} is under {num}.",
        "Return the {name_w} of every {ent_s} with {num_w} smaller than {num}.",
        "Find {ent_p} with a {num_w} lower than {num} and list their {name_p}.",
        "I need the {name_p} of {ent_p} having {num_w} beneath {num}.",
    )),
    Template("names_cat_and_num",
             "SELECT {name_col} FROM {E} WHERE {cat_col} = {cat} AND {num_col} > {num};", (
        "List the {name_p} of {ent_p} with {cat_w} {cat} and a {num_w} greater than {num}.",
        "Which {ent_p} have the {cat_w} {cat} and a {num_w} above {num}?",
        "Show the {name_p} of {cat} {ent_p} whose {num_w} exceeds {num}.",
        "Return the {name_w} of every {ent_s} whose {cat_w} is {cat} and whose {num_w} is over {num}.",
        "Find {ent_p} that have {cat_w} {cat} as well as a {num_w} higher than {num}.",
        "Among {ent_p} with the {cat_w} {cat}, which ones have a {num_w} larger than {num}?",
    )),
    Template("names_cat_or_cat",
             "SELECT {name_col} FROM {E} WHERE {cat_col} = {cat} OR {cat_col} = {cat2};", (
        "List the {name_p} of {ent_p} whose {cat_w} is {cat} or {cat2}.",
        "Which {ent_p} have the {cat_w} {cat} or the {cat_w} {cat2}?",
        "Show the {name_p} of {ent_p} with {cat_w} either {cat} or {cat2}.",
        "Return the {name_w} of every {ent_s} whose {cat_w} is one of {cat} and {cat2}.",
        "Find {ent_p} with {cat_w} {cat} as well as those with {cat_w} {cat2}.",
        "Give me all {ent_p}, by {name_w}, that are {cat} or {cat2} in {cat_w}.",
    )),
    Template("num_of_name", "SELECT {num_col} FROM {E} WHERE {name_col} = {name};", (
        "What is the {num_w} of {name}?",
        "Show the {num_w} of the {ent_s} {name}.",
        "Find the {num_w} for {name}.",
        "Tell me the {num_w} that {name} has.",
        "Which {num_w} does the {ent_s} {name} have?",
        "How much {num_w} is recorded for {name}?",
    )),
    Template("cat_of_name", "SELECT {cat_col} FROM {E} WHERE {name_col} = {name};", (
        "What is the {cat_w} of {name}?",
        "Show the {cat_w} of the {ent_s} {name}.",
        "Find the {cat_w} for {name}.",
        "Tell me the {cat_w} that {name} has.",
        "Which {cat_w} does the {ent_s} {name} have?",
        "Look up the {cat_w} recorded for {name}.",
    )),
    Template("top_k_by_num", "SELECT {name_col} FROM {E} ORDER BY {num_col} DESC LIMIT {k};", (
        "List the {name_p} of the {k} {ent_p} with the highest {num_w}.",
        "Which {k} {ent_p} have the largest {num_w}?",
        "Show the top {k} {ent_p} by {num_w}.",
        "Return the {name_p} of the {k} {ent_p} whose {num_w} is greatest, highest first.",
        "Find the {k} {ent_p} with the most {num_w}, in descending order.",
        "Give me the {k} {ent_p} ranking highest in {num_w}.",
    )),
    Template("bottom_k_by_num", "SELECT {name_col} FROM {E} ORDER BY {num_col} ASC LIMIT {k};", (
        "List the {name_p} of the {k} {ent_p} with the lowest {num_w}.",
        "Which {k} {ent_p} have the smallest {num_w}?",
        "Show the bottom {k} {ent_p} by {num_w}.",
        "Return the {name_p} of the {k} {ent_p} whose {num_w} is least, lowest first.",
        "Find the {k} {ent_p} with the least {num_w}, in ascending order.",
        "Give me the {k} {ent_p} ranking lowest in {num_w}.",
    )),
    Template("argmax_num", "SELECT {name_col} FROM {E} ORDER BY {num_col} DESC LIMIT 1;", (
        "Which {ent_s} has the highest {num_w}?",
        "What is the {name_w} of the {ent_s} with the largest {num_w}?",
        "Show the {ent_s} with the maximum {num_w}.",
        "Find the {ent_s} whose {num_w} is the greatest.",
        "Return the {name_w} of the top {ent_s} by {num_w}.",
        "Among all {ent_p}, which one has the most {num_w}?",
    )),
    Template("names_by_cat_ordered",
             "SELECT {name_col} FROM {E} WHERE {cat_col} = {cat} ORDER BY {num_col} DESC;", (
        "List the {name_p} of {ent_p} with {cat_w} {cat}, sorted by {num_w} from highest to lowest.",
        "Show {ent_p} whose {cat_w} is {cat} in descending order of {num_w}.",
        "What are the {name_p} of {cat} {ent_p}, ordered by {num_w} descending?",
        "Sort the {ent_p} with {cat_w} {cat} by {num_w}, largest first, and give their {name_p}.",
        "Return the {name_p} of every {ent_s} whose {cat_w} is {cat}, highest {num_w} first.",
        "Rank the {ent_p} having {cat_w} {cat} by decreasing {num_w}.",
    )),
    Template("distinct_cat", "SELECT DISTINCT {cat_col} FROM {E};", (
        "List the distinct {cat_p} of {ent_p}.",
        "What are the different {cat_p} among {ent_p}?",
        "Show all unique {cat_p} of the {ent_p}.",
        "Which {cat_p} occur among the {ent_p}? List each once.",
        "Return every different {cat_w} that some {ent_s} has.",
        "Enumerate the {cat_p} present among {ent_p} without repeats.",
    )),
    Template("count_distinct_cat", "SELECT COUNT(DISTINCT {cat_col}) FROM {E};", (
        "How many different {cat_p} do {ent_p} have?",
        "Count the distinct {cat_p} among {ent_p}.",
        "What is the number of unique {cat_p} of {ent_p}?",
        "Find how many distinct {cat_w} values the {ent_p} cover.",
        "Return the number of separate {cat_p} held by {ent_p}.",
        "How many {cat_p} are represented among the {ent_p}?",
    )),
    Template("count_per_cat", "SELECT {cat_col}, COUNT(*) FROM {E} GROUP BY {cat_col};", (
        "How many {ent_p} are there for each {cat_w}?",
        "Count the {ent_p} in each {cat_w}.",
        "Show each {cat_w} and the number of {ent_p} with it.",
        "For every {cat_w}, give the count of {ent_p}.",
        "Group the {ent_p} by {cat_w} and report how many are in each group.",
        "What is the {ent_s} count per {cat_w}?",
    )),
    Template("avg_per_cat", "SELECT {cat_col}, AVG({num_col}) FROM {E} GROUP BY {cat_col};", (
        "What is the average {num_w} for each {cat_w}?",
        "Show each {cat_w} with the mean {num_w} of its {ent_p}.",
        "Compute the average {num_w} of {ent_p} per {cat_w}.",
        "For every {cat_w}, give the mean {num_w} of the {ent_p}.",
        "Group the {ent_p} by {cat_w} and report the average {num_w} of each group.",
        "Break down the average {num_w} by {cat_w}.",
    )),
    Template("cat_having_count",
             "SELECT {cat_col} FROM {E} GROUP BY {cat_col} HAVING COUNT(*) > {cnt};", (
        "Which {cat_p} have more than {cnt} {ent_p}?",
        "List the {cat_p} shared by more than {cnt} {ent_p}.",
        "Show each {cat_w} that over {cnt} {ent_p} have.",
        "Find the {cat_p} with a {ent_s} count greater than {cnt}.",
        "Return every {cat_w} held by more than {cnt} {ent_p}.",
        "What {cat_p} occur among more than {cnt} {ent_p}?",
    )),
    Template("count_in_grp", f"SELECT COUNT(*) FROM {_JOIN} WHERE {{G}}.name = {{grp}};", (
        "How many {ent_p} are {prep} the {grp_s} {grp}?",
        "Count the {ent_p} {prep} {grp}.",
        "What is the number of {ent_p} whose {grp_s} is {grp}?",
        "Find how many {ent_p} belong to the {grp_s} named {grp}.",
        "Return the count of {ent_p} linked to {grp_s} {grp}.",
        "For the {grp_s} {grp}, how many {ent_p} does it have?",
    )),
    Template("names_in_grp", f"SELECT {{E}}.{{name_col}} FROM {_JOIN} WHERE {{G}}.name = {{grp}};", (
        "List the {name_p} of {ent_p} {prep} {grp}.",
        "Which {ent_p} are {prep} the {grp_s} {grp}?",
        "Show the {name_p} of all {ent_p} whose {grp_s} is {grp}.",
        "Return the {name_w} of every {ent_s} belonging to the {grp_s} named {grp}.",
        "Find the {ent_p} linked to {grp_s} {grp} and give their {name_p}.",
        "Give me the {ent_p} that {grp_s} {grp} has.",
    )),
    Template("grp_of_name", f"SELECT {{G}}.name FROM {_JOIN} WHERE {{E}}.{{name_col}} = {{name}};", (
        "Which {grp_s} is {name} {prep}?",
        "What is the {grp_s} of {name}?",
        "Show the {grp_s} name for the {ent_s} {name}.",
        "Find which {grp_s} the {ent_s} {name} belongs to.",
        "Return the name of the {grp_s} linked to {name}.",
        "Tell me the {grp_s} that {name} is associated with.",
    )),
    Template("names_by_gcat",
             f"SELECT {{E}}.{{name_col}} FROM {_JOIN} WHERE {{G}}.{{gcat_col}} = {{gcat}};", (
        "List the {name_p} of {ent_p} whose {grp_s} has {gcat_w} {gcat}.",
        "Which {ent_p} belong to a {grp_s} with the {gcat_w} {gcat}?",
        "Show the {name_p} of {ent_p} {prep} {grp_p} in {gcat}.",
        "Return the {name_w} of every {ent_s} whose {grp_s} is located in {gcat}.",
        "Find the {ent_p} linked to a {grp_s} from {gcat} and give their {name_p}.",
        "Give me the {ent_p} whose {grp_s} has {gcat} as its {gcat_w}.",
    )),
    Template("count_per_grp", f"SELECT {{G}}.name, COUNT(*) FROM {_JOIN} GROUP BY {{G}}.name;", (
        "How many {ent_p} does each {grp_s} have?",
        "Show each {grp_s} name with its number of {ent_p}.",
        "Count the {ent_p} for every {grp_s}.",
        "For each {grp_s}, give its name and how many {ent_p} it has.",
        "Group the {ent_p} by {grp_s} and report the size of each group.",
        "What is the {ent_s} count per {grp_s}?",
    )),
    Template("grp_having_count",
             f"SELECT {{G}}.name FROM {_JOIN} GROUP BY {{G}}.name HAVING COUNT(*) > {{cnt}};", (
        "Which {grp_p} have more than {cnt} {ent_p}?",
        "List the names of {grp_p} with over {cnt} {ent_p}.",
        "Show the {grp_p} that have more than {cnt} {ent_p}.",
        "Find every {grp_s} whose number of {ent_p} exceeds {cnt}.",
        "Return the {grp_p} linked to more than {cnt} {ent_p}.",
        "Name the {grp_p} counting above {cnt} {ent_p}.",
    )),
    Template("avg_in_grp", f"SELECT AVG({{E}}.{{num_col}}) FROM {_JOIN} WHERE {{G}}.name = {{grp}};", (
        "What is the average {num_w} of {ent_p} {prep} {grp}?",
        "Find the mean {num_w} of the {ent_p} whose {grp_s} is {grp}.",
        "Compute the average {num_w} of {ent_p} for the {grp_s} {grp}.",
        "For {ent_p} belonging to the {grp_s} named {grp}, what is their average {num_w}?",
        "Give the mean {num_w} across {ent_p} linked to {grp_s} {grp}.",
        "On average, how much {num_w} do {ent_p} of {grp_s} {grp} have?",
    )),
    Template("grp_gnum_gt", "SELECT name FROM {G} WHERE {gnum_col} > {gnum};", (
        "Which {grp_p} have a {gnum_w} greater than {gnum}?",
        "List the names of {grp_p} with a {gnum_w} above {gnum}.",
        "Show the {grp_p} whose {gnum_w} exceeds {gnum}.",
        "Find every {grp_s} with a {gnum_w} over {gnum}.",
        "Return the names of {grp_p} having a {gnum_w} higher than {gnum}.",
        "Name the {grp_p} whose {gnum_w} is larger than {gnum}.",
    )),
    Template("grp_by_gcat", "SELECT name FROM {G} WHERE {gcat_col} = {gcat};", (
        "Which {grp_p} have the {gcat_w} {gcat}?",
        "List the names of {grp_p} in {gcat}.",
        "Show the {grp_p} whose {gcat_w} is {gcat}.",
        "Find every {grp_s} located in {gcat}.",
        "Return the names of {grp_p} with {gcat} as {gcat_w}.",
        "Name the {grp_p} based in {gcat}.",
    )),
)

TEMPLATES_BY_ID: dict[str, Template] = {t.id: t for t in TEMPLATES}


def sql_literal(value: str | int | float) -> str:
    """A value as canonical SQL: strings single-quoted (quotes doubled), numbers bare."""
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


def render(template: Template, wording_id: int, words: dict[str, str], identifiers: dict[str, str],
           values: dict[str, str | int]) -> tuple[str, str]:
    """Instantiate one template on one database: returns (question, gold SQL)."""
    question = template.wordings[wording_id].format(**words, **values)
    question = question[0].upper() + question[1:]
    sql = template.sql.format(**identifiers, **{k: sql_literal(v) for k, v in values.items()})
    return question, sql
