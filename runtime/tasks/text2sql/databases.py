"""The four SQLite databases of the embedded text-to-SQL task: schemas, words, and seeded rows.

Every database has the same *shape* so that one template set instantiates on all of them:

* a group table ``G(id, name, <gcat>, <gnum>)`` (departments, clubs, authors, stores), and
* an entity table ``E(id, <name>, <cat>, <num>, <fk>)`` (employees, players, books, products)
  whose ``<fk>`` references ``G.id``.

Templates talk about roles (``cat_col``, ``num_col``...), each database maps the roles to its own
identifiers and English words, so the held-out database gets the same questions with new words.
Schemas are tiny on purpose: a 5 M-parameter model with a 4k vocabulary reads them in its prompt.
"""

from __future__ import annotations

import itertools
import random
import sqlite3
from dataclasses import dataclass
from pathlib import Path

# Fraction of each value pool reserved for held-out splits: every third value (index % 3 == 2).
HELDOUT_EVERY = 3

# Rows per table: tens of rows keep gold results small and queries instant.
GROUP_ROWS = 10
ENTITY_ROWS = 48


@dataclass(frozen=True)
class DatabaseSpec:
    """One database: identifiers, English words for each role, and the pools rows are drawn from."""

    db_id: str
    # Identifiers (table and column names) per role.
    group_table: str
    gcat_col: str
    gnum_col: str
    entity_table: str
    name_col: str
    cat_col: str
    num_col: str
    fk_col: str
    num_type: str  # INTEGER or REAL
    # English words per role; plurals spelled out because "city" + "s" is not English.
    words: dict[str, str]
    # Value pools.
    group_names: tuple[str, ...]
    gcat_values: tuple[str, ...]
    gnum_range: tuple[int, int, int]  # range(lo, hi, step) sampled without replacement
    cat_values: tuple[str, ...]
    num_range: tuple[int, int, int]
    num_scale: int  # stored value = drawn integer / num_scale (100 gives prices in cents)
    name_parts: tuple[tuple[str, ...], tuple[str, ...]]  # entity name = "<a><sep><b>"
    name_format: str
    num_thresholds: tuple[int, ...]
    gnum_thresholds: tuple[int, ...]

    def ddl(self) -> tuple[str, str]:
        """CREATE TABLE statements, group table first (the entity table references it)."""
        return (
            f"CREATE TABLE {self.group_table} (id INTEGER PRIMARY KEY, name TEXT, "
            f"{self.gcat_col} TEXT, {self.gnum_col} INTEGER)",
            f"CREATE TABLE {self.entity_table} (id INTEGER PRIMARY KEY, {self.name_col} TEXT, "
            f"{self.cat_col} TEXT, {self.num_col} {self.num_type}, "
            f"{self.fk_col} INTEGER REFERENCES {self.group_table}(id))",
        )

    def identifiers(self) -> dict[str, str]:
        """Role -> SQL identifier, for filling SQL templates."""
        return {
            "G": self.group_table,
            "gcat_col": self.gcat_col,
            "gnum_col": self.gnum_col,
            "E": self.entity_table,
            "name_col": self.name_col,
            "cat_col": self.cat_col,
            "num_col": self.num_col,
            "fk_col": self.fk_col,
        }


# Slot values shared by all databases (LIMIT k, HAVING COUNT(*) > cnt).
K_VALUES = (2, 3, 4, 5, 6, 7)
CNT_VALUES = (2, 3, 4, 5, 6, 7, 8, 9)

DATABASES: tuple[DatabaseSpec, ...] = (
    DatabaseSpec(
        db_id="company",
        group_table="department",
        gcat_col="city",
        gnum_col="budget",
        entity_table="employee",
        name_col="name",
        cat_col="role",
        num_col="salary",
        fk_col="department_id",
        num_type="INTEGER",
        words=dict(
            ent_s="employee", ent_p="employees", name_w="name", name_p="names", cat_w="role",
            cat_p="roles", num_w="salary", grp_s="department", grp_p="departments", gcat_w="city",
            gcat_p="cities", gnum_w="budget", prep="in",
        ),
        group_names=("Sales", "Marketing", "Engineering", "Finance", "Legal", "Support", "Research",
                     "Operations", "Purchasing", "Training"),
        gcat_values=("Boston", "Chicago", "Denver", "Seattle", "Atlanta"),
        gnum_range=(150_000, 950_000, 10_000),
        cat_values=("Engineer", "Manager", "Analyst", "Accountant", "Technician", "Consultant"),
        num_range=(42_000, 148_000, 500),
        num_scale=1,
        name_parts=(
            ("Alice", "Brian", "Carmen", "Daniel", "Elena", "Farid", "Grace", "Hector", "Irene", "Jonas",
             "Keiko", "Liam"),
            ("Anderson", "Brooks", "Castillo", "Dawson", "Ellis", "Fischer", "Gupta", "Hughes", "Ivanova",
             "Jensen"),
        ),
        name_format="{} {}",
        num_thresholds=(50_000, 60_000, 70_000, 80_000, 90_000, 100_000, 110_000, 120_000, 130_000),
        gnum_thresholds=(300_000, 400_000, 500_000, 600_000, 700_000, 800_000),
    ),
    DatabaseSpec(
        db_id="football",
        group_table="club",
        gcat_col="city",
        gnum_col="capacity",
        entity_table="player",
        name_col="name",
        cat_col="position",
        num_col="goals",
        fk_col="club_id",
        num_type="INTEGER",
        words=dict(
            ent_s="player", ent_p="players", name_w="name", name_p="names", cat_w="position",
            cat_p="positions", num_w="goal total", grp_s="club", grp_p="clubs", gcat_w="city",
            gcat_p="cities", gnum_w="stadium capacity", prep="at",
        ),
        group_names=("Harbor Rovers", "Northfield United", "Eastgate Athletic", "Riverside Wanderers",
                     "Kingsbury Town", "Westmoor City", "Ashford Rangers", "Oakvale Albion",
                     "Lakeside Celtic", "Stonebridge FC"),
        gcat_values=("Leeds", "Bristol", "Dublin", "Glasgow", "Cardiff"),
        gnum_range=(8_000, 60_000, 500),
        cat_values=("Goalkeeper", "Defender", "Midfielder", "Forward", "Winger", "Striker"),
        num_range=(0, 90, 1),
        num_scale=1,
        name_parts=(
            ("Marco", "Nina", "Oscar", "Priya", "Quentin", "Rosa", "Samuel", "Tanya", "Umar", "Vera",
             "Wesley", "Yara"),
            ("Moreno", "Novak", "Okafor", "Petrov", "Quinn", "Rossi", "Silva", "Tanaka", "Usman", "Varga",
             "Walsh"),
        ),
        name_format="{} {}",
        num_thresholds=(10, 20, 30, 40, 50, 60, 70, 80),
        gnum_thresholds=(15_000, 20_000, 25_000, 30_000, 40_000, 50_000),
    ),
    DatabaseSpec(
        db_id="library",
        group_table="author",
        gcat_col="country",
        gnum_col="birth_year",
        entity_table="book",
        name_col="title",
        cat_col="genre",
        num_col="pages",
        fk_col="author_id",
        num_type="INTEGER",
        words=dict(
            ent_s="book", ent_p="books", name_w="title", name_p="titles", cat_w="genre",
            cat_p="genres", num_w="page count", grp_s="author", grp_p="authors", gcat_w="country",
            gcat_p="countries", gnum_w="birth year", prep="by",
        ),
        group_names=("Helen Marsh", "Tomas Berg", "Aiko Mori", "Rafael Costa", "Ingrid Lund",
                     "Owen Clarke", "Sofia Ricci", "Kwame Mensah", "Lucia Ferreira", "Niall Byrne"),
        gcat_values=("Canada", "Ireland", "Norway", "Brazil", "Japan"),
        gnum_range=(1900, 1995, 1),
        cat_values=("Mystery", "Romance", "Fantasy", "History", "Poetry", "Biography"),
        num_range=(90, 900, 1),
        num_scale=1,
        name_parts=(
            ("Silent", "Hidden", "Broken", "Golden", "Distant", "Frozen", "Crimson", "Forgotten"),
            ("River", "Garden", "Tower", "Letter", "Harbor", "Forest", "Mirror", "Voyage"),
        ),
        name_format="The {} {}",
        num_thresholds=(150, 200, 300, 400, 500, 600, 700, 800),
        gnum_thresholds=(1920, 1930, 1940, 1950, 1960, 1970),
    ),
    # Held out: never in SFT, RL or the pretraining corpus. Its words must not occur in the others.
    DatabaseSpec(
        db_id="shop",
        group_table="store",
        gcat_col="district",
        gnum_col="floor_area",
        entity_table="product",
        name_col="name",
        cat_col="category",
        num_col="price",
        fk_col="store_id",
        num_type="REAL",
        words=dict(
            ent_s="product", ent_p="products", name_w="name", name_p="names", cat_w="category",
            cat_p="categories", num_w="price", grp_s="store", grp_p="stores", gcat_w="district",
            gcat_p="districts", gnum_w="floor area", prep="sold at",
        ),
        group_names=("Maple Mart", "Corner Market", "Bright Bazaar", "Pine Emporium", "Sunrise Goods",
                     "Metro Depot", "Cedar Outlet", "Willow Trading", "Summit Supply", "Bayview Bargains"),
        gcat_values=("Midtown", "Old Town", "Uptown", "Greenfield", "Dockside"),
        gnum_range=(200, 2000, 10),
        cat_values=("Toys", "Furniture", "Kitchen", "Outdoor", "Stationery", "Electronics"),
        num_range=(199, 19999, 1),
        num_scale=100,
        name_parts=(
            ("Deluxe", "Compact", "Classic", "Smart", "Eco", "Mini", "Premium", "Rustic"),
            ("Kettle", "Lamp", "Backpack", "Blender", "Notebook", "Drone", "Planter", "Racket"),
        ),
        name_format="{} {}",
        num_thresholds=(10, 25, 50, 75, 100, 125, 150),
        gnum_thresholds=(500, 800, 1000, 1200, 1500),
    ),
)

TRAIN_DB_IDS: tuple[str, ...] = ("company", "football", "library")
HELDOUT_DB_IDS: tuple[str, ...] = ("shop",)
SPECS: dict[str, DatabaseSpec] = {spec.db_id: spec for spec in DATABASES}


@dataclass(frozen=True)
class DatabaseRows:
    """The generated rows of one database (a pure function of spec and seed)."""

    groups: list[tuple[int, str, str, int]]
    entities: list[tuple[int, str, str, int | float, int]]


def _spread(values: tuple, n: int, rng: random.Random) -> list:
    """n draws in which every value occurs at least once, with uneven frequencies.

    Uneven counts make GROUP BY / HAVING questions informative (not every group ties).
    """
    weights = [rng.uniform(0.5, 3.0) for _ in values]
    drawn = list(values) + rng.choices(values, weights=weights, k=n - len(values))
    rng.shuffle(drawn)
    return drawn


def generate_rows(spec: DatabaseSpec, seed: int) -> DatabaseRows:
    """Rows for one database; identical for identical (spec, seed).

    Numeric columns are sampled without replacement so ORDER BY / LIMIT / argmax have no ties and
    their gold answers are unambiguous.
    """
    rng = random.Random(f"{seed}:{spec.db_id}:rows")
    gcats = _spread(spec.gcat_values, GROUP_ROWS, rng)
    gnums = rng.sample(range(*spec.gnum_range), GROUP_ROWS)
    groups = [(i + 1, spec.group_names[i], gcats[i], gnums[i]) for i in range(GROUP_ROWS)]

    names = [spec.name_format.format(a, b) for a, b in itertools.product(*spec.name_parts)]
    names = rng.sample(names, ENTITY_ROWS)
    cats = _spread(spec.cat_values, ENTITY_ROWS, rng)
    nums = [n / spec.num_scale if spec.num_scale != 1 else n
            for n in rng.sample(range(*spec.num_range), ENTITY_ROWS)]
    fks = _spread(tuple(range(1, GROUP_ROWS + 1)), ENTITY_ROWS, rng)  # every group has members
    entities = [(i + 1, names[i], cats[i], nums[i], fks[i]) for i in range(ENTITY_ROWS)]
    return DatabaseRows(groups=groups, entities=entities)


def populate(conn: sqlite3.Connection, spec: DatabaseSpec, seed: int) -> None:
    """Create the tables of ``spec`` in ``conn`` and insert its seeded rows."""
    rows = generate_rows(spec, seed)
    group_ddl, entity_ddl = spec.ddl()
    conn.execute(group_ddl)
    conn.execute(entity_ddl)
    conn.executemany(f"INSERT INTO {spec.group_table} VALUES (?, ?, ?, ?)", rows.groups)
    conn.executemany(f"INSERT INTO {spec.entity_table} VALUES (?, ?, ?, ?, ?)", rows.entities)
    conn.commit()


def write_database(spec: DatabaseSpec, seed: int, path: Path) -> None:
    """Write a fresh SQLite file; same (spec, seed) and SQLite version give the same bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path)
    try:
        populate(conn, spec, seed)
    finally:
        conn.close()


def memory_database(spec: DatabaseSpec, seed: int) -> sqlite3.Connection:
    """An in-memory copy, used to validate gold queries without touching disk."""
    conn = sqlite3.connect(":memory:")
    populate(conn, spec, seed)
    return conn


def slot_pools(spec: DatabaseSpec, seed: int) -> dict[str, tuple]:
    """All values each slot kind can take on this database (in a fixed order)."""
    rows = generate_rows(spec, seed)
    return {
        "cat": spec.cat_values,
        "gcat": spec.gcat_values,
        "grp": spec.group_names,
        "name": tuple(entity[1] for entity in rows.entities),
        "num": spec.num_thresholds,
        "gnum": spec.gnum_thresholds,
        "k": K_VALUES,
        "cnt": CNT_VALUES,
    }


def partition_pool(values: tuple, part: str) -> tuple:
    """The train, heldout or all values of a pool; train and heldout are disjoint by index."""
    if part == "all":
        return values
    heldout = part == "heldout"
    return tuple(v for i, v in enumerate(values) if (i % HELDOUT_EVERY == HELDOUT_EVERY - 1) == heldout)
